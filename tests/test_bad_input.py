"""Bad input over the wire: the node keeps answering, stores what DICOM lets it store,
fails only the affected job with a message naming the problem, and processes the rest."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pydicom
import pytest
from conftest import sends_to
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, _config
from pynetdicom.dsutils import split_dataset
from sqlalchemy import select

from dicom_node.runtime.node import Node
from factories import StudySpec, axial_series, ramp_pixels, write_series
from peers import Orthanc, echoscu, free_port, stored_ok, storescu, wait_until
from storage.models import Job, JobState, Study

pytestmark = pytest.mark.integration

ENCAPSULATED_PDF = "1.2.840.10008.5.1.4.1.1.104.1"
BASIC_TEXT_SR = "1.2.840.10008.5.1.4.1.1.88.11"


@contextmanager
def _raw_sending() -> Iterator[None]:
    """pynetdicom sends a file's bytes as they are, without decoding or re-encoding."""
    before = _config.STORE_SEND_CHUNKED_DATASET
    _config.STORE_SEND_CHUNKED_DATASET = True
    try:
        yield
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = before


def _send_raw(port: int, paths: list[Path]) -> list[int]:
    ae = AE(ae_title="RAWSENDER")
    for sop_class in {str(pydicom.dcmread(p).file_meta.MediaStorageSOPClassUID) for p in paths}:
        ae.add_requested_context(sop_class, [ExplicitVRLittleEndian])
    assoc = ae.associate("127.0.0.1", port, ae_title="DICOMNODE")
    assert assoc.is_established
    statuses = []
    try:
        with _raw_sending():
            for path in paths:
                statuses.append(int(assoc.send_c_store(path).Status))
    finally:
        assoc.release()
    return statuses


def _truncate(path: Path, keep_fraction: float) -> Path:
    """Cuts the data set (not the file meta) after ``keep_fraction`` of its bytes."""
    _, offset = split_dataset(path)
    data = path.read_bytes()
    path.write_bytes(data[: offset + int((len(data) - offset) * keep_fraction)])
    return path


def _non_image(study: StudySpec, sop_class: str, modality: str, folder: Path) -> Path:
    ds = Dataset()
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = study.study_uid
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientName, ds.PatientID = study.patient_name, study.patient_id
    ds.Modality = modality
    ds.SeriesNumber = 50
    ds.InstanceNumber = 1
    if modality == "DOC":
        ds.DocumentTitle = "report"
        ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
        ds.EncapsulatedDocument = b"%PDF-1.4\n%%EOF\n"
    else:
        ds.ValueType = "CONTAINER"
        ds.ContinuityOfContent = "SEPARATE"
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{modality}.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


def _jobs_by_study(node: Node) -> dict[str, list[Job]]:
    with node.db.session() as session:
        out: dict[str, list[Job]] = {}
        for job, study_uid in session.execute(select(Job, Study.study_uid).join(Study)):
            out.setdefault(study_uid, []).append(job)
        return out


def test_broken_studies_fail_their_jobs_clearly_and_a_good_study_still_arrives(
    tmp_path: Path,
    orthanc_factory: Callable[..., Orthanc],
    node_factory: Callable[..., Node],
    models_dir: Path,
) -> None:
    pacs = orthanc_factory()
    node = node_factory(
        {
            "node": {"port": free_port()},
            **sends_to(pacs.dicom_port),
        }
    )
    assert node.address is not None
    port = node.address[1]

    no_pixels, short_pixels, cut_file, good = StudySpec(), StudySpec(), StudySpec(), StudySpec()
    series = axial_series(no_pixels, ramp_pixels(slices=4))
    del series[2].PixelData
    paths = write_series(series, tmp_path / "nopix")
    assert stored_ok(storescu("127.0.0.1", port, "DICOMNODE", paths)) == 4

    series = axial_series(short_pixels, ramp_pixels(slices=4))
    series[1].PixelData = series[1].PixelData[:100]
    paths = write_series(series, tmp_path / "short")
    assert _send_raw(port, paths) == [0, 0, 0, 0]

    paths = write_series(axial_series(cut_file, ramp_pixels(slices=4)), tmp_path / "cut")
    _truncate(paths[3], 0.8)
    header_only = _truncate(
        write_series(axial_series(cut_file, ramp_pixels(1)), tmp_path / "h")[0], 0.05
    )
    statuses = _send_raw(port, [*paths, header_only])
    assert statuses[:4] == [0, 0, 0, 0]
    assert statuses[4] == 0xC000, "a data set cut before its UIDs cannot be indexed"

    good_paths = write_series(axial_series(good, ramp_pixels(slices=4)), tmp_path / "good")
    good_paths.append(_non_image(good, ENCAPSULATED_PDF, "DOC", tmp_path / "pdf"))
    good_paths.append(_non_image(good, BASIC_TEXT_SR, "SR", tmp_path / "sr"))
    assert stored_ok(storescu("127.0.0.1", port, "DICOMNODE", good_paths)) == 6

    def settled() -> dict[str, list[Job]] | None:
        jobs = _jobs_by_study(node)
        done = all(j.state in (JobState.DONE, JobState.FAILED) for js in jobs.values() for j in js)
        return jobs if len(jobs) == 4 and done else None

    jobs = wait_until(settled, 60, what="all four studies' jobs to end")
    assert echoscu("127.0.0.1", port, "DICOMNODE")

    (job,) = jobs[no_pixels.study_uid]
    assert job.state == JobState.FAILED
    assert f"series {job.input_series[0]}" in (job.error or "")
    assert "no PixelData" in (job.error or "")
    (job,) = jobs[short_pixels.study_uid]
    assert job.state == JobState.FAILED and "truncated" in (job.error or "")
    (job,) = jobs[cut_file.study_uid]
    assert job.state == JobState.FAILED and "truncated" in (job.error or "")
    (job,) = jobs[good.study_uid]
    assert job.state == JobState.DONE, job.error

    def delivered() -> list[dict[str, object]]:
        return [
            s
            for s in pacs.series_of_study(good.study_uid)
            if s["MainDicomTags"].get("Modality") == "CT" and len(s["Instances"]) == 4
        ]

    wait_until(delivered, 60, what="the good study's synthetic CT in the PACS")
