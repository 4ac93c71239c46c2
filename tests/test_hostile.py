"""A hostile and broken corpus, generated here and sent over the wire to the node running
as its own process: truncated files, lying element lengths, short pixel data, absurd
image sizes, colour images, mixed sizes in a series, duplicate SOP Instance UIDs,
UIDs made of path characters or too long, and non-image objects.

The node must keep answering C-ECHO throughout; store what DICOM lets it store and
refuse, with a named failure status, what it cannot index; fail each affected study's
job with a message naming the series and the problem; synthesize and deliver the good
studies sent in between; keep every file inside its spool; and never decode a slice
that claims to be huge. Property tests then throw arbitrary strings at the receive-side
checks (``describe_instance``).
"""

from __future__ import annotations

import io
import re
import signal
import sqlite3
import struct
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pydicom
import pytest
from conftest import write_config
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filereader import read_dataset
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, _config
from pynetdicom.dsutils import split_dataset

from dicom_node.receive.scp import InvalidInstance, describe_instance
from factories import (
    MR_IMAGE_STORAGE,
    StudySpec,
    axial_series,
    hypothesis_outside_the_tree,
    ramp_pixels,
)
from peers import NodeProcess, Orthanc, echoscu, free_port, storescu, wait_until
from storage.instances import ReceivedInstance
from storage.spool import Spool

pytestmark = [
    pytest.mark.integration,
    # pydicom warns about each invalid UID the corpus is made of; that is expected here
    pytest.mark.filterwarnings("ignore:Invalid value for VR:UserWarning"),
    pytest.mark.filterwarnings("ignore:The value length:UserWarning"),
]
hypothesis_outside_the_tree()

SUCCESS, OUT_OF_RESOURCES, CANNOT_UNDERSTAND = 0x0000, 0xA700, 0xC000
REFUSED = frozenset({OUT_OF_RESOURCES, 0xA900, CANNOT_UNDERSTAND})
BASIC_TEXT_SR = "1.2.840.10008.5.1.4.1.1.88.11"
ENCAPSULATED_PDF = "1.2.840.10008.5.1.4.1.1.104.1"
RT_STRUCTURE_SET = "1.2.840.10008.5.1.4.1.1.481.3"
INSTANCE_KEY = re.compile(r"instances/[0-9a-f]{2}/[0-9a-f]{64}/[0-9a-f]{64}\.dcm")
OUTPUT_FILE = re.compile(r"outputs/[0-9a-f]{2}/[0-9a-f]{64}/[0-9]{5}\.dcm")
VALID_UID = re.compile(r"[0-9]+(\.[0-9]+)*")
MAX_NODE_MEMORY = 1536 * 2**20
"""Peak resident memory the node may reach over the whole corpus. One 60000×60000
16-bit slice decoded would be 6.7 GiB; the huge-in-total series below, 32 GiB."""


# ------------------------------------------------------------------ building the corpus


@dataclass
class Case:
    """One study of the corpus: what is sent, and what the node must make of it."""

    name: str
    study_uid: str
    paths: list[Path]
    statuses: list[int]
    """Expected C-STORE status per file; 0xA700/0xA900/0xC000 are all named refusals."""
    job: str | None
    """``done``, ``failed`` or None (no job: nothing stored, or nothing to synthesize)."""
    problem: str = ""
    """Words the failed job's error must hold, beside the series' UID."""
    series_uid: str = ""
    raw: bool = True
    """Sent byte for byte with pynetdicom; otherwise with DCMTK storescu."""
    outputs: int | None = None
    """Instances of the synthetic series, for a ``done`` job (default: one per stored
    image instance)."""
    sent: list[int | None] = field(default_factory=list)


