"""Intensity normalisation of model inputs and its inverse for outputs, as the card says.

Statistics (percentiles, mean/std) are taken over the whole input volume (or its
foreground), not per slice, so that every slice of a series is scaled alike.
"""

from __future__ import annotations

import numpy as np

from inference.card import ForegroundNorm, LinearNorm, Normalization, PercentileNorm, ZScoreNorm
from inference.foreground import foreground_mask
from inference.geometry import FloatArray


def _foreground(volume: FloatArray, floor: float | None) -> FloatArray:
    if floor is None:
        return volume
    values = volume[volume > floor]
    return values if values.size else volume


def _clip(x: FloatArray, clip: tuple[float, float] | None) -> FloatArray:
    if clip is None:
        return x
    return np.clip(x, clip[0], clip[1], out=x)


def normalize(volume: FloatArray, norm: Normalization) -> FloatArray:
    """Maps a volume in physical units to the range the network was trained on."""
    x = volume.astype(np.float32, copy=True)
    if isinstance(norm, LinearNorm):
        x *= np.float32(norm.scale)
        x += np.float32(norm.offset)
    elif isinstance(norm, PercentileNorm):
        lo, hi = np.percentile(_foreground(volume, norm.floor), [norm.low, norm.high])
        span = float(hi - lo) or 1.0
        x -= np.float32(lo)
        x /= np.float32(span)
    elif isinstance(norm, ZScoreNorm):
        values = _foreground(volume, norm.floor)
        std = float(values.std()) or 1.0
        x -= np.float32(values.mean())
        x /= np.float32(std)
    elif isinstance(norm, ForegroundNorm):
        level = float(np.percentile(volume[foreground_mask(volume)], norm.high)) or 1.0
        x /= np.float32(level)
    return _clip(x, norm.clip)


def denormalize(
    output: FloatArray, norm: LinearNorm, value_range: tuple[float, float]
) -> FloatArray:
    """Maps network output back to physical units, clipped to the card's value range."""
    y = output.astype(np.float32, copy=True)
    y *= np.float32(norm.scale)
    y += np.float32(norm.offset)
    y = _clip(y, norm.clip)
    return np.clip(y, value_range[0], value_range[1], out=y)
