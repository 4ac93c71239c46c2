"""One case's head on the 1 mm template grid, painted as partial-volume channels.

The intracranial space is the brain closed over its sulci (a morphological closing);
skull, scalp, face, neck and sinuses are then laid around it (see ``layers`` and ``face``)
and its inside filled from the template (``brain``). The result depends on the seed only,
so every acquisition of a case images the same head.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from inference.geometry import FloatArray
from inference.training.testbench import brain, face, layers
from inference.training.testbench.atlas import Atlas, load_atlas
from inference.training.testbench.canvas import CHANNELS, Canvas
from inference.training.testbench.shapes import Region, soft_step

HEAD_CENTRE = (0.0, -17.0, 8.0)
"""MNI mm; thickness maps are drawn over directions seen from here."""
FORAMEN_MAGNUM_Z = -74.0
"""Below this (MNI mm) the cord and its CSF are no longer intracranial."""
REACH_MM = 45.0
"""How far outside the closed brain the scalp can lie."""


@dataclass(frozen=True)
class Head:
    """The painted channels (see ``canvas.CHANNELS``) on the template grid, (channel, z, y, x)."""

    channels: FloatArray
    affine: npt.NDArray[np.float64]
    """Voxel index (k, j, i, 1) → MNI (x, y, z, 1) in mm; arrays are (z, y, x) as the atlas's."""
    background: FloatArray
    """Channel values of the air around the head."""
    description: dict[str, str]


def closed_brain(atlas: Atlas, radius_mm: float) -> npt.NDArray[np.bool_]:
    """The brain with its sulci and ventricles filled: the intracranial space's core.

    Closed on a 2 mm grid, which is ample for a ball of 5–8 mm and four times cheaper.
    """
    brain_mask = (atlas.gm + atlas.wm) > 0.5
    coarse = brain_mask[::2, ::2, ::2]
    grown = ndimage.distance_transform_edt(~coarse, sampling=2.0) <= radius_mm
    closed = ndimage.distance_transform_edt(grown, sampling=2.0) > radius_mm
    closed = ndimage.binary_fill_holes(closed | coarse)
    fine = closed.repeat(2, axis=0).repeat(2, axis=1).repeat(2, axis=2)
    a, b, c = brain_mask.shape
    return np.asarray(fine[:a, :b, :c] | brain_mask)


def head_region(atlas: Atlas, depth: FloatArray) -> Region:
    """The voxels that can hold head: near the brain, or in the face and neck boxes."""
    x, y, z = atlas.coordinates()
    wide = np.abs(x)[None, None, :] < 62
    neck = wide & ((y > -88) & (y < 34))[None, :, None] & (z < face.NECK_TOP_Z + 54)[:, None, None]
    front = wide & (y > -4)[None, :, None] & (z < 0)[:, None, None]
    index = np.flatnonzero((depth <= REACH_MM) | neck | front)
    k, j, i = np.unravel_index(index, depth.shape)
    rx, ry, rz = x[i], y[j], z[k]
    dx, dy, dz = (rx - HEAD_CENTRE[0], ry - HEAD_CENTRE[1], rz - HEAD_CENTRE[2])
    norm = np.sqrt(dx * dx + dy * dy + dz * dz) + np.float32(1e-3)
    return Region(
        index=index,
        x=rx,
        y=ry,
        z=rz,
        depth=depth.reshape(-1)[index],
        ux=dx / norm,
        uy=dy / norm,
        uz=dz / norm,
    )


def build_head(
    colours: dict[str, FloatArray], draw: layers.LayerDraw, rng: np.random.Generator
) -> Head:
    """Paint the case's head from the outside in, each tissue over what lies outside it."""
    atlas = load_atlas()
    closing = float(rng.uniform(5.0, 8.0))
    core = closed_brain(atlas, closing)
    depth = ndimage.distance_transform_edt(~core).astype(np.float32)
    region = head_region(atlas, depth)
    del core, depth

    canvas = Canvas.filled(region.index, colours["air"])
    shells = layers.boundaries(region, draw, rng)
    layers.paint_scalp(canvas, region, shells, colours)
    described = face.paint_face_and_neck(canvas, region, colours, rng)
    layers.paint_skull(canvas, region, shells, colours)
    described |= face.paint_skull_base(canvas, region, colours, rng)
    layers.paint_sinuses(canvas, region, shells, colours, rng)
    described |= brain.paint_intracranial(canvas, region, shells.csf, atlas, colours, rng)
    canvas.values[:, CHANNELS.index("brain")] *= soft_step(region.z - np.float32(FORAMEN_MAGNUM_Z))

    skull = shells.skull - shells.csf
    described |= {
        "sulcal_closing_mm": f"{closing:.1f}",
        "csf_rim_mm": f"{draw.csf_rim:.1f}",
        "skull_template_mm": (
            f"mean {draw.skull_mean:.1f}, range {skull.min():.1f}–{skull.max():.1f}"
        ),
        "tables_mm": f"inner {draw.inner_table:.1f}, outer {draw.outer_table:.1f}",
        "temporalis_mm": f"{draw.temporalis:.1f}",
        "scalp_mm": f"galea {draw.galea:.1f}, fat {draw.fat:.1f}, skin {draw.skin:.1f}",
        "frontal_sinus_mm": f"{draw.frontal_sinus:.1f}",
        "mastoid_mm": f"{draw.mastoid:.1f}",
    }
    return Head(
        channels=canvas.to_grid(atlas.gm.shape, colours["air"]),
        affine=atlas.affine,
        background=colours["air"],
        description=described,
    )
