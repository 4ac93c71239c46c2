"""dicom_node.synthesize.volume.load_series: slice order, geometry, rescale, decoding,
rejections."""

from __future__ import annotations

import itertools
import random
import struct
import tracemalloc
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pydicom
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.dataset import Dataset
from pydicom.uid import JPEG2000Lossless, JPEGLSLossless, RLELossless

from dicom_node.synthesize.volume import MAX_PIXELS_PER_SLICE, VolumeError, load_series
from factories import (
    StudySpec,
    axial_series,
    hypothesis_outside_the_tree,
    ramp_pixels,
    rotated_orientation,
    valid_ds,
    write_series,
)

hypothesis_outside_the_tree()


def _save(datasets: Sequence[Dataset], folder: Path) -> list[Path]:
    return write_series(datasets, folder)


def _stored_headers(paths: Sequence[Path]) -> dict[str, Dataset]:
    """Headers as the files hold them (DS values as stored), by SOP Instance UID."""
    out: dict[str, Dataset] = {}
    for p in paths:
        ds = pydicom.dcmread(p, stop_before_pixels=True)
        out[str(ds.SOPInstanceUID)] = ds
    return out


def _voxel_to_patient(header: Dataset, j: float, i: float) -> np.ndarray:
    """Patient position of pixel (row j, column i) of a slice, from its own header."""
    iop = np.asarray([float(v) for v in header.ImageOrientationPatient])
    ipp = np.asarray([float(v) for v in header.ImagePositionPatient])
    row_spacing, col_spacing = (float(v) for v in header.PixelSpacing)
    return ipp + j * row_spacing * iop[3:] + i * col_spacing * iop[:3]


def test_slices_are_ordered_by_position_along_the_normal_not_by_instance_number(
    tmp_path: Path,
) -> None:
    pixels = ramp_pixels(slices=6, rows=5, cols=7)
    series = axial_series(StudySpec(), pixels, spacing=(3.0, 1.0, 1.0))
    # Instance Numbers that contradict the positions, and files handed over shuffled.
    for ds, number in zip(series, [4, 1, 6, 2, 5, 3], strict=True):
        ds.InstanceNumber = number
    paths = _save(series, tmp_path)
    shuffled = [paths[i] for i in (3, 0, 5, 1, 4, 2)]

    loaded = load_series(shuffled, series[0].SeriesInstanceUID)

    np.testing.assert_array_equal(loaded.volume.array, pixels.astype(np.float32))
    assert [h.SOPInstanceUID for h in loaded.headers] == [ds.SOPInstanceUID for ds in series]
    assert loaded.volume.geometry.shape == (6, 5, 7)
    assert loaded.volume.geometry.spacing == (3.0, 1.0, 1.0)
    assert loaded.series_uid == series[0].SeriesInstanceUID
    assert all("PixelData" not in h for h in loaded.headers)


@pytest.mark.parametrize(
    ("orientation", "step"),
    [
        ((1, 0, 0, 0, 1, 0), -2.0),  # positions written descending along the normal
        ((1, 0, 0, 0, -1, 0), 2.0),  # normal −z: ascending z is descending along it
    ],
    ids=["descending-positions", "normal-pointing-feet"],
)
def test_slices_running_against_the_normal_are_reordered_with_geometry_to_match(
    tmp_path: Path, orientation: tuple[float, ...], step: float
) -> None:
    pixels = ramp_pixels(slices=5, rows=4, cols=6)
    series = valid_ds(axial_series(StudySpec(), pixels, spacing=(step, 0.5, 0.75)))
    # Built with z growing with k for the second case; flip so the file order (and
    # InstanceNumber) runs against the normal in both.
    if step > 0:
        for ds in series:
            ds.ImageOrientationPatient = list(orientation)
    paths = _save(series, tmp_path)

    loaded = load_series(paths, series[0].SeriesInstanceUID)
    geometry = loaded.volume.geometry
    normal = np.cross(orientation[:3], orientation[3:])

    # Volume order: ascending along the normal, i.e. the reverse of the file order.
    assert [h.SOPInstanceUID for h in loaded.headers] == [
        ds.SOPInstanceUID for ds in reversed(series)
    ]
    np.testing.assert_array_equal(loaded.volume.array, pixels[::-1].astype(np.float32))
    np.testing.assert_allclose(geometry.slice_direction, normal, atol=1e-9)
    assert geometry.spacing == pytest.approx((2.0, 0.5, 0.75))
    for k, header in enumerate(loaded.headers):
        np.testing.assert_allclose(
            geometry.affine @ [k, 0, 0, 1], [*map(float, header.ImagePositionPatient), 1]
        )


