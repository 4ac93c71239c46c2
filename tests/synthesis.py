"""The synthetic series the node would write for a source series, without a node."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset

from dicom_node.dicom.uids import output_series_uid
from dicom_node.evidence.provenance import InputRecord, ProvenanceRecord
from dicom_node.synthesize.enhanced import OutputFormat, build_output
from dicom_node.synthesize.label import Marking
from dicom_node.synthesize.volume import load_series
from inference.card import ModelCard
from inference.geometry import Volume
from onnx_models import linear_card

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


def synthetic_series(
    paths: list[Path],
    series_uid: str,
    *,
    card: ModelCard | None = None,
    values: np.ndarray | None = None,
    marking: Marking | None = None,
    now: datetime = NOW,
    output_format: OutputFormat = "classic",
    uncertainty_map: bool = False,
) -> list[Dataset]:
    """What ``card`` (default `mr-t1-to-ct`) makes of the series in ``paths`` when it
    outputs ``values`` (default all zeros) on the series' grid."""
    source = load_series(paths, series_uid)
    card = card or linear_card()
    provenance = ProvenanceRecord(
        node_name="DICOMNODE",
        node_version="test",
        ae_title="DICOMNODE",
        model_id=card.id,
        model_version=card.version,
        model_sha256="0" * 64,
        providers=("CPUExecutionProvider",),
        inputs=(InputRecord(card.input_roles[0], series_uid, len(paths), source.pixel_sha256),),
        study_uid=str(source.headers[0].StudyInstanceUID),
        output_series_uid=output_series_uid([series_uid], card.id, card.version),
        output_role=card.output.role,
        route_destinations=("pacs",),
        created_at=now.isoformat(),
    )
    array = np.zeros(source.volume.array.shape, np.float32) if values is None else values
    result = Volume(array.astype(np.float32), source.volume.geometry)
    return build_output(
        output_format,
        result,
        [source],
        card,
        provenance,
        marking or Marking(),
        now,
        uncertainty_map=uncertainty_map,
    )


def synthetic_ct(paths: list[Path], series_uid: str) -> list[Dataset]:
    """The synthetic CT that `mr-t1-to-ct` makes of the series in ``paths`` (all zeros)."""
    return synthetic_series(paths, series_uid)