def _series(
    folder: Path,
    slices: int = 4,
    rows: int = 64,
    cols: int = 64,
    study: StudySpec | None = None,
    mutate: Callable[[Dataset], None] | None = None,
    **kwargs: object,
) -> tuple[StudySpec, list[Dataset], list[Path]]:
    study = study or StudySpec()
    datasets = axial_series(study, ramp_pixels(slices, rows, cols), **kwargs)  # type: ignore[arg-type]
    for ds in datasets:
        if mutate is not None:
            mutate(ds)
    return study, datasets, _write(datasets, folder)


def _write(datasets: Sequence[Dataset], folder: Path) -> list[Path]:
    """Files named by position: some of these SOP Instance UIDs are paths."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k, ds in enumerate(datasets):
        path = folder / f"{k:03d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def _good(folder: Path, name: str, slices: int = 6) -> Case:
    study, datasets, paths = _series(folder / name, slices=slices)
    return Case(
        name,
        study.study_uid,
        paths,
        [SUCCESS] * slices,
        "done",
        series_uid=str(datasets[0].SeriesInstanceUID),
        raw=False,
    )


def _cut(path: Path, keep_fraction: float) -> Path:
    """Cuts the data set (not the file meta) after ``keep_fraction`` of its bytes."""
    _, offset = split_dataset(path)
    data = path.read_bytes()
    path.write_bytes(data[: offset + int((len(data) - offset) * keep_fraction)])
    return path


def _lie_about_length(path: Path, group: int, element: int, by: int | None = None) -> Path:
    """Rewrites the declared length of one explicit-VR element: ``by`` more than its value
    (so it runs into the next element), or, with ``by`` None, far past the end of the file."""
    data = bytearray(path.read_bytes())
    _, offset = split_dataset(path)
    at = data.index(struct.pack("<HH", group, element), offset)
    vr = bytes(data[at + 4 : at + 6])
    if vr in (b"OB", b"OW", b"OF", b"SQ", b"UT", b"UN"):
        (length,) = struct.unpack_from("<I", data, at + 8)
        struct.pack_into("<I", data, at + 8, 0x7FFFFFF0 if by is None else length + by)
    else:
        (length,) = struct.unpack_from("<H", data, at + 6)
        struct.pack_into("<H", data, at + 6, 0xFFF0 if by is None else length + by)
    path.write_bytes(bytes(data))
    return path


def _colour(photometric: str) -> Callable[[Dataset], None]:
    def mutate(ds: Dataset) -> None:
        rows, cols = int(ds.Rows), int(ds.Columns)
        ds.PhotometricInterpretation = photometric
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
        if photometric == "PALETTE COLOR":
            ds.SamplesPerPixel = 1
            for colour in ("Red", "Green", "Blue"):
                setattr(ds, f"{colour}PaletteColorLookupTableDescriptor", [256, 0, 16])
                setattr(
                    ds,
                    f"{colour}PaletteColorLookupTableData",
                    np.arange(256, dtype=np.uint16).tobytes(),
                )
            ds.PixelData = bytes(rows * cols)
        else:
            ds.SamplesPerPixel, ds.PlanarConfiguration = 3, 0
            ds.PixelData = bytes(range(256)) * (rows * cols * 3 // 256)

    return mutate


def _tiny_pixels(rows: int, cols: int) -> Callable[[Dataset], None]:
    def mutate(ds: Dataset) -> None:
        ds.Rows, ds.Columns = rows, cols
        ds.PixelData = bytes(32)

    return mutate


def _with_uid(keyword: str, value: str) -> Callable[[Dataset], None]:
    def mutate(ds: Dataset) -> None:
        ds[keyword].value = value
        if keyword == "SOPInstanceUID":
            ds.file_meta.MediaStorageSOPInstanceUID = UID(value)

    return mutate


def _non_image(study: StudySpec, sop_class: str, modality: str, folder: Path) -> Path:
    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study.study_uid, generate_uid()
    ds.PatientName, ds.PatientID = study.patient_name, study.patient_id
    ds.Modality, ds.SeriesNumber, ds.InstanceNumber = modality, 70, 1
    if modality == "DOC":
        ds.DocumentTitle, ds.MIMETypeOfEncapsulatedDocument = "report", "application/pdf"
        ds.EncapsulatedDocument = b"%PDF-1.4\n%%EOF\n"
    elif modality == "SR":
        ds.ValueType, ds.ContinuityOfContent = "CONTAINER", "SEPARATE"
    else:
        ds.StructureSetLabel, ds.StructureSetDate, ds.StructureSetTime = "RT", "20260101", "1200"
        roi = Dataset()
        roi.ROINumber, roi.ROIName, roi.ROIGenerationAlgorithm = 1, "BODY", "MANUAL"
        roi.ReferencedFrameOfReferenceUID = study.frame_of_reference_uid
        ds.StructureSetROISequence = [roi]
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = UID(sop_class)
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{modality}.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


@contextmanager
def _lenient_writing() -> Iterator[None]:
    """Lets the corpus builder write the invalid values it is about (conftest makes
    pydicom refuse them)."""
    before = pydicom.config.settings.writing_validation_mode
    pydicom.config.settings.writing_validation_mode = pydicom.config.IGNORE
    try:
        yield
    finally:
        pydicom.config.settings.writing_validation_mode = before


def _broken_cases(folder: Path) -> list[Case]:
    """Studies the node stores (some of their instances) but cannot synthesize from."""
    cases = []

    study, ds, paths = _series(folder / "cut-pixels")
    _cut(paths[3], 0.8)
    cases.append(
        Case(
            "pixel data cut short by a truncated file",
            study.study_uid,
            paths,
            [SUCCESS] * 4,
            "failed",
            "truncated",
        )
    )

    study, ds, paths = _series(folder / "cut-header", slices=3)
    header_only = _cut(_series(folder / "cut-header-1", slices=1, study=study)[2][0], 0.05)
    cases.append(
        Case(
            "file cut before its UIDs",
            study.study_uid,
            [*paths, header_only],
            [SUCCESS] * 3 + [CANNOT_UNDERSTAND],
            "done",
        )
    )

    study, ds, paths = _series(folder / "len-before-uids", slices=3)
    _lie_about_length(paths[2], 0x0008, 0x103E, by=8)
    cases.append(
        Case(
            "element length running into the next element, before the UIDs",
            study.study_uid,
            paths,
            [SUCCESS, SUCCESS, CANNOT_UNDERSTAND],
            "done",
        )
    )

    study, ds, paths = _series(folder / "len-after-uids")
    _lie_about_length(paths[2], 0x0028, 0x0030, by=6)
    cases.append(
        Case(
            "element length running into the next element, after the UIDs",
            study.study_uid,
            paths,
            [SUCCESS] * 4,
            "failed",
            "element length is wrong",
        )
    )

    study, ds, paths = _series(folder / "len-past-end")
    _lie_about_length(paths[0], 0x7FE0, 0x0010, by=None)
    cases.append(
        Case(
            "Pixel Data length past the end of the file",
            study.study_uid,
            paths,
            [SUCCESS] * 4,
            "failed",
            "the file ends inside (7FE0,0010) (2147483632 bytes declared",
        )
    )

    def short(ds: Dataset) -> None:
        if int(ds.InstanceNumber) == 2:
            ds.PixelData = ds.PixelData[:100]

    study, ds, paths = _series(folder / "short", mutate=short)
    cases.append(
        Case(
            "Pixel Data shorter than Rows×Columns",
            study.study_uid,
            paths,
            [SUCCESS] * 4,
            "failed",
            "truncated",
        )
    )

    study, ds, paths = _series(folder / "huge", slices=3, mutate=_tiny_pixels(60000, 60000))
    cases.append(
        Case(
            "60000×60000 declared, 32 bytes of pixels",
            study.study_uid,
            paths,
            [SUCCESS] * 3,
            "failed",
            "60000×60000 out of range",
        )
    )

    study, ds, paths = _series(
        folder / "huge-in-total", slices=128, rows=4, cols=4, mutate=_tiny_pixels(8192, 8192)
    )
    cases.append(
        Case(
            "128 slices of 8192×8192 declared (32 GiB), 32 bytes each",
            study.study_uid,
            paths,
            [SUCCESS] * 128,
            "failed",
            "truncated",
            raw=False,
        )
    )

    for photometric in ("RGB", "YBR_FULL", "PALETTE COLOR"):
        study, ds, paths = _series(
            folder / photometric.replace(" ", "_"), slices=3, mutate=_colour(photometric)
        )
        cases.append(
            Case(
                f"{photometric} images",
                study.study_uid,
                paths,
                [SUCCESS] * 3,
                "failed",
                f"{photometric} is not grayscale",
            )
        )

    study, ds, paths = _series(folder / "mixed-a", slices=2)
    _, _, paths_b = _series(
        folder / "mixed-b",
        slices=2,
        rows=80,
        cols=80,
        study=study,
        series_uid=str(ds[0].SeriesInstanceUID),
        origin=(-32.0, -32.0, -6.0),
    )
    cases.append(
        Case(
            "Rows×Columns differing within one series",
            study.study_uid,
            [*paths, *paths_b],
            [SUCCESS] * 4,
            "failed",
            "slices differ in Rows×Columns",
        )
    )

    for case, datasets in zip(cases, _series_uids(cases), strict=True):
        case.series_uid = datasets
    return cases


def _series_uids(cases: Sequence[Case]) -> list[str]:
    """The Series Instance UID each case's readable files share."""
    uids = []
    for case in cases:
        for path in case.paths:
            try:
                uids.append(str(pydicom.dcmread(path, stop_before_pixels=True).SeriesInstanceUID))
                break
            except Exception:  # a deliberately broken file: try the next one
                continue
    return uids


