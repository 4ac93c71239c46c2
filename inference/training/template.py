"""The anatomical template the simulated subjects are made from.

nilearn's wheel ships the MNI152 2009c (symmetric) T1, grey-matter and white-matter maps
at 1 mm. The T1 is skull-stripped, so the head around the brain is built here from a
smooth hull of the brain: the signed distance to that hull places cerebrospinal fluid,
the skull's tables and diploë, scalp fat and skin at subject-specific depths, which is
what makes MR and CT differ as they do in life (bone and air both dark on MR, white and
black on CT). The files are read with nibabel; nilearn itself is never imported.
"""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import ndimage

TEMPLATE_FILES = {
    "t1": "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
    "gm": "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
    "wm": "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz",
}


class TemplateError(RuntimeError):
    """The template files cannot be found or read; the message says where it looked."""


def template_dir() -> Path:
    """The folder of nilearn's bundled data, found without importing nilearn."""
    spec = importlib.util.find_spec("nilearn")
    if spec is None or spec.origin is None:
        raise TemplateError(
            "nilearn is not installed: it ships the MNI152 template the simulator needs "
            "(pip install -e '.[training]')"
        )
    folder = Path(spec.origin).parent / "datasets" / "data"
    missing = [name for name in TEMPLATE_FILES.values() if not (folder / name).is_file()]
    if missing:
        raise TemplateError(f"{folder}: template files missing: {', '.join(missing)}")
    return folder


@dataclass(frozen=True)
class Template:
    """Maps on the template's 1 mm grid, indexed (x, y, z) in MNI (RAS) millimetres.

    ``gm`` and ``wm`` are tissue fractions (0..1); ``hull_distance`` is the signed
    distance in mm to the smooth hull around the brain (negative inside), from which
    every layer outside the brain is placed.
    """

    gm: npt.NDArray[np.float32]
    wm: npt.NDArray[np.float32]
    hull_distance: npt.NDArray[np.float32]
    affine: npt.NDArray[np.float64]
    """Voxel (x, y, z) index → MNI millimetres."""

    @property
    def shape(self) -> tuple[int, int, int]:
        x, y, z = self.gm.shape
        return (x, y, z)

    def hull_point(self, direction: tuple[float, float, float], origin_mm: npt.ArrayLike) -> float:
        """Distance in mm from ``origin_mm`` along ``direction`` to the hull surface."""
        start = np.asarray(origin_mm, dtype=float)
        step = np.asarray(direction, dtype=float) / np.linalg.norm(direction)
        to_voxel = np.linalg.inv(self.affine)
        for t in np.arange(0.0, 200.0, 0.5):
            ijk = (to_voxel @ np.append(start + t * step, 1.0))[:3]
            index = tuple(round(v) for v in ijk)
            if any(i < 0 or i >= n for i, n in zip(index, self.shape, strict=True)):
                return float(t)
            if self.hull_distance[index] >= 0:
                return float(t)
        return 200.0


def _brain_hull(brain: npt.NDArray[np.bool_]) -> npt.NDArray[np.bool_]:
    """The brain with its sulci filled: a smooth closed surface for the skull to follow."""
    smooth = ndimage.gaussian_filter(brain.astype(np.float32), sigma=4.0)
    hull = smooth > 0.3
    hull = ndimage.binary_closing(hull, structure=np.ones((3, 3, 3)), iterations=3)
    hull = ndimage.binary_fill_holes(hull)
    for z in range(hull.shape[2]):
        hull[:, :, z] = ndimage.binary_fill_holes(hull[:, :, z])
    return np.asarray(hull, dtype=bool)


@functools.lru_cache(maxsize=1)
def load_template() -> Template:
    """Reads the template once per process (about 2 s) and derives the hull distance."""
    import nibabel

    folder = template_dir()
    try:
        images: dict[str, Any] = {
            k: nibabel.load(folder / name) for k, name in TEMPLATE_FILES.items()
        }
        arrays = {k: np.asarray(im.dataobj, dtype=np.float32) for k, im in images.items()}
    except (OSError, ValueError) as exc:
        raise TemplateError(f"{folder}: cannot read the template: {exc}") from exc
    gm = np.clip(arrays["gm"] / 255.0, 0, 1).astype(np.float32)
    wm = np.clip(arrays["wm"] / 255.0, 0, 1).astype(np.float32)
    total = gm + wm
    over = total > 1
    gm[over] /= total[over]
    wm[over] /= total[over]
    hull = _brain_hull(arrays["t1"] > 0)
    outside = ndimage.distance_transform_edt(~hull).astype(np.float32)
    inside = ndimage.distance_transform_edt(hull).astype(np.float32)
    distance = outside - inside
    return Template(gm, wm, distance, np.asarray(images["t1"].affine, dtype=np.float64))
