"""Imaging the painted head onto a slice stack with the slice profile and pixel area.

Each output voxel is the mean of sub-samples spread across its slice thickness and its
pixel (about one per millimetre), so a thick slice averages what it crosses, as a real
slice does. Work is cropped, slab by slab, to the rows and columns the head reaches.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from inference.geometry import FloatArray
from inference.training.testbench.anatomy import Head
from inference.training.testbench.grid import Stack
from inference.training.testbench.pose import Pose

SUBSAMPLE_MM = 1.5
"""Largest gap (mm) between sub-samples, across the slice and in plane."""
CHUNK_SAMPLES = 1_000_000


@dataclass(frozen=True)
class Slab:
    """Channels (channel, slice, row, column) of slices ``first`` .. ``first + n - 1``."""

    first: int
    channels: FloatArray


def _index_to_template(head: Head, pose: Pose) -> npt.NDArray[np.float64]:
    """4×4: patient mm → template voxel index."""
    return np.linalg.inv(head.affine) @ pose.to_template()


def _memory_order(matrix: npt.NDArray[np.float64]) -> list[int]:
    """The output axes ordered so that the last one steps along the template's last
    (contiguous) axis: resampling then reads memory in order, whatever the plane."""
    dominant = np.argmax(np.abs(matrix[:3, :3]), axis=0)
    return [int(a) for a in np.argsort(dominant, kind="stable")]


def slabs(head: Head, pose: Pose, stack: Stack) -> Iterator[Slab]:
    """The stack's channels, a few slices at a time, in slice order."""
    geometry = stack.geometry
    slices, rows, cols = geometry.shape
    thickness, pixel, _ = geometry.spacing
    across = max(1, math.ceil(thickness / SUBSAMPLE_MM))
    within = max(1, math.ceil(pixel / SUBSAMPLE_MM))
    per_slice = across * rows * cols * within * within
    step = max(1, CHUNK_SAMPLES // per_slice)
    to_voxel = _index_to_template(head, pose)
    for k0 in range(0, slices, step):
        k1 = min(slices, k0 + step)
        out = np.empty((head.channels.shape[0], k1 - k0, rows, cols), dtype=np.float32)
        out[:] = head.background[:, None, None, None]
        j0, j1, i0, i1 = stack.reach(k0, k1)
        if j1 > j0 and i1 > i0:
            # sub-sample index → fractional stack index → patient mm → template voxel
            fine = np.diag([1 / across, 1 / within, 1 / within, 1.0])
            fine[:3, 3] = np.array([k0, j0, i0]) + 0.5 / np.array([across, within, within]) - 0.5
            matrix = to_voxel @ geometry.affine @ fine
            shape = ((k1 - k0) * across, (j1 - j0) * within, (i1 - i0) * within)
            order = _memory_order(matrix)
            for c in range(head.channels.shape[0]):
                sampled = ndimage.affine_transform(
                    head.channels[c],
                    matrix[:3, order],
                    offset=matrix[:3, 3],
                    output_shape=tuple(shape[a] for a in order),
                    order=1,
                    # the grid ends in air on every side but the bottom, where the neck
                    # carries on out of the field of view as its lowest slice
                    mode="nearest",
                    prefilter=False,
                    output=np.float32,
                )
                out[c, :, j0:j1, i0:i1] = (
                    sampled.transpose(np.argsort(order))
                    .reshape(k1 - k0, across, j1 - j0, within, i1 - i0, within)
                    .mean(axis=(1, 3, 5))
                )
        yield Slab(first=k0, channels=out)
