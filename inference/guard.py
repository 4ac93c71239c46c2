"""The input guard: does a series look like what the model was trained on?

A model translates what it has learned; shown a T2w series labelled T1, a CT, a QA
phantom, noise or an empty field of view, it still returns an image, and that image
looks plausible. The guard refuses such inputs before the model runs.

Each input volume is reduced to a short *signature* measured on the head only (the
foreground: what stands clear of the background, holes filled slice by slice), so that
it does not depend on how much air the field of view holds, and in units that do not
depend on the scanner: intensities are divided by the foreground's 99th percentile and
depths are millimetres. The features (:data:`FEATURES`):

- ``hist_*``: the foreground's normalised intensity histogram in five coarse bins — a
  T1w head is mostly bright (brain, fat), a T2w head mostly mid-grey with bright CSF, a
  CT shown as MR mostly one soft-tissue level, a phantom one level;
- ``depth_*``: mean normalised intensity by depth below the head's surface (3-D
  distance transform in mm): in T1w the scalp fat is bright, the skull dark and the
  brain bright; in T2w the CSF under the skull is bright; in CT the skull is the
  brightest layer; a phantom is flat;
- ``deep_p95_over_median``, ``deep_p5_over_median``: the spread of intensities deeper
  than 22 mm (the brain), over its median: in T1w white matter is the brightest and CSF
  the darkest there, in T2w the CSF is far brighter than the rest, in CT, a phantom or
  noise the deep part is one level;
- ``log_volume_ml``: log10 of the foreground's volume — a head in a slab is tens to
  thousands of millilitres, a few bright voxels are not;
- ``log_roughness``: log10 of the median, over the foreground's interior, of the
  absolute difference between a voxel and the mean of its in-plane neighbours over that
  mean — the noise-to-signal texture: about -2 to -1 for an image, above -0.7 for pure
  noise.

The signature is compared with the reference (the training inputs of that role): each
feature is standardised robustly, ``z = (value - median) / scale``, and the score is
the Mahalanobis distance of ``z`` from the reference under a shrunk covariance. The
covariance matters: a bias field or a cropped field of view moves the histogram and
the depth profile together in one direction, a T2w contrast moves them in another;
measured on simulated cases, the distance separates the two far better than the
largest single z-score did. The feature with the largest ``|z|`` is reported beside
the score, to say what looked wrong. The reference and the threshold travel in the
model card (:class:`inference.card.RoleGuard`); fitting them is
``inference.training.guard_fit``.

numpy and scipy only: this runs in the node, without torch.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from inference.card import RoleGuard
from inference.geometry import FloatArray, Volume

HISTOGRAM_EDGES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
"""Bins of intensity / foreground 99th percentile; values above 1 count in the last."""
DEPTH_EDGES_MM = (0.0, 4.0, 8.0, 14.0, 22.0, 35.0, 60.0)
"""Shells below the head's surface, in millimetres."""
DEEP_MM = 22.0
"""Below this depth lies brain (and its CSF) in a head."""

FEATURES: tuple[str, ...] = (
    *(f"hist_{lo:.1f}-{hi:.1f}" for lo, hi in itertools.pairwise(HISTOGRAM_EDGES)),
    *(f"depth_{lo:g}-{hi:g}mm" for lo, hi in itertools.pairwise(DEPTH_EDGES_MM)),
    "deep_p95_over_median",
    "deep_p5_over_median",
    "log_volume_ml",
    "log_roughness",
)
"""The signature's features, in order; a card's guard names the ones it was fitted on."""

HISTOGRAM_FEATURES = FEATURES[: len(HISTOGRAM_EDGES) - 1]
DEPTH_FEATURES = FEATURES[
    len(HISTOGRAM_FEATURES) : len(HISTOGRAM_FEATURES) + len(DEPTH_EDGES_MM) - 1
]

