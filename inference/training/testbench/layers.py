"""The shells around the brain: CSF rim, skull tables and diploë, temporalis, scalp.

Every shell's thickness is a map over the head (a mean drawn per case, regional trends,
and a random slow variation), so the skull is thick at the occiput and frontal bone and
thin over the temporal squama, and no two cases share a profile. Depths are measured
outward from the closed brain surface.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from inference.geometry import FloatArray
from inference.training.testbench.canvas import Canvas
from inference.training.testbench.properties import Marrow
from inference.training.testbench.shapes import Region, soft_step

SKULL_MM = (3.4, 8.9)
"""Clip of the skull map on the template, before head scaling (0.88–1.12) → 3–10 mm."""
FRONTAL_SINUS = (0.0, 1.0, -0.12)
MASTOID = (0.7, -0.3, -0.65)


@dataclass(frozen=True)
class LayerDraw:
    """One case's shell thicknesses (mm, on the template before head scaling)."""

    csf_rim: float
    skull_mean: float
    inner_table: float
    outer_table: float
    temporalis: float
    galea: float
    fat: float
    skin: float
    frontal_sinus: float
    mastoid: float


def draw_layers(rng: np.random.Generator, marrow: Marrow) -> LayerDraw:
    """Thicknesses; a sclerotic diploë comes with a thin, dense vault."""
    skull_mean = rng.uniform(3.8, 5.5) if marrow.kind == "sclerotic" else rng.uniform(4.8, 7.5)
    return LayerDraw(
        csf_rim=float(rng.uniform(0.8, 3.5)),
        skull_mean=float(skull_mean),
        inner_table=float(rng.uniform(0.8, 1.6)),
        outer_table=float(rng.uniform(1.2, 2.2)),
        temporalis=float(rng.uniform(6.0, 14.0)),
        galea=float(rng.uniform(0.8, 1.5)),
        fat=float(rng.uniform(2.0, 6.0)),
        skin=float(rng.uniform(1.5, 2.8)),
        frontal_sinus=float(rng.uniform(6.0, 14.0)) if rng.random() < 0.85 else 0.0,
        mastoid=float(rng.uniform(3.0, 8.0)),
    )


@dataclass(frozen=True)
class Boundaries:
    """Outer depth (mm) of each shell at every voxel of the region."""

    csf: FloatArray
    inner_table: FloatArray
    diploe: FloatArray
    skull: FloatArray
    galea: FloatArray
    """Outside the temporalis where there is one."""
    fat: FloatArray
    skin: FloatArray
    frontal_sinus: FloatArray
    """Weight (0–1) of the frontal sinus patch."""
    mastoid: FloatArray


def skull_map(region: Region, draw: LayerDraw, rng: np.random.Generator) -> FloatArray:
    """Total vault thickness: thicker occiput and frontal bone, thin temporal squama."""
    trend = (
        1.0
        + 0.35 * region.bump((0.0, -1.0, 0.15), 0.5)
        + 0.20 * region.bump((0.0, 0.9, 0.45), 0.5)
        - 0.40 * region.lateral_bump((1.0, 0.0, 0.05), 0.45)
    )
    varied = draw.skull_mean * trend * (1.0 + region.smooth_field(rng, 0.08))
    return np.clip(varied, *SKULL_MM).astype(np.float32, copy=False)


