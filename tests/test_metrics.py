"""The quality figures and the lookup baseline, on images whose answers are known."""

from __future__ import annotations

import numpy as np
import pytest

from inference.training.baselines import IntensityLookup
from inference.training.metrics import mae, psnr, ssim


@pytest.fixture
def image() -> np.ndarray:
    rng = np.random.default_rng(0)
    smooth = np.cumsum(np.cumsum(rng.normal(size=(4, 64, 64)), axis=1), axis=2)
    return smooth.astype(np.float32)


def test_identical_images_have_no_error_infinite_psnr_and_ssim_one(image: np.ndarray) -> None:
    mask = np.ones(image.shape, dtype=bool)
    assert mae(image, image, mask) == 0
    assert psnr(image, image, mask, 100.0) == float("inf")
    assert ssim(image, image, mask, float(np.ptp(image))) == pytest.approx(1.0)


def test_a_constant_offset_gives_its_size_as_mae_and_the_matching_psnr(image: np.ndarray) -> None:
    mask = np.zeros(image.shape, dtype=bool)
    mask[:, 10:20, 10:20] = True
    shifted = image + 5.0
    assert mae(shifted, image, mask) == pytest.approx(5.0)
    assert psnr(shifted, image, mask, 500.0) == pytest.approx(20 * np.log10(500.0 / 5.0))


def test_only_the_masked_voxels_count(image: np.ndarray) -> None:
    mask = np.zeros(image.shape, dtype=bool)
    mask[0, :8, :8] = True
    spoiled = image.copy()
    spoiled[~mask] += 1000
    assert mae(spoiled, image, mask) == 0


def test_ssim_falls_as_noise_grows(image: np.ndarray) -> None:
    mask = np.ones(image.shape, dtype=bool)
    rng = np.random.default_rng(1)
    span = float(np.ptp(image))
    values = [
        ssim(image + rng.normal(0, s * span, image.shape).astype(np.float32), image, mask, span)
        for s in (0.01, 0.05, 0.2)
    ]
    assert values[0] > values[1] > values[2]
    assert values[0] < 1.0


def test_shape_mismatch_and_empty_masks_are_refused(image: np.ndarray) -> None:
    with pytest.raises(ValueError, match="shapes differ"):
        mae(image, image[:2], np.ones(image.shape, dtype=bool))
    with pytest.raises(ValueError, match="mask is empty"):
        mae(image, image, np.zeros(image.shape, dtype=bool))


def test_a_one_input_lookup_learns_a_step_function() -> None:
    x = np.linspace(0.0, 1.0, 1000, dtype=np.float32)[None]
    truth = np.where(x[0] < 0.5, -1000.0, 40.0).astype(np.float32)
    lookup = IntensityLookup(channels=1, bins=20, low=0.0, high=1.0).fit(x, truth)
    probe = np.array([[0.1, 0.3, 0.7, 0.95]], dtype=np.float32)
    assert lookup.predict(probe).tolist() == [-1000.0, -1000.0, 40.0, 40.0]


def test_a_two_input_lookup_fills_unseen_bins_from_the_nearest_seen_one() -> None:
    x = np.array([[0.1, 0.9], [0.1, 0.9]], dtype=np.float32)
    lookup = IntensityLookup(channels=2, bins=10, low=0.0, high=1.0).fit(
        x, np.array([1.0, 9.0], dtype=np.float32)
    )
    probe = np.array([[0.15, 0.85, 0.2], [0.05, 0.95, 0.15]], dtype=np.float32)
    assert lookup.predict(probe).tolist() == [1.0, 9.0, 1.0]


def test_a_lookup_needs_fitting_and_one_or_two_channels() -> None:
    with pytest.raises(ValueError, match="1 or 2"):
        IntensityLookup(channels=3)
    with pytest.raises(RuntimeError, match="not been fitted"):
        IntensityLookup(channels=1).predict(np.zeros((1, 4), dtype=np.float32))
