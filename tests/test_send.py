"""`dicom-node send` against DCMTK's storescp: every file's own transfer syntax is offered,
files the peer only takes uncompressed are decoded, and a refusal is named, not a
traceback."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from conftest import write_config
from pydicom.uid import ExplicitVRLittleEndian, RLELossless

from dicom_node.cli.main import main as cli
from factories import StudySpec, axial_series, ramp_pixels, write_series
from peers import StoreSCP

pytestmark = pytest.mark.integration

PRIVATE_SOP_CLASS = "1.2.826.0.1.3680043.8.498.99"


def _inputs(folder: Path) -> tuple[list[Path], list[Path]]:
    """Two RLE Lossless MR files and two Explicit VR Little Endian CT files."""
    study = StudySpec()
    mr = axial_series(study, ramp_pixels(slices=2, rows=16, cols=16))
    for ds in mr:
        ds.compress(RLELossless, generate_instance_uid=False)
    ct = axial_series(study, ramp_pixels(slices=2, rows=16, cols=16, dtype=np.int16), modality="CT")
    return write_series(mr, folder / "mr"), write_series(ct, folder / "ct")


def _config(folder: Path, scp: StoreSCP) -> Path:
    destination = {"name": "scp", "ae_title": scp.aet, "host": "127.0.0.1", "port": scp.port}
    return write_config(folder, {"destinations": [destination]})


def _received(folder: Path) -> dict[str, pydicom.Dataset]:
    return {str(ds.SOPInstanceUID): ds for ds in map(pydicom.dcmread, folder.glob("*"))}


def test_a_peer_taking_only_uncompressed_gets_compressed_files_decoded(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    scp = StoreSCP(tmp_path / "scp").start()
    try:
        mr, ct = _inputs(tmp_path / "in")
        assert (
            cli(
                [
                    "--config",
                    str(_config(tmp_path, scp)),
                    "send",
                    str(tmp_path / "in"),
                    "--to",
                    "scp",
                ]
            )
            == 0
        )
    finally:
        scp.stop()
    assert "stored 4 of 4" in capsys.readouterr().out
    received = _received(tmp_path / "scp")
    for path in mr:
        sent = pydicom.dcmread(path)
        got = received[str(sent.SOPInstanceUID)]
        assert got.file_meta.TransferSyntaxUID != RLELossless
        assert np.array_equal(got.pixel_array, sent.pixel_array)
    assert {str(pydicom.dcmread(p).SOPInstanceUID) for p in ct} <= set(received)


def test_a_peer_taking_every_syntax_gets_the_files_as_they_are(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    scp = StoreSCP(tmp_path / "scp", extra=["+xa"]).start()
    try:
        mr, _ = _inputs(tmp_path / "in")
        assert (
            cli(
                [
                    "--config",
                    str(_config(tmp_path, scp)),
                    "send",
                    str(tmp_path / "in"),
                    "--to",
                    "scp",
                ]
            )
            == 0
        )
    finally:
        scp.stop()
    received = _received(tmp_path / "scp")
    for path in mr:
        got = received[str(pydicom.dcmread(path).SOPInstanceUID)]
        assert got.file_meta.TransferSyntaxUID == RLELossless
    assert "stored 4 of 4" in capsys.readouterr().out


def test_a_refused_sop_class_is_named_and_the_rest_is_sent(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    scp = StoreSCP(tmp_path / "scp").start()
    try:
        _, ct = _inputs(tmp_path / "in")
        private = pydicom.dcmread(ct[0])
        private.SOPClassUID = PRIVATE_SOP_CLASS
        private.file_meta.MediaStorageSOPClassUID = PRIVATE_SOP_CLASS
        private.SOPInstanceUID = private.file_meta.MediaStorageSOPInstanceUID = "1.2.3.4.5"
        private.save_as(tmp_path / "in" / "private.dcm", enforce_file_format=True)
        code = cli(
            ["--config", str(_config(tmp_path, scp)), "send", str(tmp_path / "in"), "--to", "scp"]
        )
    finally:
        scp.stop()
    out, err = capsys.readouterr()
    assert code == 1
    assert "stored 4 of 5" in out
    assert f"scp: refused {PRIVATE_SOP_CLASS} in {ExplicitVRLittleEndian.name}" in err
    assert "1 file(s) not sent" in err


def test_a_progress_bar_goes_to_stderr_when_asked_and_not_otherwise(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Under pytest stderr is no terminal: without ``--progress`` no bar is drawn."""
    scp = StoreSCP(tmp_path / "scp").start()
    try:
        _inputs(tmp_path / "in")
        command = ["--config", str(_config(tmp_path, scp)), "send", str(tmp_path / "in")]
        assert cli([*command, "--to", "scp"]) == 0
        plain = capsys.readouterr()
        assert cli([*command, "--to", "scp", "--progress"]) == 0
        shown = capsys.readouterr()
    finally:
        scp.stop()
    assert "stored 4 of 4" in plain.out and "stored 4 of 4" in shown.out
    assert "%|" not in plain.err
    assert "scp: 100%|" in shown.err and "| 4/4 " in shown.err
    assert "%|" not in shown.out