def boundaries(region: Region, draw: LayerDraw, rng: np.random.Generator) -> Boundaries:
    """All shell boundaries of the case on the region."""
    csf = draw.csf_rim * np.clip(1.0 + region.smooth_field(rng, 0.25), 0.4, 2.0)
    sinus = region.bump(FRONTAL_SINUS, 0.28) if draw.frontal_sinus > 0 else np.zeros_like(csf)
    mastoid = region.lateral_bump(MASTOID, 0.2)
    vault = skull_map(region, draw, rng) + draw.frontal_sinus * sinus + draw.mastoid * mastoid
    tables = draw.inner_table + draw.outer_table
    squeeze = np.minimum(1.0, vault / tables)
    skull = csf + vault
    temporalis = skull + draw.temporalis * region.lateral_bump((0.95, 0.05, 0.1), 0.42)
    galea = temporalis + draw.galea
    fat = galea + draw.fat * np.clip(1.0 + region.smooth_field(rng, 0.3), 0.3, 2.0)
    return Boundaries(
        csf=csf.astype(np.float32, copy=False),
        inner_table=(csf + draw.inner_table * squeeze).astype(np.float32, copy=False),
        diploe=(skull - draw.outer_table * squeeze).astype(np.float32, copy=False),
        skull=skull.astype(np.float32, copy=False),
        galea=galea.astype(np.float32, copy=False),
        fat=fat.astype(np.float32, copy=False),
        skin=(fat + draw.skin).astype(np.float32, copy=False),
        frontal_sinus=sinus,
        mastoid=mastoid,
    )


def _paint_solid(
    canvas: Canvas, region: Region, colour: FloatArray, outer: FloatArray, covered_below: float
) -> None:
    """Paint everything within depth ``outer``, skipping voxels a later, inner shell covers."""
    band = (region.depth < float(outer.max()) + 0.5) & (region.depth > covered_below - 0.5)
    where = np.flatnonzero(band)
    canvas.paint(colour, soft_step(outer[where] - region.depth[where]), where)


def paint_scalp(
    canvas: Canvas, region: Region, b: Boundaries, colours: dict[str, FloatArray]
) -> None:
    """Skin, subcutaneous fat, galea and temporalis, outermost first."""
    _paint_solid(canvas, region, colours["skin"], b.skin, float(b.fat.min()))
    _paint_solid(canvas, region, colours["fat"], b.fat, float(b.galea.min()))
    _paint_solid(canvas, region, colours["muscle"], b.galea, float(b.skull.min()))


def paint_skull(
    canvas: Canvas, region: Region, b: Boundaries, colours: dict[str, FloatArray]
) -> None:
    """Outer table, diploë, inner table."""
    _paint_solid(canvas, region, colours["cortical"], b.skull, float(b.diploe.min()))
    _paint_solid(canvas, region, colours["diploe"], b.diploe, float(b.inner_table.min()))
    _paint_solid(canvas, region, colours["cortical"], b.inner_table, float(b.csf.min()))


def paint_sinuses(
    canvas: Canvas,
    region: Region,
    b: Boundaries,
    colours: dict[str, FloatArray],
    rng: np.random.Generator,
) -> None:
    """Frontal sinus and mastoid air cells, hollowing the diploë between the tables."""
    period = np.float32(rng.uniform(4.5, 7.0))
    phases = rng.uniform(0, 2 * np.pi, size=3).astype(np.float32, copy=False)
    for weight, cellular in ((b.frontal_sinus, False), (b.mastoid, True)):
        where = np.flatnonzero(weight > 0.35)
        depth = region.depth[where]
        air = np.clip((weight[where] - 0.45) / 0.2, 0.0, 1.0)
        air *= soft_step(depth - b.inner_table[where] - 0.5)
        air *= soft_step(b.diploe[where] - depth - 0.5)
        if cellular:
            air *= _cells(region, where, period, phases)
        canvas.paint(colours["sinus_air"], air.astype(np.float32, copy=False), where)


def _cells(
    region: Region, where: npt.NDArray[np.intp], period: np.float32, phases: FloatArray
) -> FloatArray:
    """A honeycomb of air cells with bony septa between them."""
    k = np.float32(2 * np.pi) / period
    wave = (
        np.cos(k * region.x[where] + phases[0])
        * np.cos(k * region.y[where] + phases[1])
        * np.cos(k * region.z[where] + phases[2])
    )
    return np.clip((np.abs(wave) - 0.15) / 0.3, 0.0, 1.0).astype(np.float32, copy=False)