def _hostile_uid_cases(folder: Path) -> list[Case]:
    """Single instances whose UIDs could steer a file name; all must be refused."""
    hostile = [
        ("StudyInstanceUID", "../../etc"),
        ("StudyInstanceUID", "1.2.840.abc"),
        ("SeriesInstanceUID", "1.2.3/../../../tmp/x"),
        ("SeriesInstanceUID", "1.2." + "3" * 70),
        ("SOPInstanceUID", "../../../etc/passwd"),
        ("SOPInstanceUID", "1.2.3\\..\\..\\x"),
        ("SOPInstanceUID", "1.2.840.10008." + "4" * 70),
    ]
    cases = []
    with _lenient_writing():
        for i, (keyword, value) in enumerate(hostile):
            study, _, paths = _series(
                folder / f"uid-{i}", slices=1, mutate=_with_uid(keyword, value)
            )
            cases.append(
                Case(
                    f"{keyword} {value!r}",
                    study.study_uid,
                    paths,
                    [CANNOT_UNDERSTAND],
                    None,
                    # pynetdicom refuses to send a SOP Instance UID that is too long or
                    # multi-valued; DCMTK storescu sends it
                    raw=keyword != "SOPInstanceUID" or (len(value) <= 64 and "\\" not in value),
                )
            )
    return cases