def test_oblique_series_affine_maps_every_voxel_to_its_patient_position(tmp_path: Path) -> None:
    orientation = rotated_orientation(30, axis=(1, 1, 0.5))
    pixels = ramp_pixels(slices=5, rows=6, cols=7)
    series = valid_ds(
        axial_series(
            StudySpec(),
            pixels,
            spacing=(2.5, 0.9, 0.8),
            orientation=orientation,
            origin=(-40.2, 12.5, 3.3),
        )
    )
    paths = _save(series, tmp_path)
    stored = _stored_headers(paths)
    path_of = {str(ds.SOPInstanceUID): p for ds, p in zip(series, paths, strict=True)}

    loaded = load_series(list(reversed(paths)), series[0].SeriesInstanceUID)
    affine = loaded.volume.geometry.affine

    assert loaded.volume.geometry.spacing == pytest.approx((2.5, 0.9, 0.8))
    for k, header in enumerate(loaded.headers):
        file_header = stored[str(header.SOPInstanceUID)]
        file_pixels = pydicom.dcmread(path_of[str(header.SOPInstanceUID)]).pixel_array
        for j, i in itertools.product(range(6), range(7)):
            np.testing.assert_allclose(
                (affine @ [k, j, i, 1])[:3], _voxel_to_patient(file_header, j, i), atol=1e-6
            )
            assert loaded.volume.array[k, j, i] == file_pixels[j, i]


def test_sheared_stack_like_a_gantry_tilt_keeps_every_slice_at_its_stored_position(
    tmp_path: Path,
) -> None:
    """Tilted-gantry CT: slices stay axial but each is shifted along y, so the step between
    Image Positions is not along the normal; the affine must still hit every position."""
    pixels = ramp_pixels(slices=5, rows=4, cols=6)
    series = axial_series(StudySpec(), pixels, spacing=(2.0, 0.8, 0.8))
    for k, ds in enumerate(series):
        ds.ImagePositionPatient = [-32.0, -32.0 + 0.7 * k, -10.0 + 2.0 * k]
    paths = _save(series, tmp_path)
    loaded = load_series(list(reversed(paths)), series[0].SeriesInstanceUID)
    geometry = loaded.volume.geometry

    step = np.array([0.0, 0.7, 2.0])
    np.testing.assert_allclose(geometry.slice_direction, step / np.linalg.norm(step))
    assert geometry.spacing[0] == pytest.approx(float(np.linalg.norm(step)))
    for k, header in enumerate(loaded.headers):
        for j, i in [(0, 0), (3, 5)]:
            np.testing.assert_allclose(
                (geometry.affine @ [k, j, i, 1])[:3], _voxel_to_patient(header, j, i), atol=1e-9
            )


def test_rescale_slope_and_intercept_map_stored_values_to_physical_units(tmp_path: Path) -> None:
    pixels = ramp_pixels(slices=3, rows=4, cols=4, dtype=np.int16)
    series = axial_series(StudySpec(), pixels, modality="CT", slope=2.5, intercept=-1024.0)
    loaded = load_series(_save(series, tmp_path), series[0].SeriesInstanceUID)
    np.testing.assert_array_equal(
        loaded.volume.array, pixels.astype(np.float32) * np.float32(2.5) - np.float32(1024)
    )