SIGNATURE_SPACING_MM = 1.5
"""The signature looks at a series at about this in-plane spacing or coarser, keeping
every n-th row and column (so each voxel keeps its own noise): a series reconstructed
at 0.5 mm, often interpolated from a coarser acquisition, then reads as its acquisition
would — measured on a T1w interpolated from 1.2 to 0.5 mm, the log-roughness was -2.33
at full resolution and -1.53 when thinned by 3, against -1.6 ± 0.2 for the reference —
and the distance transform stays small."""
MAX_VOXELS = 8_000_000
"""A head's bounding box larger than this after thinning is thinned further."""
FOREGROUND_FRACTION = 0.1
"""Foreground: above this fraction of the head's bright end (see :func:`foreground`)."""
MIN_FOREGROUND_VOXELS = 64
"""Below this the signature is that of an empty series (see :func:`signature`)."""

BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class Assessment:
    """The guard's judgement of one input series."""

    accepted: bool
    score: float
    threshold: float
    feature: str
    """The feature furthest from the reference's centre: what looked least like it."""
    reference_cases: int


def _shifted(array: FloatArray) -> FloatArray:
    """Intensities above the series' own floor, so that HU (air at -1000) and scanner
    units (air near 0) both put the background at 0."""
    x = np.asarray(array, dtype=np.float32)
    return np.maximum(x - np.float32(np.percentile(x, 0.1)), 0)


def foreground(array: FloatArray) -> BoolArray:
    """The head: voxels well above the background, holes (dark skull, CSF, sinus air)
    filled slice by slice, its connected parts of at least a tenth of the largest's size.

    Filling before choosing matters: the dark skull can part the scalp from the brain,
    and the largest part alone was then the brain — measured on a simulated T1w
    (1.3 mm slices), the head's volume read 955 ml instead of 1660 and the 14–22 mm
    shell 0.76 instead of 0.27 of the 99th percentile, as another contrast would. Parts
    are kept beside the largest for a head cut by the field of view, whose scalp ring
    no filling closes.

    "Well above" is a fraction of the 99th percentile of the voxels brighter than three
    times the median — the head's own bright end whether it fills half the field of
    view or under one percent of it (a percentile of all voxels would slide with the
    amount of background). When no voxel stands three times above the median, the head
    (or a CT's tissue, a phantom) fills most of the field of view, the median is tissue,
    not air, and the bright end is the 99th percentile of all voxels — measured on a T2w
    cropped to 0.62 of its field of view and on whole-head series with a tight field of
    view, the earlier rule found no foreground at all and read a head as an empty series."""
    x = _shifted(array)
    bright = x[x > 3 * float(np.median(x))]
    if not bright.size:
        bright = x.ravel()
    top = float(np.percentile(bright, 99))
    if top <= 0:
        return np.zeros(x.shape, dtype=bool)
    mask = ndimage.binary_opening(x > FOREGROUND_FRACTION * top, np.ones((1, 3, 3), bool))
    mask = np.stack([ndimage.binary_fill_holes(s) for s in mask]).astype(bool)
    labels, count = ndimage.label(mask)
    if count > 1:
        sizes = np.bincount(labels.ravel())
        sizes[0] = 0
        mask = sizes[labels] >= 0.1 * sizes.max()
    return np.stack([ndimage.binary_fill_holes(s) for s in mask]).astype(bool)


def _roughness(x: FloatArray, interior: BoolArray) -> float:
    kernel = np.array([[0, 1, 0], [1, 0, 1], [0, 1, 0]], dtype=np.float32)[None] / 4
    neighbours = ndimage.convolve(x, kernel, mode="nearest")
    local = np.maximum(neighbours[interior], 1e-6)
    return float(np.median(np.abs(x[interior] - neighbours[interior]) / local))