def _non_image_cases(folder: Path) -> list[Case]:
    alone = StudySpec()
    paths = [
        _non_image(alone, BASIC_TEXT_SR, "SR", folder / "alone"),
        _non_image(alone, ENCAPSULATED_PDF, "DOC", folder / "alone"),
        _non_image(alone, RT_STRUCTURE_SET, "RTSTRUCT", folder / "alone"),
    ]
    with_t1 = _good(folder, "with-non-image", slices=5)
    with_t1.name = "T1 series with SR, PDF and RT structure set beside it"
    spec = StudySpec(study_uid=with_t1.study_uid)
    extra = [
        _non_image(spec, BASIC_TEXT_SR, "SR", folder / "beside"),
        _non_image(spec, ENCAPSULATED_PDF, "DOC", folder / "beside"),
        _non_image(spec, RT_STRUCTURE_SET, "RTSTRUCT", folder / "beside"),
    ]
    with_t1.paths += extra
    with_t1.statuses += [SUCCESS] * 3
    with_t1.raw = True
    return [
        Case("SR, PDF and RT structure set alone", alone.study_uid, paths, [SUCCESS] * 3, None),
        with_t1,
    ]


# ------------------------------------------------------------------ sending


@contextmanager
def _raw_sending() -> Iterator[None]:
    """pynetdicom sends a file's bytes as they are, without decoding or re-encoding."""
    before = _config.STORE_SEND_CHUNKED_DATASET
    _config.STORE_SEND_CHUNKED_DATASET = True
    try:
        yield
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = before


