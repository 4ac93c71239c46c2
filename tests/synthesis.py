"""The synthetic series the node would write for a source series, without a node."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset

from dicom_node.provenance import InputRecord, ProvenanceRecord
from dicom_node.synthetic import Marking, build_series
from dicom_node.uids import output_series_uid
from dicom_node.volume import load_series
from inference.geometry import Volume
from onnx_models import linear_card

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


def synthetic_ct(paths: list[Path], series_uid: str) -> list[Dataset]:
    """The synthetic CT that `mr-t1-to-ct` makes of the series in ``paths`` (all zeros)."""
    source = load_series(paths, series_uid)
    card = linear_card()
    provenance = ProvenanceRecord(
        node_name="DICOMNODE",
        node_version="test",
        ae_title="DICOMNODE",
        model_id=card.id,
        model_version=card.version,
        model_sha256="0" * 64,
        providers=("CPUExecutionProvider",),
        inputs=(InputRecord("T1", series_uid, len(paths), source.pixel_sha256),),
        study_uid=str(source.headers[0].StudyInstanceUID),
        output_series_uid=output_series_uid([series_uid], card.id, card.version),
        output_role="CT",
        route_destinations=("pacs",),
        created_at=NOW.isoformat(),
    )
    result = Volume(np.zeros(source.volume.array.shape, np.float32), source.volume.geometry)
    return build_series(result, [source], card, provenance, Marking(), NOW)
