"""The preview picture: windows, the three panels and their difference, the PNG, and the
source slice found at an output slice's position."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from dicom_node.ops.previews import (
    CT_WINDOWS,
    PreviewVolumes,
    SliceOutOfRange,
    Window,
    panels,
    percentile_window,
    png,
    window_for,
)
from inference.geometry import Geometry, Volume


def test_a_window_maps_its_range_to_black_through_white_and_clips() -> None:
    brain = CT_WINDOWS["brain"]
    values = np.array([-1000.0, 0.0, 40.0, 80.0, 3000.0])
    assert brain.apply(values).tolist() == [0.0, 0.0, 0.5, 1.0, 1.0]
    bone = CT_WINDOWS["bone"]
    assert bone.apply(np.array([-600.0, 400.0, 1400.0])).tolist() == [0.0, 0.5, 1.0]


def test_an_mr_window_spans_its_series_1st_to_99th_percentile() -> None:
    values = np.arange(10001, dtype=np.float32)  # percentiles land on whole numbers
    window = percentile_window(values)
    assert (window.level - window.width / 2, window.level + window.width / 2) == (100, 9900)
    assert window_for("MR", values) == window
    assert window_for("CT", values) == Window(80.0, 40.0)
    assert window_for("CT", values, "bone") == Window(2000.0, 400.0)
    assert percentile_window(np.zeros(5)).width > 0, "a flat series still has a window"


def test_panels_are_source_synthetic_and_their_signed_difference_side_by_side() -> None:
    source = np.tile(np.linspace(0, 1, 8, dtype=np.float32), (4, 1))
    synthetic = np.full((4, 8), 0.25, dtype=np.float32)
    unit = Window(1.0, 0.5)
    image = panels(source, synthetic, unit, unit)
    assert image.dtype == np.uint8 and image.shape == (4, 24)
    left, middle, right = np.split(image.astype(int), 3, axis=1)
    assert np.array_equal(left, np.round(source * 255))
    assert (middle == 64).all()
    assert np.array_equal(right, np.round((0.5 + (synthetic - source) / 2) * 255))
    assert right[0, 0] > 128 > right[0, -1], "brighter where the synthetic is brighter"
    same = panels(source, source, unit, unit)
    assert (same[:, 16:] == 128).all(), "no difference is mid grey"


def test_a_source_on_another_grid_is_resized_to_the_synthetic_slice() -> None:
    image = panels(np.ones((2, 3)), np.zeros((4, 6)), Window(1, 0.5), Window(1, 0.5))
    assert image.shape == (4, 18)
    assert (image[:, :6] == 255).all()


def test_png_is_a_greyscale_png_of_the_image() -> None:
    image = np.arange(48, dtype=np.uint8).reshape(4, 12)
    data = png(image)
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    decoded = Image.open(io.BytesIO(data))
    assert decoded.mode == "L" and np.array_equal(np.asarray(decoded), image)


def _volume(slices: int, origin_z: float, spacing: float, start: float) -> Volume:
    geometry = Geometry(
        origin=(0.0, 0.0, origin_z),
        row_direction=(1.0, 0.0, 0.0),
        column_direction=(0.0, 1.0, 0.0),
        slice_direction=(0.0, 0.0, 1.0),
        spacing=(spacing, 1.0, 1.0),
        shape=(slices, 2, 2),
    )
    values = start + np.arange(slices, dtype=np.float32)[:, None, None] * np.ones((1, 2, 2))
    return Volume(values.astype(np.float32), geometry)


def _pair(synthetic: Volume, source: Volume) -> PreviewVolumes:
    window = Window(1.0, 0.5)
    return PreviewVolumes(7, synthetic, "CT", source, "MR", window, window)


def test_the_source_slice_is_the_same_index_on_the_same_grid() -> None:
    pair = _pair(_volume(5, 0.0, 2.0, 100.0), _volume(5, 0.0, 2.0, 0.0))
    source, synthetic = pair.slice_pair(3)
    assert (source == 3).all() and (synthetic == 103).all()


def test_on_another_grid_the_source_slice_is_the_nearest_by_position() -> None:
    # output slices at z = 10, 12, 14, 16; source slices at z = 0, 5, 10, 15, 20
    pair = _pair(_volume(4, 10.0, 2.0, 100.0), _volume(5, 0.0, 5.0, 0.0))
    found = [int(pair.slice_pair(n)[0][0, 0]) for n in range(4)]
    assert found == [2, 2, 3, 3]


@pytest.mark.parametrize("n", [-1, 4, 100])
def test_a_slice_outside_the_series_names_the_range(n: int) -> None:
    pair = _pair(_volume(4, 0.0, 1.0, 0.0), _volume(4, 0.0, 1.0, 0.0))
    with pytest.raises(SliceOutOfRange, match=rf"output 7 has slices 0 to 3; no slice {n}$"):
        pair.slice_pair(n)


def test_render_uses_the_ct_window_asked_for() -> None:
    synthetic = _volume(2, 0.0, 1.0, 0.0)
    synthetic = Volume(np.full((2, 2, 2), 300.0, np.float32), synthetic.geometry)
    pair = _pair(synthetic, _volume(2, 0.0, 1.0, 0.0))
    brain = np.asarray(Image.open(io.BytesIO(pair.render(0))))
    bone = np.asarray(Image.open(io.BytesIO(pair.render(0, "bone"))))
    assert (brain[:, 2:4] == 255).all()  # 300 HU: above the brain window
    assert (bone[:, 2:4] == round((300 - (400 - 1000)) / 2000 * 255)).all()