def _send_raw(port: int, paths: Sequence[Path]) -> list[int | None]:
    """One association; the status of each C-STORE, None where none came back."""
    ae = AE(ae_title="HOSTILE")
    ae.dimse_timeout = ae.network_timeout = 120
    classes = {str(pydicom.dcmread(p, force=True).file_meta.MediaStorageSOPClassUID) for p in paths}
    for sop_class in sorted(classes):
        ae.add_requested_context(sop_class, [ExplicitVRLittleEndian])
    assoc = ae.associate("127.0.0.1", port, ae_title="DICOMNODE")
    assert assoc.is_established
    statuses: list[int | None] = []
    try:
        with _raw_sending():
            for path in paths:
                response = assoc.send_c_store(path)
                statuses.append(int(response.Status) if "Status" in response else None)
    finally:
        if assoc.is_established:
            assoc.release()
    return statuses


def _storescu_statuses(port: int, paths: Sequence[Path]) -> list[int | None]:
    """Per-file statuses from ``storescu -v`` (Success, or the named failure)."""
    result = storescu("127.0.0.1", port, "DICOMNODE", paths, extra=["-to", "120"])
    names = {
        "Success": SUCCESS,
        "Error: CannotUnderstand": CANNOT_UNDERSTAND,
        "Refused: OutOfResources": OUT_OF_RESOURCES,
    }
    statuses: list[int | None] = []
    for line in (result.stdout + result.stderr).splitlines():
        if line.startswith("I: Received Store Response ("):
            text = line.removeprefix("I: Received Store Response (").rstrip(")")
            statuses.append(names.get(text, -1))
    return statuses


class _Echoes(threading.Thread):
    """C-ECHOes the node with DCMTK echoscu every half second while the corpus goes in."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.results: list[bool] = []
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            self.results.append(echoscu("127.0.0.1", self.port, "DICOMNODE"))
            self.halt.wait(0.5)


def _query(db: Path, sql: str, *args: object) -> list[tuple[object, ...]]:
    with sqlite3.connect(db, timeout=60) as conn:
        return conn.execute(sql, args).fetchall()


def _peak_rss(pid: int) -> int:
    """The process' peak resident set (VmHWM), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc")


# ------------------------------------------------------------------ the wire test


