"""Third-party warnings (pydicom's about vendors' odd values) reach the log as JSON lines
that carry no data-set value."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

SECRET_DATE = "SECRETDAY"
SECRET_UID = "1.2.SECRET"

READER = """
import sys
import pydicom
from dicom_node.obs.logs import configure
configure("INFO")
for _ in range(3):
    ds = pydicom.dcmread(sys.argv[1])
    for element in ds:
        element.value
"""


def _odd_file(path: Path) -> Path:
    """What GE and Philips files hold: values their VR does not allow, in standard and
    private elements."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.4"
    ds.file_meta.MediaStorageSOPInstanceUID = "1.2.3"
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.4"
    ds.SOPInstanceUID = "1.2.3"
    ds.add_new(0x00100030, "DA", SECRET_DATE)
    ds.add_new(0x00431010, "LO", "GEMS_PARM_01")
    ds.add_new(0x00431011, "UI", SECRET_UID)
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.mark.filterwarnings("ignore:Invalid value for VR")  # writing the odd file here
def test_pydicom_warnings_are_json_lines_without_values(tmp_path: Path) -> None:
    mode = pydicom.config.settings.writing_validation_mode
    pydicom.config.settings.writing_validation_mode = pydicom.config.IGNORE
    try:
        path = _odd_file(tmp_path / "odd.dcm")
    finally:
        pydicom.config.settings.writing_validation_mode = mode
    done = subprocess.run(
        [sys.executable, "-c", READER, str(path)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert lines, "the warnings were logged"
    entries = [json.loads(line) for line in lines]
    assert {e["event"] for e in entries} <= {"library.warning"}
    assert SECRET_DATE not in done.stderr and SECRET_UID not in done.stderr
    assert any("Invalid value for VR UI" in e["message"] for e in entries)
    assert len(entries) == len({(e["source"], e["message"]) for e in entries}), "each once"
