"""Where the tissue is in an image with no fixed unit: the Otsu threshold between
background and foreground.

MR has no absolute scale and its field of view holds any amount of air, so statistics
that should describe the patient (normalisation, input checks) are taken over the
voxels above this threshold rather than over the whole volume.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from inference.geometry import FloatArray

_BINS = 256


def otsu_threshold(values: FloatArray) -> float:
    """The intensity that best splits ``values`` into two classes (Otsu, 1979).

    The histogram spans the 0.1th to 99.9th percentile so that a few outliers (a bright
    artefact, a marker) cannot squeeze the tissue into one bin.
    """
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return 0.0
    low, high = np.percentile(finite, [0.1, 99.9])
    if high <= low:
        return float(low)
    counts, edges = np.histogram(np.clip(finite, low, high), bins=_BINS, range=(low, high))
    centres = (edges[:-1] + edges[1:]) / 2
    weight = np.cumsum(counts, dtype=np.float64)
    total = weight[-1]
    mass = np.cumsum(counts * centres, dtype=np.float64)
    below, above = weight[:-1], total - weight[:-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_below = mass[:-1] / below
        mean_above = (mass[-1] - mass[:-1]) / above
        between = below * above * (mean_below - mean_above) ** 2
    between = np.nan_to_num(between, nan=-1.0)
    return float(edges[1:-1][int(np.argmax(between))])


def foreground_mask(volume: FloatArray) -> npt.NDArray[np.bool_]:
    """Voxels above the Otsu threshold; all voxels when that leaves none."""
    mask = volume > otsu_threshold(volume)
    return mask if mask.any() else np.ones(volume.shape, dtype=bool)