def test_rescale_is_applied_per_slice_when_it_varies_between_slices(tmp_path: Path) -> None:
    pixels = ramp_pixels(slices=3, rows=4, cols=4)
    series = axial_series(StudySpec(), pixels, slope=1.5, intercept=10.0)
    per_slice = [(1.5, 10.0), (0.25, -3.0), (4.0, 0.5)]
    for ds, (slope, intercept) in zip(series, per_slice, strict=True):
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    loaded = load_series(_save(series, tmp_path), series[0].SeriesInstanceUID)
    for k, (slope, intercept) in enumerate(per_slice):
        np.testing.assert_array_equal(
            loaded.volume.array[k],
            pixels[k].astype(np.float32) * np.float32(slope) + np.float32(intercept),
        )
    # The hash is of stored values, so it does not depend on the rescale.
    plain = axial_series(StudySpec(), pixels)
    again = load_series(_save(plain, tmp_path / "plain"), plain[0].SeriesInstanceUID)
    assert again.pixel_sha256 == loaded.pixel_sha256


def _compressible(modality: str) -> tuple[np.ndarray, list[Dataset]]:
    if modality == "CT":
        pixels = (ramp_pixels(slices=3, rows=32, cols=40, dtype=np.int16) * 7 - 1200).astype(
            np.int16
        )
        series = axial_series(StudySpec(), pixels, modality="CT", intercept=0.0, slope=1.0)
    else:
        pixels = (ramp_pixels(slices=3, rows=32, cols=40) * 97).astype(np.uint16)
        series = axial_series(StudySpec(), pixels)
    return pixels, series


@pytest.mark.parametrize("syntax", [RLELossless, JPEGLSLossless, JPEG2000Lossless], ids=str)
@pytest.mark.parametrize("modality", ["MR", "CT"])
def test_lossless_compressed_series_decode_to_the_uncompressed_values_and_hash(
    tmp_path: Path, syntax: str, modality: str
) -> None:
    pixels, series = _compressible(modality)
    uid = series[0].SeriesInstanceUID
    reference = load_series(_save(series, tmp_path / "plain"), uid)

    for ds in series:
        ds.compress(syntax)
    paths = _save(series, tmp_path / "compressed")
    assert {str(pydicom.dcmread(p).file_meta.TransferSyntaxUID) for p in paths} == {syntax}

    loaded = load_series(paths, uid)
    np.testing.assert_array_equal(loaded.volume.array, pixels.astype(np.float32))
    assert loaded.pixel_sha256 == reference.pixel_sha256
    assert loaded.volume.geometry == reference.volume.geometry


def test_pixel_hash_ignores_file_order_and_changes_with_one_pixel(tmp_path: Path) -> None:
    pixels = ramp_pixels(slices=4, rows=5, cols=5)
    series = axial_series(StudySpec(), pixels)
    uid = series[0].SeriesInstanceUID
    paths = _save(series, tmp_path / "a")
    hashes = {load_series(list(p), uid).pixel_sha256 for p in itertools.permutations(paths)}
    assert len(hashes) == 1

    changed = pixels.copy()
    changed[2, 3, 1] += 1
    other = axial_series(StudySpec(), changed, series_uid=uid)
    assert load_series(_save(other, tmp_path / "b"), uid).pixel_sha256 not in hashes

    # Same stored values, other slice order in space: a different volume, another hash.
    swapped = pixels[[1, 0, 2, 3]]
    moved = axial_series(StudySpec(), swapped, series_uid=uid)
    assert load_series(_save(moved, tmp_path / "c"), uid).pixel_sha256 not in hashes


# --- rejections -------------------------------------------------------------------------

Breaker = Callable[[list[Dataset]], None]


def _mixed_orientation(s: list[Dataset]) -> None:
    s[2].ImageOrientationPatient = list(rotated_orientation(10, axis=(0, 0, 1)))


def _mixed_pixel_spacing(s: list[Dataset]) -> None:
    s[1].PixelSpacing = [1.0, 1.2]


