"""The pixel watermark: invisible, found in every marked slice, in no unmarked one.

Marked slices must keep their mark through what happens to DICOM objects without touching
pixel values (tag stripping, anonymisation, lossless transfer syntaxes), and the detector
must stay silent on real images and on images that merely look watermarked.
"""

from __future__ import annotations

import io
import pathlib
import subprocess
import warnings
from collections.abc import Callable, Iterator

import numpy as np
import pydicom
import pydicom.data
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)

from dicom_node.evidence import watermark as wm

IDENTIFIER = wm.identifier_for(b'{"model": "mr-to-ct", "version": "2.1", "study": "1.2.3"}')
DTYPES = (np.int16, np.uint16, np.uint8)
SHAPES = ((64, 64), (64, 200), (127, 64), (256, 256), (300, 517), (512, 512))


def synthetic_slice(shape: tuple[int, int], dtype: type, seed: int = 0) -> np.ndarray:
    """A plausible model output: smooth ellipses with noise, in the dtype's usual range."""
    rng = np.random.default_rng(seed)
    ranges: dict[type, tuple[int, int, int]] = {
        np.int16: (-1024, 3071, 12),
        np.uint16: (0, 4095, 25),
        np.uint8: (0, 255, 3),
    }
    low, high, noise = ranges[dtype]
    rows, cols = np.indices(shape)
    image = np.full(shape, float(low))
    for _ in range(5):
        centre, radius = rng.uniform(0.3, 0.7, 2) * shape, rng.uniform(0.1, 0.45, 2) * shape
        inside = ((rows - centre[0]) / radius[0]) ** 2 + ((cols - centre[1]) / radius[1]) ** 2
        image[inside < 1] = rng.uniform(low, high)
    image += rng.normal(0, noise, shape)
    return np.clip(np.rint(image), low, high).astype(dtype)