def _thinned(volume: Volume) -> tuple[FloatArray, tuple[float, float, float]]:
    """Every n-th row and column of the volume's array, n chosen for an in-plane spacing
    of at least :data:`SIGNATURE_SPACING_MM`; and the spacing of what is returned."""
    k, j, i = volume.geometry.spacing
    step = max(1, int(SIGNATURE_SPACING_MM // min(j, i)))
    return volume.array[:, ::step, ::step], (k, j * step, i * step)


def _around(
    mask: BoolArray, x: FloatArray, spacing: tuple[float, float, float]
) -> tuple[BoolArray, FloatArray, tuple[float, float, float]]:
    """Mask and intensities cut to the head's bounding box (one voxel of margin in
    plane), so that a head small in a large field of view costs what a head costs;
    thinned further if the box alone exceeds :data:`MAX_VOXELS`."""
    planes, rows, cols = (np.flatnonzero(mask.any(axis=axes)) for axes in ((1, 2), (0, 2), (0, 1)))
    box = (
        slice(planes[0], planes[-1] + 1),
        slice(max(rows[0] - 1, 0), rows[-1] + 2),
        slice(max(cols[0] - 1, 0), cols[-1] + 2),
    )
    mask, x = mask[box], x[box]
    step = max(1, int(np.ceil(np.sqrt(mask.size / MAX_VOXELS))))
    if step > 1:
        mask, x = mask[:, ::step, ::step], x[:, ::step, ::step]
    return mask, x, (spacing[0], spacing[1] * step, spacing[2] * step)


def signature(volume: Volume) -> dict[str, float]:
    """The features of :data:`FEATURES` for one volume.

    A volume with next to no foreground gets the signature of nothing (zero histogram,
    profile and log-roughness, a tiny volume): every reference of a head is far from it.
    """
    array, spacing = _thinned(volume)
    x = _shifted(array)
    mask = foreground(array)
    values: dict[str, float] = dict.fromkeys(FEATURES, 0.0)
    count = int(mask.sum())
    if count < MIN_FOREGROUND_VOXELS:
        values["log_volume_ml"] = float(np.log10(max(count, 1) * np.prod(spacing) / 1000.0))
        return values
    mask, x, spacing = _around(mask, x, spacing)
    count = int(mask.sum())
    values["log_volume_ml"] = float(np.log10(count * np.prod(spacing) / 1000.0))
    scale = float(np.percentile(x[mask], 99)) or 1.0
    normalised = x / np.float32(scale)
    inside = np.clip(normalised[mask], 0.0, HISTOGRAM_EDGES[-1])
    histogram, _ = np.histogram(inside, bins=HISTOGRAM_EDGES)
    for name, share in zip(HISTOGRAM_FEATURES, histogram / count, strict=True):
        values[name] = float(share)
    depth = ndimage.distance_transform_edt(mask, sampling=spacing)
    for name, (lo, hi) in zip(DEPTH_FEATURES, itertools.pairwise(DEPTH_EDGES_MM), strict=True):
        shell = mask & (depth > lo) & (depth <= hi)
        values[name] = float(normalised[shell].mean()) if shell.any() else 0.0
    deep = normalised[mask & (depth > DEEP_MM)]
    if deep.size:
        p5, p50, p95 = (float(v) for v in np.percentile(deep, [5, 50, 95]))
        values["deep_p95_over_median"] = p95 / max(p50, 1e-6)
        values["deep_p5_over_median"] = p5 / max(p50, 1e-6)
    interior = mask & (depth > 2 * max(spacing))
    rough = _roughness(normalised, interior if interior.any() else mask)
    values["log_roughness"] = float(np.log10(max(rough, 1e-4)))
    return values


def vector(values: dict[str, float], names: tuple[str, ...]) -> npt.NDArray[np.float64]:
    """The named features of a signature, in order."""
    return np.array([values[n] for n in names], dtype=np.float64)


def score(values: dict[str, float], guard: RoleGuard) -> tuple[float, str]:
    """Shrunk-covariance Mahalanobis distance of a signature from the reference, and
    the feature furthest from the reference's centre in robust z."""
    z = (vector(values, guard.features) - np.asarray(guard.centre)) / np.asarray(guard.scale)
    d = z - np.asarray(guard.location)
    distance = float(np.sqrt(max(float(d @ np.asarray(guard.precision) @ d), 0.0)))
    return distance, guard.features[int(np.argmax(np.abs(z)))]


def assess(volume: Volume, guard: RoleGuard) -> Assessment:
    """Scores one input volume against the reference of its role."""
    value, feature = score(signature(volume), guard)
    return Assessment(
        accepted=value <= guard.threshold,
        score=value,
        threshold=guard.threshold,
        feature=feature,
        reference_cases=guard.reference_cases,
    )
