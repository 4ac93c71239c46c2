"""Index attributes read from raw elements are the values pydicom's conversion gives."""

from __future__ import annotations

import warnings
from pathlib import Path

import pydicom
import pydicom.data
import pytest

from dicom_node.dicom.attributes import KEYS, HeaderReader, number, text


def _files() -> list[str]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        files = pydicom.data.get_charset_files("*.dcm") + pydicom.data.get_testdata_files("*.dcm")
    return sorted(set(files))


def _read(path: str) -> pydicom.Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(path, stop_before_pixels=True, force=True)


@pytest.mark.parametrize("path", _files(), ids=lambda p: Path(p).name)
def test_raw_reading_agrees_with_pydicoms_conversion(path: str) -> None:
    raw, converted = _read(path), _read(path)
    header = HeaderReader(raw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for key in KEYS:
            if key.numeric:
                assert header.number(key.keyword) == number(converted, key.keyword), key
            else:
                expected = text(converted, key.keyword, key.length)
                assert header.text(key.keyword, key.length) == expected, key


def test_japanese_and_german_names_are_decoded_with_their_character_sets() -> None:
    names = {Path(p).name: p for p in pydicom.data.get_charset_files("*.dcm")}
    german = HeaderReader(_read(names["chrGerm.dcm"])).text("PatientName", 324)
    japanese = HeaderReader(_read(names["chrH32.dcm"])).text("PatientName", 324)
    assert german == "Äneas^Rüdiger"
    assert japanese.startswith("ﾔﾏﾀﾞ^ﾀﾛｳ=山田^太郎")


def test_an_element_pydicom_already_converted_is_read_as_converted(tmp_path: Path) -> None:
    ds = _read(pydicom.data.get_testdata_file("CT_small.dcm"))
    ds.PatientName = "Changed^Name"
    assert HeaderReader(ds).text("PatientName", 324) == "Changed^Name"