def changes(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """Absolute per-pixel change, computed without wrap-around."""
    return np.abs(after.astype(np.int64) - before.astype(np.int64))


def assert_marked(marked: np.ndarray, original: np.ndarray) -> None:
    """Same dtype and shape, every change within ±1, mean change ≤ 0.5, mark found."""
    assert marked.dtype == original.dtype and marked.shape == original.shape
    delta = changes(original, marked)
    assert delta.max() <= 1
    assert delta.mean() <= 0.5
    found = wm.detect(marked)
    assert found.found and found.identifier == IDENTIFIER


# Round trip ------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_embed_then_detect_returns_the_identifier(dtype: type, shape: tuple[int, int]) -> None:
    original = synthetic_slice(shape, dtype)
    marked = wm.embed(original, IDENTIFIER)
    assert_marked(marked, original)
    assert wm.detect(marked).score > 0.99
    assert not wm.detect(original).found


def test_largest_slice_is_marked_with_small_changes() -> None:
    original = synthetic_slice((1024, 1024), np.int16)
    marked = wm.embed(original, IDENTIFIER)
    assert_marked(marked, original)
    assert 0.3 < changes(original, marked).mean() < 0.45


def test_input_is_left_untouched() -> None:
    original = synthetic_slice((128, 128), np.uint16)
    copy = original.copy()
    wm.embed(original, IDENTIFIER)
    np.testing.assert_array_equal(original, copy)


@pytest.mark.parametrize("dtype", [*DTYPES, np.int8, np.int32, np.uint32])
@pytest.mark.parametrize("fill", ["min", "max", "min/max checkerboard", "min/max stripes"])
def test_dtype_extremes_do_not_wrap(dtype: type, fill: str) -> None:
    info = np.iinfo(dtype)
    rows, cols = np.indices((96, 160))
    pattern = {
        "min": np.zeros((96, 160), bool),
        "max": np.ones((96, 160), bool),
        "min/max checkerboard": (rows + cols) % 2 == 1,
        "min/max stripes": cols % 2 == 1,
    }[fill]
    original: np.ndarray = np.where(pattern, info.max, info.min).astype(dtype)
    assert_marked(wm.embed(original, IDENTIFIER), original)


def test_value_range_keeps_values_within_bits_stored() -> None:
    original = np.where(np.indices((128, 128)).sum(axis=0) % 3 == 0, 4095, 0).astype(np.uint16)
    marked = wm.embed(original, IDENTIFIER, value_range=(0, 4095))
    assert marked.max() == 4095 and marked.min() == 0
    assert_marked(marked, original)


def test_other_key_neither_detects_nor_is_detected() -> None:
    original = synthetic_slice((256, 256), np.int16)
    marked = wm.embed(original, IDENTIFIER, key=b"another deployment")
    assert not wm.detect(marked).found
    assert wm.detect(marked, key=b"another deployment").identifier == IDENTIFIER


def test_identifier_for_is_sha256_prefix() -> None:
    assert wm.identifier_for(b"{}") == bytes.fromhex("44136fa355b3678a")
    assert len(wm.identifier_for(b'{"a": 1}')) == 8


CONTENTS: dict[str, Callable[[np.random.Generator, tuple[int, int], np.iinfo], np.ndarray]] = {
    "noise": lambda rng, shape, info: rng.integers(info.min, info.max, shape, endpoint=True),
    "constant": lambda rng, shape, info: np.full(shape, rng.integers(info.min, info.max)),
    "binary": lambda rng, shape, info: rng.integers(0, 2, shape),
    "saturated": lambda rng, shape, info: np.where(rng.random(shape) < 0.5, info.max, info.min),
    "ramp": lambda rng, shape, info: np.linspace(info.min, info.max, shape[0] * shape[1]).reshape(
        shape
    ),
}


@settings(max_examples=30, deadline=None)
@given(
    dtype=st.sampled_from([*DTYPES, np.int32]),
    rows=st.integers(64, 300),
    cols=st.integers(64, 300),
    content=st.sampled_from(sorted(CONTENTS)),
    seed=st.integers(0, 2**32 - 1),
    identifier=st.binary(min_size=8, max_size=8),
)
def test_any_content_round_trips(
    dtype: type, rows: int, cols: int, content: str, seed: int, identifier: bytes
) -> None:
    info = np.iinfo(dtype)
    rng = np.random.default_rng(seed)
    original: np.ndarray = CONTENTS[content](rng, (rows, cols), info).astype(dtype)
    marked = wm.embed(original, identifier)
    assert changes(original, marked).max() <= 1
    assert changes(original, marked).mean() <= 0.5
    assert wm.detect(marked).identifier == identifier


# DICOM handling that keeps pixel values ---------------------------------------------------


def full_dataset(pixels: np.ndarray) -> Dataset:
    """A CT instance with patient data, optional attributes and private tags."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, generate_uid()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.PatientName, ds.PatientID, ds.StudyDescription = "Doe^Jane", "12345", "MR to sCT"
    ds.ImageType = ["DERIVED", "SECONDARY", "SYNTHETIC"]
    ds.RescaleIntercept, ds.RescaleSlope = 0, 1
    block = ds.private_block(0x0011, "dicom-node", create=True)
    block.add_new(0x01, "LO", "synthetic")
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 8 * pixels.dtype.itemsize
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = int(pixels.dtype.kind == "i")
    ds.PixelData = pixels.tobytes()
    return ds


REQUIRED = (
    "SOPClassUID",
    "SOPInstanceUID",
    "Rows",
    "Columns",
    "SamplesPerPixel",
    "PhotometricInterpretation",
    "BitsAllocated",
    "BitsStored",
    "HighBit",
    "PixelRepresentation",
    "PixelData",
)


def stripped(ds: Dataset) -> Dataset:
    """What an aggressive anonymiser leaves: no private tags, only the attributes needed."""
    ds.remove_private_tags()
    bare = Dataset()
    bare.file_meta = ds.file_meta
    for keyword in REQUIRED:
        setattr(bare, keyword, ds[keyword].value)
    return bare


def reread(ds: Dataset) -> np.ndarray:
    """Write a dataset to bytes and decode the pixels read back."""
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    buffer.seek(0)
    return pydicom.dcmread(buffer).pixel_array


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "syntax", [ExplicitVRLittleEndian, RLELossless, JPEG2000Lossless, JPEGLSLossless]
)
def test_survives_stripping_and_lossless_reencoding(dtype: type, syntax: UID) -> None:
    marked = wm.embed(synthetic_slice((200, 160), dtype), IDENTIFIER)
    ds = stripped(full_dataset(marked))
    if syntax != ExplicitVRLittleEndian:
        ds.compress(syntax)
    back = reread(ds)
    np.testing.assert_array_equal(back, marked)
    assert wm.detect(back).identifier == IDENTIFIER


COMMAND_LINE = {
    "dcmcrle": ["dcmcrle", "{src}", "{dst}"],
    "dcmcjpls": ["dcmcjpls", "--encode-lossless", "{src}", "{dst}"],
    "gdcmconv --j2k": ["gdcmconv", "--j2k", "{src}", "{dst}"],
    "gdcmconv --jpegls": ["gdcmconv", "--jpegls", "{src}", "{dst}"],
}


@pytest.mark.parametrize("tool", sorted(COMMAND_LINE))
def test_survives_lossless_command_line_tools(tool: str, tmp_path: pathlib.Path) -> None:
    command = COMMAND_LINE[tool]
    marked = wm.embed(synthetic_slice((256, 192), np.int16), IDENTIFIER)
    src, dst = tmp_path / "marked.dcm", tmp_path / "converted.dcm"
    stripped(full_dataset(marked)).save_as(src, enforce_file_format=True)
    subprocess.run([a.format(src=src, dst=dst) for a in command], check=True, timeout=60)
    converted = pydicom.dcmread(dst)
    assert converted.file_meta.TransferSyntaxUID != ExplicitVRLittleEndian
    np.testing.assert_array_equal(converted.pixel_array, marked)
    assert wm.detect(converted.pixel_array).identifier == IDENTIFIER


# Beyond lossless: what the mark survives at no cost ------------------------------------------


def test_survives_signed_to_unsigned_offset() -> None:
    ct = synthetic_slice((256, 256), np.int16)
    marked = wm.embed(ct, IDENTIFIER, value_range=(-1024, 3071))
    unsigned = (marked + 1024).astype(np.uint16)
    assert wm.detect(unsigned).identifier == IDENTIFIER
    assert wm.detect(marked.astype(np.float64) - 3.0).identifier == IDENTIFIER


def test_survives_mild_noise() -> None:
    rng = np.random.default_rng(7)
    marked = wm.embed(synthetic_slice((512, 512), np.int16), IDENTIFIER)
    noisy = np.rint(marked + rng.normal(0, 1.0, marked.shape)).astype(np.int16)
    assert wm.detect(noisy).identifier == IDENTIFIER


def test_survives_blanked_region() -> None:
    marked = wm.embed(synthetic_slice((512, 512), np.uint16), IDENTIFIER)
    marked[:300, :300] = 0
    assert wm.detect(marked).identifier == IDENTIFIER


@pytest.mark.parametrize("cut", [(0, 0, 9, 0), (5, 0, 0, 0), (0, 11, 0, 3), (37, 100, 20, 1)])
def test_crop_search_finds_cropped_marks(cut: tuple[int, int, int, int]) -> None:
    marked = wm.embed(synthetic_slice((512, 384), np.int16), IDENTIFIER)
    top, left, bottom, right = cut
    cropped = marked[top : marked.shape[0] - bottom, left : marked.shape[1] - right]
    assert wm.detect(cropped, search_crop=True).identifier == IDENTIFIER


# False positives ---------------------------------------------------------------------------


def pydicom_frames() -> Iterator[tuple[str, np.ndarray]]:
    """Every grayscale frame of pydicom's own test files that pydicom can decode.

    These are the files ``pydicom.data.get_testdata_files("*.dcm")`` lists offline; its
    attempt to download the pydicom-data set costs 15 s without a network, so the test globs
    the same directory. ``bench/watermark_robustness.py`` uses the function itself.
    """
    for path in sorted(pathlib.Path(pydicom.data.DATA_ROOT, "test_files").glob("*.dcm")):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds = pydicom.dcmread(path)
                if ds.get("SamplesPerPixel", 1) != 1 or "PixelData" not in ds:
                    continue
                if not str(ds.PhotometricInterpretation).startswith("MONOCHROME"):
                    continue
                pixels = ds.pixel_array
        except Exception:  # a file pydicom cannot decode is skipped, as the brief allows
            continue
        frames = pixels if pixels.ndim == 3 else pixels[None]
        for index, frame in enumerate(frames):
            yield f"{path.name}[{index}]", frame


def test_no_false_positive_on_pydicom_test_files() -> None:
    tested = 0
    for name, frame in pydicom_frames():
        for search in (False, True):
            result = wm.detect(frame, search_crop=search)
            assert not result.found, name
        tested += 1
    assert tested >= 60


def generated_negatives() -> Iterator[tuple[str, np.ndarray]]:
    """Simulated acquisitions and images that look watermarked, in every dtype."""
    rng = np.random.default_rng(2024)
    for dtype in DTYPES:
        info = np.iinfo(dtype)
        for shape in ((64, 64), (256, 256), (512, 512), (200, 333)):
            phantom = synthetic_slice(shape, dtype, seed=int(rng.integers(1 << 30)))
            even = phantom - (phantom & 1)
            rows, cols = np.indices(shape)
            yield from {
                "phantom": phantom,
                "zeros": np.zeros(shape, dtype),
                "constant": np.full(shape, 1000 % info.max, dtype),
                "maximum": np.full(shape, info.max, dtype),
                "noise": rng.integers(info.min, info.max, shape, endpoint=True, dtype=dtype),
                "ramp": (rows * 7 + cols * 3).astype(dtype),
                "checkerboard": np.where((rows // 8 + cols // 8) % 2, info.max, info.min),
                "pixel checkerboard": ((rows + cols) % 2).astype(dtype),
                "binary": rng.integers(0, 2, shape, dtype=dtype),
                "saturated": np.clip(phantom.astype(np.int64) * 40, info.min, info.max),
                "LSB 0": even,
                "LSB 1": even + 1,
                "LSB random": even + rng.integers(0, 2, shape, dtype=dtype),
                "LSB checkerboard": even + ((rows + cols) % 2).astype(dtype),
            }.items()


def test_no_false_positive_on_generated_images() -> None:
    for name, image in generated_negatives():
        for search in (False, True):
            assert not wm.detect(np.asarray(image), search_crop=search).found, name


def test_no_false_positive_on_simulated_head_acquisitions() -> None:
    """Every slice of every contrast of two simulated subjects, stored as a scanner would
    (MR as uint16, CT as int16 HU), and marked: found in each marked slice, no other."""
    from inference.training.simulate import Acquisition, simulate_subject

    acquisition = Acquisition(z_range_mm=(-40.0, 90.0), slice_thickness_mm=5.0)
    tested = 0
    for seed in (9000, 9001):
        subject = simulate_subject(seed, acquisition)
        for role, volume in subject.images.items():
            dtype = np.int16 if role == "CT" else np.uint16
            info = np.iinfo(dtype)
            stored = np.clip(np.rint(volume.array), info.min, info.max).astype(dtype)
            for k, image in enumerate(stored):
                assert not wm.detect(image).found, (seed, role, k)
                assert wm.detect(wm.embed(image, IDENTIFIER)).identifier == IDENTIFIER
                tested += 1
    assert tested == 2 * 4 * acquisition.slices


@settings(max_examples=40, deadline=None)
@given(
    rows=st.integers(64, 400),
    cols=st.integers(64, 400),
    scale=st.sampled_from([1, 10, 1000, 30000]),
    seed=st.integers(0, 2**32 - 1),
)
def test_no_false_positive_on_random_images(rows: int, cols: int, scale: int, seed: int) -> None:
    image = np.random.default_rng(seed).integers(-scale, scale, (rows, cols))
    result = wm.detect(image)
    assert not result.found
    assert abs(result.score) < 0.5


# Errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pixels", "identifier", "message"),
    [
        (np.zeros((63, 128), np.int16), IDENTIFIER, "too small"),
        (np.zeros((128, 40), np.uint16), IDENTIFIER, "too small"),
        (np.zeros((128, 128), np.int16), b"1234567", "8 bytes"),
        (np.zeros((128, 128), np.int16), b"123456789", "8 bytes"),
        (np.zeros((128, 128), np.int16), "12345678", "8 bytes"),
        (np.zeros((128, 128), np.float32), IDENTIFIER, "float32"),
        (np.zeros((128, 128), np.float64), IDENTIFIER, "not floats"),
        (np.zeros((128, 128), np.int64), IDENTIFIER, "int64"),
        (np.zeros((128, 128), bool), IDENTIFIER, "bool"),
        (np.zeros((2, 128, 128), np.int16), IDENTIFIER, "2-D"),
    ],
)
def test_embed_rejects_what_it_cannot_mark(
    pixels: np.ndarray, identifier: bytes, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        wm.embed(pixels, identifier)


@pytest.mark.parametrize("value_range", [(0, 0), (-1, 4095), (0, 70000), (0, 100)])
def test_embed_rejects_bad_value_ranges(value_range: tuple[int, int]) -> None:
    with pytest.raises(ValueError, match="value_range"):
        wm.embed(np.full((128, 128), 200, np.uint16), IDENTIFIER, value_range=value_range)


def test_detect_rejects_non_slices_and_ignores_tiny_images() -> None:
    with pytest.raises(ValueError, match="2-D"):
        wm.detect(np.zeros((3, 128, 128)))
    with pytest.raises(ValueError, match="numeric"):
        wm.detect(np.zeros((128, 128), complex))
    assert wm.detect(np.zeros((10, 10), np.uint32)) == wm.Detection(False, None, 0.0)
