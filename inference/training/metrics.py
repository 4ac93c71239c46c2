"""Image-similarity figures used to judge the models, restricted to a mask.

SSIM follows Wang et al. (2004): an 11-tap Gaussian window (σ = 1.5 pixels) in each
slice, K1 = 0.01, K2 = 0.03, averaged over the masked pixels. PSNR uses the mean
squared error over the mask and a stated data range.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from inference.geometry import FloatArray

Mask = npt.NDArray[np.bool_]


def _checked(a: FloatArray, b: FloatArray, mask: Mask) -> None:
    if a.shape != b.shape or a.shape != mask.shape:
        raise ValueError(f"shapes differ: {a.shape}, {b.shape}, mask {mask.shape}")
    if not mask.any():
        raise ValueError("the mask is empty")


def mae(prediction: FloatArray, truth: FloatArray, mask: Mask) -> float:
    """Mean absolute error over the mask, in the images' units."""
    _checked(prediction, truth, mask)
    return float(np.abs(prediction[mask].astype(np.float64) - truth[mask]).mean())


def psnr(prediction: FloatArray, truth: FloatArray, mask: Mask, data_range: float) -> float:
    """Peak signal-to-noise ratio in dB over the mask."""
    _checked(prediction, truth, mask)
    mse = float(((prediction[mask].astype(np.float64) - truth[mask]) ** 2).mean())
    return float("inf") if mse == 0 else float(10 * np.log10(data_range**2 / mse))


def ssim(prediction: FloatArray, truth: FloatArray, mask: Mask, data_range: float) -> float:
    """Structural similarity, slice by slice (axis 0), averaged over the mask."""
    _checked(prediction, truth, mask)
    x = prediction.astype(np.float64)
    y = truth.astype(np.float64)
    sigma = (0.0, 1.5, 1.5) if x.ndim == 3 else 1.5

    def blur(a: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        return np.asarray(ndimage.gaussian_filter(a, sigma=sigma, truncate=3.5))

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    index = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / (
        (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)
    )
    return float(index[mask].mean())
