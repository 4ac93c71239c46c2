"""A T1 series as Philips sends it, with a Raw Data and a private Series Data object among
its images, over the network: the node stores every object, synthesizes from the images
alone, and gives the other objects back on request."""

from __future__ import annotations

import copy
import subprocess
from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest
from conftest import sends_to
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from sqlalchemy import select

from dicom_node.cli.main import main as cli
from dicom_node.runtime.node import Node
from factories import StudySpec, axial_series, ramp_pixels, write_series
from peers import DCMTK_ENV, Orthanc, wait_until
from storage.models import Instance, Job, JobState, OutputSeries

pytestmark = pytest.mark.integration

RAW_DATA = "1.2.840.10008.5.1.4.1.1.66"
PHILIPS_SERIES_DATA = "1.3.46.670589.11.0.0.12.1"
SLICES = 4


def _other(image: Dataset, sop_class: str) -> Dataset:
    ds = copy.deepcopy(image)
    for tag in [e.tag for e in ds if e.tag >= 0x00280000]:
        del ds[tag]
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    return ds


def test_other_objects_are_stored_retrievable_and_left_out_of_synthesis(
    tmp_path: Path,
    orthanc_factory: Callable[..., Orthanc],
    node_factory: Callable[..., Node],
    models_dir: Path,
) -> None:
    pacs = orthanc_factory()
    node = node_factory(
        {**sends_to(pacs.dicom_port), "query_retrieve": {"allowed_calling_aets": ["GETSCU"]}}
    )
    assert node.address is not None
    t1 = axial_series(StudySpec(), ramp_pixels(slices=SLICES), description="T1 MPRAGE")
    raw, private = _other(t1[0], RAW_DATA), _other(t1[0], PHILIPS_SERIES_DATA)
    paths = write_series([raw, private, *t1], tmp_path / "in")
    # DCMTK's storescu refuses to propose a private SOP class; the node's own `send` does.
    assert cli(["--config", str(tmp_path / "config.yaml"), "send", *map(str, paths)]) == 0

    def done() -> Job | None:
        with node.db.session() as session:
            job = session.scalar(select(Job))
            return job if job is not None and job.state == JobState.DONE else None

    wait_until(done, 60, what="the synthetic CT")
    with node.db.session() as session:
        (output,) = session.scalars(select(OutputSeries))
        assert output.instance_count == SLICES
        stored = set(session.scalars(select(Instance.sop_class_uid)))
    assert {RAW_DATA, PHILIPS_SERIES_DATA} <= stored

    out = tmp_path / "get"
    out.mkdir()
    subprocess.run(
        [
            "getscu", "-S", "-od", str(out), "-aec", "DICOMNODE", "127.0.0.1",
            str(node.address[1]), "-k", "QueryRetrieveLevel=IMAGE",
            "-k", f"StudyInstanceUID={raw.StudyInstanceUID}",
            "-k", f"SeriesInstanceUID={raw.SeriesInstanceUID}",
            "-k", f"SOPInstanceUID={raw.SOPInstanceUID}",
        ],
        check=True, capture_output=True, env=DCMTK_ENV, timeout=120,
    )  # fmt: skip
    (got,) = [pydicom.dcmread(p) for p in out.iterdir()]
    assert got.SOPClassUID == RAW_DATA and got.SOPInstanceUID == raw.SOPInstanceUID