def test_hostile_corpus_over_the_wire(
    tmp_path: Path,
    orthanc_factory: Callable[..., Orthanc],
    models_dir: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    pacs = orthanc_factory()
    port = free_port()
    config = write_config(
        tmp_path,
        {
            "node": {"port": port, "stable_seconds": 1.0},
            "destinations": [
                {
                    "name": "pacs",
                    "ae_title": "ORTHANC",
                    "host": "127.0.0.1",
                    "port": pacs.dicom_port,
                }
            ],
            "routes": [{"model": "mr-t1-to-ct", "send_to": ["pacs"]}],
        },
    )
    corpus = tmp_path / "corpus"
    good = [_good(corpus, f"good-{i}") for i in range(3)]
    broken = _broken_cases(corpus)
    hostile = _hostile_uid_cases(corpus)
    non_image = _non_image_cases(corpus)
    duplicate, changed, moved = _duplicates(corpus)
    # the good studies go first, in the middle and last
    batches = [
        [good[0]],
        broken[:6],
        [good[1]],
        broken[6:],
        hostile,
        [*non_image, duplicate],
        [good[2]],
    ]

    node = NodeProcess(config, port).start()
    assert node.process is not None
    echoes = _Echoes(port)
    echoes.start()
    db = tmp_path / "var" / "node.db"
    try:
        for batch in batches:
            for case in batch:
                send = _send_raw if case.raw else _storescu_statuses
                case.sent = send(port, case.paths)
                assert case.sent == case.statuses, f"{case.name}: statuses {case.sent}"
            assert echoscu("127.0.0.1", port, "DICOMNODE")

        cases = [*good, *broken, *hostile, *non_image, duplicate]
        expected_jobs = {c.study_uid for c in cases if c.job is not None}

        def jobs_settled() -> dict[str, tuple[str, str, list[str]]] | None:
            rows = _query(
                db,
                "SELECT study.study_uid, job.state, coalesce(job.error, ''), job.input_series "
                "FROM job JOIN study ON study.id = job.study_id ORDER BY job.id",
            )
            jobs = {str(uid): (str(state), str(err), [str(s)]) for uid, state, err, s in rows}
            settled = all(state in ("done", "failed") for state, _, _ in jobs.values())
            return jobs if set(jobs) == expected_jobs and settled else None

        jobs = wait_until(jobs_settled, 240, interval=0.5, what="every job of the corpus to end")
        with capsys.disabled():
            print("\nhostile corpus: C-STORE statuses and job outcome per study")
            for case in cases:
                state, error, _ = jobs.get(case.study_uid, ("no job", "", []))
                statuses = ",".join(sorted({f"{s:04X}" for s in case.sent if s is not None}))
                problem = error.split(": ", 1)[-1]  # after "series …[, instance … (file)]"
                print(f"  {case.name}: {statuses} → {state} {problem[:90]}")
        for case in cases:
            if case.job is None:
                continue
            state, error, _ = jobs[case.study_uid]
            assert state == case.job, f"{case.name}: job {state} ({error})"
            if state == "failed":
                assert f"series {case.series_uid}" in error, f"{case.name}: {error}"
                assert case.problem in error, f"{case.name}: {error}"

        for case in [c for c in cases if c.job == "done"]:
            slices = case.outputs or sum(1 for s in case.statuses if s == SUCCESS)
            slices -= sum(1 for p in case.paths if "beside" in p.parts)

            def one_series(study_uid: str = case.study_uid, n: int = slices) -> bool:
                return _synthetic_counts(pacs, study_uid) == [n]

            wait_until(one_series, 120, what=f"{case.name}: one synthetic series of {slices}")

        spool = tmp_path / "var" / "spool"
        _assert_last_copy_wins(db, spool, duplicate, changed, moved)
        _assert_nothing_stored_for(db, hostile)
        _assert_spool_contained(tmp_path)
        assert _query(
            db, "SELECT state FROM study WHERE study_uid = ?", non_image[0].study_uid
        ) == [("routed",)]
        peak = _peak_rss(node.process.pid)
        with capsys.disabled():
            print(f"  node peak resident memory: {peak / 2**20:.0f} MiB")
        assert peak < MAX_NODE_MEMORY, f"node peaked at {peak / 2**20:.0f} MiB"
        echoes.halt.set()
        echoes.join(10)
        assert echoes.results and all(echoes.results), (
            f"{echoes.results.count(False)} of {len(echoes.results)} C-ECHOes went unanswered"
        )

        # start-up reconciliation must not bring the superseded copy back
        assert node.signal(signal.SIGKILL) == -signal.SIGKILL
        node.start()
        _assert_last_copy_wins(db, spool, duplicate, changed, moved)
    finally:
        echoes.halt.set()
        echoes.join(10)
        node.stop()


def _synthetic_counts(pacs: Orthanc, study_uid: str) -> list[int]:
    return [
        len(s["Instances"])
        for s in pacs.series_of_study(study_uid)
        if s["MainDicomTags"].get("Modality") == "CT"
    ]


def _duplicates(corpus: Path) -> tuple[Case, Path, Path]:
    """A five-slice T1 study followed, on the same association, by its third instance
    again (same UIDs, other pixels) and its last instance again in another series of
    the study (same SOP Instance UID, other pixels: a series corrected at the PACS)."""
    case = _good(corpus, "duplicate", slices=5)
    folder = corpus / "duplicate-again"
    ds = pydicom.dcmread(case.paths[2])
    ds.PixelData = (ds.pixel_array.astype(np.uint16) + 7).tobytes()
    ds.ImageComments = "resent with other pixels"
    (changed,) = _write([ds], folder / "changed")
    ds = pydicom.dcmread(case.paths[4])
    ds.PixelData = (ds.pixel_array.astype(np.uint16) + 9).tobytes()
    ds.SeriesInstanceUID, ds.SeriesNumber, ds.SeriesDescription = generate_uid(), 99, "localizer"
    (moved,) = _write([ds], folder / "moved")
    case.name = "duplicate SOP Instance UIDs with other content, same and other series"
    case.paths += [changed, moved]
    case.statuses += [SUCCESS, SUCCESS]
    case.raw, case.outputs = True, 4
    return case, changed, moved


def _assert_last_copy_wins(db: Path, spool: Path, case: Case, changed: Path, moved: Path) -> None:
    """One row per SOP Instance UID in the whole index; each resent instance's row points
    at its last copy; the instance that moved left its first series."""
    assert (
        _query(db, "SELECT sop_instance_uid, count(*) FROM instance GROUP BY 1 HAVING count(*) > 1")
        == []
    )
    for path in (changed, moved):
        sent = pydicom.dcmread(path)
        ((key, series_uid),) = _query(
            db,
            "SELECT instance.spool_key, series.series_uid FROM instance JOIN series "
            "ON series.id = instance.series_id WHERE instance.sop_instance_uid = ?",
            str(sent.SOPInstanceUID),
        )
        assert series_uid == sent.SeriesInstanceUID
        assert pydicom.dcmread(spool / str(key)).PixelData == sent.PixelData
    assert _query(
        db,
        "SELECT count(*) FROM instance JOIN series ON series.id = instance.series_id "
        "WHERE series.series_uid = ?",
        case.series_uid,
    ) == [(4,)]


def _assert_nothing_stored_for(db: Path, cases: Sequence[Case]) -> None:
    studies = {str(uid) for (uid,) in _query(db, "SELECT study_uid FROM study")}
    for case in cases:
        assert case.study_uid not in studies, f"{case.name}: something was indexed"


def _assert_spool_contained(root: Path) -> None:
    """Every file the node wrote is a hashed key inside its spool; nothing named after a
    hostile UID exists anywhere under the test's folder."""
    spool = root / "var" / "spool"
    for path in spool.rglob("*"):
        if path.is_file():
            key = path.relative_to(spool).as_posix()
            assert INSTANCE_KEY.fullmatch(key) or OUTPUT_FILE.fullmatch(key), key
    for path in root.rglob("*"):
        assert path.name not in ("passwd", "etc", "x") or "corpus" in path.parts, path


# ------------------------------------------------------------------ property tests

UID_LIKE = st.one_of(
    st.text(max_size=80),
    st.from_regex(r"[0-9.]{0,70}", fullmatch=True),
    st.from_regex(r"[0-9]{1,20}(\.[0-9]{1,20}){0,6}[\x00 \n./\\]{0,3}", fullmatch=True),
    st.sampled_from(["../../etc", "1.2.3\x00../../x", "/etc/passwd", "1.2\\3.4", "..", "\n"]),
)


def _encoded(elements: dict[int, bytes]) -> Dataset:
    """A data set as the node gets it: Explicit VR Little Endian bytes decoded by pydicom,
    each value exactly the bytes given (padded to even length with a NUL)."""
    raw = io.BytesIO()
    for tag in sorted(elements):
        value = elements[tag]
        value += b"\x00" * (len(value) % 2)
        raw.write(struct.pack("<HH2sH", tag >> 16, tag & 0xFFFF, b"UI", len(value)))
        raw.write(value)
    raw.seek(0)
    return read_dataset(raw, is_implicit_VR=False, is_little_endian=True)


def _describe(
    study: str | bytes, series: str | bytes, sop: str | bytes, request_sop: str
) -> ReceivedInstance:
    def as_bytes(value: str | bytes) -> bytes:
        return value if isinstance(value, bytes) else value.encode("utf-8")

    ds = _encoded(
        {
            0x00080016: MR_IMAGE_STORAGE.encode(),
            0x00080018: as_bytes(sop),
            0x0020000D: as_bytes(study),
            0x0020000E: as_bytes(series),
        }
    )
    return describe_instance(
        ds,
        sop_class_uid=MR_IMAGE_STORAGE,
        sop_instance_uid=request_sop,
        transfer_syntax_uid=str(ExplicitVRLittleEndian),
        calling_ae="HOSTILE",
        received_at=datetime.now(UTC),
    )


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    study=st.one_of(UID_LIKE, st.binary(max_size=80)),
    series=st.one_of(UID_LIKE, st.binary(max_size=80)),
    sop=st.one_of(UID_LIKE, st.binary(max_size=80)),
    request_sop=UID_LIKE,
    same_sop=st.booleans(),
)
def test_receive_checks_refuse_or_give_a_hex_key_inside_the_spool(
    tmp_path_factory: pytest.TempPathFactory,
    study: str | bytes,
    series: str | bytes,
    sop: str | bytes,
    request_sop: str,
    same_sop: bool,
) -> None:
    """Whatever the UIDs, describe_instance either refuses with InvalidInstance (→ 0xC000)
    or gives a spool key made of hex digits under ``instances/`` that stays in the spool."""
    if same_sop:
        sop = request_sop
    try:
        rec = _describe(study, series, sop, request_sop)
    except InvalidInstance:
        return
    assert INSTANCE_KEY.fullmatch(rec.spool_key), rec.spool_key
    spool = Spool(tmp_path_factory.getbasetemp() / "property-spool")
    assert spool.path(rec.spool_key).is_relative_to(spool.root)
    for uid in (rec.study_uid, rec.series_uid):
        assert VALID_UID.fullmatch(uid) and len(uid) <= 64, repr(uid)


@settings(max_examples=300, deadline=None)
@given(request_sop=UID_LIKE)
@example(request_sop="1.2.840.10008.3\n")
def test_an_accepted_request_sop_instance_uid_is_a_valid_uid(request_sop: str) -> None:
    """The SOP Instance UID of the C-STORE request is checked against the UID grammar
    before it is indexed, whatever the data set says (here, nothing)."""
    ds = _encoded({0x0020000D: b"1.2.3", 0x0020000E: b"1.2.3.4"})
    try:
        rec = describe_instance(
            ds,
            sop_class_uid=MR_IMAGE_STORAGE,
            sop_instance_uid=request_sop,
            transfer_syntax_uid=str(ExplicitVRLittleEndian),
            calling_ae="HOSTILE",
            received_at=datetime.now(UTC),
        )
    except InvalidInstance:
        return
    assert VALID_UID.fullmatch(rec.sop_instance_uid) and len(rec.sop_instance_uid) <= 64, repr(
        rec.sop_instance_uid
    )