def _non_uniform(s: list[Dataset]) -> None:
    for k, z in enumerate([0.0, 2.0, 4.0, 6.7, 8.7, 10.7]):
        s[k].ImagePositionPatient = [-32.0, -32.0, z]


def _missing_slice(s: list[Dataset]) -> None:
    del s[3]


def _rows_differ(s: list[Dataset]) -> None:
    s[4].Rows, s[4].Columns = 4, 12
    s[4].PixelData = bytes(4 * 12 * 2)


def _no_pixel_data(s: list[Dataset]) -> None:
    del s[2].PixelData


def _rgb(s: list[Dataset]) -> None:
    _colour(s[1], "RGB")


def _ybr(s: list[Dataset]) -> None:
    _colour(s[1], "YBR_FULL")


def _colour(ds: Dataset, photometric: str) -> None:
    ds.PhotometricInterpretation = photometric
    ds.SamplesPerPixel = 3
    ds.PlanarConfiguration = 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    ds.PixelRepresentation = 0
    ds.PixelData = bytes(ds.Rows * ds.Columns * 3)


def _duplicate_position(s: list[Dataset]) -> None:
    s[3].ImagePositionPatient = list(s[2].ImagePositionPatient)


def _short_pixel_data(s: list[Dataset]) -> None:
    s[2].PixelData = s[2].PixelData[: len(s[2].PixelData) // 2]


def _multi_frame(s: list[Dataset]) -> None:
    s[0].NumberOfFrames = 2


def _no_position(s: list[Dataset]) -> None:
    del s[1].ImagePositionPatient


@pytest.mark.parametrize(
    ("breaker", "words"),
    [
        (_mixed_orientation, ["different orientations"]),
        (_mixed_pixel_spacing, ["different PixelSpacing"]),
        (_non_uniform, ["non-uniform spacing", "2.700"]),
        (_missing_slice, ["missing slice", "4.000"]),
        (_rows_differ, ["differ in Rows×Columns"]),
        (_no_pixel_data, ["no PixelData"]),
        (_rgb, ["RGB", "not grayscale"]),
        (_ybr, ["YBR_FULL", "not grayscale"]),
        (_duplicate_position, ["same position"]),
        (_short_pixel_data, ["truncated", "PixelData holds 48 bytes", "needs 96"]),
        (_multi_frame, ["multi-frame"]),
        (_no_position, ["ImagePositionPatient is missing"]),
    ],
    ids=lambda v: v.__name__.strip("_") if callable(v) else None,
)
def test_unusable_series_is_refused_with_a_message_naming_series_and_problem(
    tmp_path: Path, breaker: Breaker, words: list[str]
) -> None:
    series = axial_series(StudySpec(), ramp_pixels(slices=6, rows=6, cols=8))
    uid = series[0].SeriesInstanceUID
    breaker(series)
    paths = _save(series, tmp_path)
    with pytest.raises(VolumeError) as err:
        load_series(paths, uid)
    message = str(err.value)
    assert f"series {uid}" in message
    for word in words:
        assert word in message


def test_absurd_rows_columns_are_refused_before_any_decode_or_allocation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    series = axial_series(StudySpec(), ramp_pixels(slices=3, rows=4, cols=4))
    series[1].Rows, series[1].Columns = 65535, 65535
    uid = series[0].SeriesInstanceUID
    paths = _save(series, tmp_path)
    decoded: list[str] = []

    def spy(self: Dataset) -> np.ndarray:
        decoded.append(str(self.SOPInstanceUID))
        raise AssertionError("pixel data decoded")

    monkeypatch.setattr(Dataset, "pixel_array", property(spy))
    tracemalloc.start()
    try:
        with pytest.raises(VolumeError) as err:
            load_series(paths, uid)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert "65535×65535 out of range" in str(err.value)
    assert str(series[1].SOPInstanceUID) in str(err.value)
    assert decoded == []
    assert peak < 16 * 1024 * 1024
    assert MAX_PIXELS_PER_SLICE < 65535 * 65535


def test_declared_size_far_beyond_the_pixels_fails_on_the_pixels_before_allocating(
    tmp_path: Path,
) -> None:
    """128 slices declaring 8192×8192 (32 GiB as float32) but carrying 32 bytes each:
    refused as truncated before the volume is allocated, not a MemoryError."""
    series = axial_series(StudySpec(), ramp_pixels(slices=128, rows=4, cols=4))
    for ds in series:
        ds.Rows, ds.Columns, ds.PixelData = 8192, 8192, bytes(32)
    uid = series[0].SeriesInstanceUID
    tracemalloc.start()
    try:
        with pytest.raises(VolumeError) as err:
            load_series(_save(series, tmp_path), uid)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert f"series {uid}" in str(err.value)
    assert "PixelData holds 32 bytes, Rows×Columns needs 134217728 (truncated)" in str(err.value)
    assert peak < 64 * 1024 * 1024


def _declared_length(path: Path, tag: tuple[int, int], length: int, wide: bool) -> None:
    """Overwrites the declared length of an explicit VR little endian element of the data
    set (after the file meta, whose length its first element gives)."""
    data = bytearray(path.read_bytes())
    (meta_length,) = struct.unpack_from("<I", data, 140)
    at = data.index(struct.pack("<HH", *tag), 144 + meta_length)
    if wide:
        struct.pack_into("<I", data, at + 8, length)
    else:
        struct.pack_into("<H", data, at + 6, length)
    path.write_bytes(bytes(data))


def test_pixel_data_declared_past_the_end_of_the_file_is_truncated(tmp_path: Path) -> None:
    series = axial_series(StudySpec(), ramp_pixels(slices=3, rows=8, cols=8))
    uid = series[0].SeriesInstanceUID
    paths = _save(series, tmp_path)
    _declared_length(paths[1], (0x7FE0, 0x0010), 0x7FFFFFF0, wide=True)
    with pytest.raises(VolumeError) as err:
        load_series(paths, uid)
    assert f"series {uid}" in str(err.value) and paths[1].name in str(err.value)
    message = str(err.value)
    assert "the file ends inside (7FE0,0010) (2147483632 bytes declared, 128 present)" in message
    assert "truncated" in message


def test_a_length_running_into_the_next_element_is_named_not_read_as_no_pixels(
    tmp_path: Path,
) -> None:
    series = axial_series(StudySpec(), ramp_pixels(slices=3, rows=8, cols=8))
    uid = series[0].SeriesInstanceUID
    paths = _save(series, tmp_path)
    spacing = len(pydicom.dcmread(paths[2]).get_item(0x00280030).value)
    _declared_length(paths[2], (0x0028, 0x0030), spacing + 6, wide=False)
    with pytest.raises(VolumeError) as err:
        load_series(paths, uid)
    assert f"series {uid}" in str(err.value) and paths[2].name in str(err.value)
    # what follows the lie is read as garbage: parsing stops, or a made-up element runs
    # past the end of the file; either way the message says a length is wrong
    assert "element length is wrong" in str(err.value)
    assert "no PixelData" not in str(err.value)


@pytest.mark.parametrize(
    "damage", ["garbage", "empty", "cut-in-meta", "cut-in-dataset", "cut-in-pixels"]
)
def test_unreadable_or_truncated_file_is_refused_naming_the_file(
    tmp_path: Path, damage: str
) -> None:
    series = axial_series(StudySpec(), ramp_pixels(slices=3, rows=4, cols=4))
    uid = series[0].SeriesInstanceUID
    paths = _save(series, tmp_path)
    data = paths[1].read_bytes()
    damaged = {
        "garbage": b"not dicom at all" * 20,
        "empty": b"",
        "cut-in-meta": data[:200],
        "cut-in-dataset": data[:600],
        "cut-in-pixels": data[:-20],
    }[damage]
    paths[1].write_bytes(damaged)
    with pytest.raises(VolumeError) as err:
        load_series(paths, uid)
    assert f"series {uid}" in str(err.value)
    assert paths[1].name in str(err.value)


def test_an_empty_series_is_refused(tmp_path: Path) -> None:
    with pytest.raises(VolumeError, match=r"series 1\.2\.3: no instances"):
        load_series([], "1.2.3")


def test_corrupt_compressed_pixel_data_is_refused_as_undecodable(tmp_path: Path) -> None:
    series = axial_series(StudySpec(), ramp_pixels(slices=3, rows=32, cols=32))
    for ds in series:
        ds.compress(JPEG2000Lossless)
    series[1].PixelData = series[1].PixelData[:40] + b"\xff" * 8 + b"\x00\x00"
    uid = series[0].SeriesInstanceUID
    with pytest.raises(VolumeError, match="cannot decode pixel data") as err:
        load_series(_save(series, tmp_path), uid)
    assert str(series[1].SOPInstanceUID) in str(err.value)


# --- property: permutation invariance and geometry round trip ---------------------------


@st.composite
def _stacks(draw: st.DrawFn) -> tuple[int, float, tuple[float, ...], list[int]]:
    slices = draw(st.integers(1, 6))
    spacing = draw(st.floats(0.4, 6.0).map(lambda v: round(v, 3)))
    axis = draw(
        st.tuples(*[st.floats(-1, 1) for _ in range(3)]).filter(
            lambda a: float(np.linalg.norm(a)) > 0.1
        )
    )
    angle = draw(st.floats(0, 180))
    order = draw(st.permutations(range(slices)))
    return slices, spacing, rotated_orientation(angle, axis), list(order)


_counter = itertools.count()


@settings(
    database=None,  # no example database written into the working tree
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(stack=_stacks(), seed=st.integers(0, 2**32 - 1))
def test_loaded_volume_is_invariant_under_file_permutation_and_round_trips_positions(
    tmp_path: Path, stack: tuple[int, float, tuple[float, ...], list[int]], seed: int
) -> None:
    slices, spacing, orientation, order = stack
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 4096, size=(slices, 3, 4), dtype=np.uint16)
    series = valid_ds(
        axial_series(
            StudySpec(),
            pixels,
            spacing=(spacing, 0.7, 1.3),
            orientation=orientation,
            origin=tuple(rng.uniform(-100, 100, 3).round(3)),
        )
    )
    random.Random(seed).shuffle(series)  # InstanceNumber no longer follows the order
    paths = _save(series, tmp_path / str(next(_counter)))
    uid = series[0].SeriesInstanceUID
    stored = _stored_headers(paths)

    first = load_series(paths, uid)
    second = load_series([paths[i] for i in order], uid)

    np.testing.assert_array_equal(first.volume.array, second.volume.array)
    assert first.volume.geometry == second.volume.geometry
    assert first.pixel_sha256 == second.pixel_sha256
    assert [h.SOPInstanceUID for h in first.headers] == [h.SOPInstanceUID for h in second.headers]

    geometry = first.volume.geometry
    assert geometry.shape == (slices, 3, 4)
    normal = np.asarray(geometry.slice_direction)
    along = [
        float(np.dot([float(v) for v in h.ImagePositionPatient], normal)) for h in first.headers
    ]
    assert along == sorted(along)
    for k, header in enumerate(first.headers):
        file_header = stored[str(header.SOPInstanceUID)]
        for j, i in [(0, 0), (2, 3), (1, 2)]:
            np.testing.assert_allclose(
                (geometry.affine @ [k, j, i, 1])[:3],
                _voxel_to_patient(file_header, j, i),
                atol=1e-4,
            )
        np.testing.assert_allclose(
            geometry.slice_origin(k),
            [float(v) for v in file_header.ImagePositionPatient],
            atol=1e-4,
        )
        source = next(
            i for i, ds in enumerate(series) if ds.SOPInstanceUID == header.SOPInstanceUID
        )
        np.testing.assert_array_equal(
            first.volume.array[k], pixels[series[source].InstanceNumber - 1]
        )
