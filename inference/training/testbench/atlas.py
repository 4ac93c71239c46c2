"""The MNI152 2009 grey- and white-matter maps on a grid padded to hold a whole head.

The maps come from the copy that nilearn's wheel ships (read with nibabel; nilearn itself is
not imported). They cover the brain only, so the grid is padded to make room for skull,
scalp, face and upper neck; below the maps the brainstem is continued as the spinal cord.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import nibabel as nib
import numpy as np
import numpy.typing as npt

from inference.geometry import FloatArray

MAPS = "mni_icbm152_{}_tal_nlin_sym_09a_converted.nii.gz"
PAD_LOW = (10, 4, 24)
"""Voxels added below each axis's first index: right, posterior, inferior (MNI is RAS)."""
PAD_HIGH = (10, 12, 4)


@dataclass(frozen=True)
class Atlas:
    """Tissue probabilities (0–1) on a 1 mm grid in MNI RAS millimetres.

    Arrays are indexed (z, y, x), x contiguous: axial and coronal slices of everything built
    on this grid then read memory in order, which makes resampling several times faster.
    """

    gm: FloatArray
    wm: FloatArray
    affine: npt.NDArray[np.float64]
    """Voxel index (k, j, i, 1) → MNI (x, y, z, 1) in mm."""

    def coordinates(self) -> tuple[FloatArray, FloatArray, FloatArray]:
        """MNI x, y, z (mm) along the arrays' last, middle and first axes."""
        nz, ny, nx = self.gm.shape
        x, y, z = (
            (self.affine[axis, 2 - axis] * np.arange(n) + self.affine[axis, 3]).astype(np.float32)
            for axis, n in enumerate((nx, ny, nz))
        )
        return x, y, z


def maps_folder() -> Path:
    """Where nilearn's wheel keeps its bundled MNI maps."""
    spec = importlib.util.find_spec("nilearn")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("nilearn is not installed; its wheel carries the MNI152 maps")
    return Path(spec.origin).parent / "datasets" / "data"


def _image(kind: str) -> nib.Nifti1Image:
    path = maps_folder() / MAPS.format(kind)
    image = nib.load(path)
    if not isinstance(image, nib.Nifti1Image):
        raise TypeError(f"{path} is not a NIfTI-1 image")
    return image


def _read(kind: str) -> FloatArray:
    data = np.asarray(_image(kind).dataobj, dtype=np.float32)
    return data / np.float32(data.max())


@cache
def load_atlas() -> Atlas:
    """The padded maps, loaded once per process (read-only arrays)."""
    affine = np.array(_image("gm").affine, dtype=np.float64)
    if not np.allclose(np.abs(np.diag(affine)[:3]), 1.0):
        raise ValueError(f"expected the 1 mm MNI grid, got affine {affine.tolist()}")
    pad = [(lo, hi) for lo, hi in zip(PAD_LOW, PAD_HIGH, strict=True)]
    maps = []
    for kind in ("gm", "wm"):
        data = np.pad(_read(kind), pad, mode="constant")
        # the cord: the lowest brainstem slice carried down through the padding
        data[:, :, : PAD_LOW[2]] = data[:, :, PAD_LOW[2] : PAD_LOW[2] + 1]
        reversed_axes = np.ascontiguousarray(data.transpose(2, 1, 0))
        reversed_axes.setflags(write=False)
        maps.append(reversed_axes)
    padded = affine.copy()
    padded[:3, 3] -= np.diag(affine)[:3] * np.array(PAD_LOW)
    return Atlas(gm=maps[0], wm=maps[1], affine=padded[:, [2, 1, 0, 3]])
