"""Test-time augmentation: the spread across passes, in the output's units, and the
per-series figures taken inside the head."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from inference.geometry import Geometry, Volume
from inference.predict import Augmentation, translate, translate_with_spread
from inference.registry import load_model
from inference.uncertainty import spread_figures
from onnx_models import conv1x1_model, linear_card, neighbour_model

CPU = ["CPUExecutionProvider"]


def _volume(array: np.ndarray) -> Volume:
    array = np.asarray(array, dtype=np.float32)
    geometry = Geometry(
        origin=(0.0, 0.0, 0.0),
        row_direction=(1.0, 0.0, 0.0),
        column_direction=(0.0, 1.0, 0.0),
        slice_direction=(0.0, 0.0, 1.0),
        spacing=(2.0, 1.0, 1.0),
        shape=array.shape,
    )
    return Volume(array, geometry)


def _ramp(shape: tuple[int, int, int]) -> np.ndarray:
    k, j, i = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    return (100 + 100 * k + 10 * j + i).astype(np.float32)


def test_a_mirror_symmetric_model_gives_its_plain_output_and_zero_spread(tmp_path: Path) -> None:
    model = load_model(conv1x1_model(tmp_path / "m.onnx", linear_card(), [2.0], -1000.0), CPU)
    volume = _volume(_ramp((4, 6, 9)))

    prediction = translate_with_spread(model, [volume])

    np.testing.assert_array_equal(prediction.output.array, translate(model, [volume]).array)
    assert prediction.output.geometry == volume.geometry
    assert prediction.passes == ("identity", "mirror-columns")
    assert prediction.spread.shape == volume.array.shape
    assert float(prediction.spread.max()) == 0.0


def test_the_mirror_pass_is_mirrored_back_and_its_disagreement_is_the_spread(
    tmp_path: Path,
) -> None:
    model = load_model(neighbour_model(tmp_path / "m.onnx", linear_card(), a=1.0, b=0.5), CPU)
    x = _ramp((3, 5, 8))

    prediction = translate_with_spread(model, [_volume(x)])

    inner = (slice(None), slice(None), slice(1, -1))
    # passes: x[i] + 0.5·x[i+1] and, mirrored back, x[i] + 0.5·x[i-1]; the ramp rises 1 per column
    np.testing.assert_allclose(prediction.output.array[inner], 1.5 * x[inner], rtol=1e-6)
    np.testing.assert_allclose(prediction.spread[inner], 0.5, rtol=1e-5)


def test_the_intensity_pass_scales_the_normalised_input(tmp_path: Path) -> None:
    model = load_model(conv1x1_model(tmp_path / "m.onnx", linear_card(), [2.0], -1000.0), CPU)
    x = _ramp((2, 4, 4))

    prediction = translate_with_spread(
        model, [_volume(x)], augmentation=Augmentation(mirror=False, intensity_gain=1.05)
    )

    passes = np.stack([2 * x - 1000, 2 * 1.05 * x - 1000])
    assert prediction.passes == ("identity", "intensity-gain-1.05")
    np.testing.assert_allclose(prediction.output.array, passes.mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(prediction.spread, passes.std(axis=0), rtol=1e-4)


def test_ct_figures_count_only_voxels_above_minus_500_hu() -> None:
    output = np.full((2, 4, 4), -1000.0, dtype=np.float32)
    output[:, :2] = 40.0
    spread = np.where(output > -500, 10.0, 300.0).astype(np.float32)
    spread[0, 0, 0] = 50.0

    figures = spread_figures(output, spread, linear_card())

    assert figures.mean == np.float32(10.0 + 40.0 / 16)
    assert figures.p95 > 10.0 and figures.p95 < 50.0
    assert figures.region == "output above -500 HU"


def test_mr_figures_count_only_voxels_above_a_fraction_of_the_99th_percentile() -> None:
    card = linear_card("mr-t1t2-to-flair", ("T1", "T2"), "FLAIR", "MR", value_range=(0, 4095))
    output = np.zeros((1, 10, 10), dtype=np.float32)
    output[0, :5] = 1000.0
    spread = np.where(output > 0, 7.0, 99.0).astype(np.float32)

    figures = spread_figures(output, spread, card)

    assert (figures.mean, figures.p95) == (7.0, 7.0)


def test_an_empty_head_gives_zero_figures() -> None:
    output = np.full((1, 3, 3), -1000.0, dtype=np.float32)

    figures = spread_figures(output, np.ones_like(output), linear_card())

    assert (figures.mean, figures.p95) == (0.0, 0.0)
