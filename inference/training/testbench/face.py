"""A crude face, upper neck and skull base: the structures below and in front of the brain.

Positions are MNI millimetres chosen from adult head anatomy (orbits below the frontal
lobes, maxillary sinuses below the orbits, the airway in front of the upper cervical
spine); each case jitters them a little and draws its own sinus sizes.
"""

from __future__ import annotations

import numpy as np

from inference.geometry import FloatArray
from inference.training.testbench.canvas import Canvas
from inference.training.testbench.shapes import Point, Region, soft_step

NECK_TOP_Z = -50.0
NECK_CENTRE = (0.0, -28.0)
NECK_RADII = (52.0, 54.0)


def _less(radii: tuple[float, float], inset: float) -> tuple[float, float]:
    return (radii[0] - inset, radii[1] - inset)


def _wider(radii: Point, by: float) -> Point:
    return (radii[0] + by, radii[1] + by, radii[2] + by)


def _ellipsoid(
    canvas: Canvas, region: Region, colour: FloatArray, centre: Point, radii: Point
) -> None:
    where = region.near(centre, radii)
    canvas.paint(colour, region.ellipsoid(centre, radii, at=where), where)


def _column(
    canvas: Canvas,
    region: Region,
    colour: FloatArray,
    centre: tuple[float, float],
    radii: tuple[float, float],
    top: float,
) -> None:
    """A vertical elliptic column from the grid's bottom up to a rounded top at ``top`` mm."""
    where = np.arange(int(np.searchsorted(region.z, top + min(radii))))  # z is sorted
    x, y, z = region.x[where], region.y[where], region.z[where]
    cap = np.maximum(z - np.float32(top), 0) / np.float32(min(radii))
    q = np.sqrt(((x - centre[0]) / radii[0]) ** 2 + ((y - centre[1]) / radii[1]) ** 2 + cap**2)
    canvas.paint(colour, soft_step((1 - q) * np.float32(min(radii))), where)


def _layered(
    canvas: Canvas,
    region: Region,
    colours: dict[str, FloatArray],
    centre: Point,
    radii: Point,
    fat_mm: float,
) -> None:
    """Skin over fat over muscle, as an ellipsoid."""
    for name, inset in (("skin", 0.0), ("fat", 2.0), ("muscle", 2.0 + fat_mm)):
        inner = (radii[0] - inset, radii[1] - inset, radii[2] - inset)
        _ellipsoid(canvas, region, colours[name], centre, inner)


def paint_face_and_neck(
    canvas: Canvas, region: Region, colours: dict[str, FloatArray], rng: np.random.Generator
) -> dict[str, str]:
    """Neck, face soft tissue, orbits with eyes, nasal cavity, maxillary sinuses, palate, C1–C2."""
    fat = float(rng.uniform(2.0, 7.0))
    for name, inset in (("skin", 0.0), ("fat", 2.0), ("muscle", 2.0 + fat)):
        _column(canvas, region, colours[name], NECK_CENTRE, _less(NECK_RADII, inset), NECK_TOP_Z)
    _layered(canvas, region, colours, (0.0, 40.0, -58.0), (58.0, 42.0, 50.0), fat)
    # where face and neck meet, muscle runs through: no skin or fat between them
    _column(
        canvas, region, colours["muscle"], NECK_CENTRE, _less(NECK_RADII, 2.0 + fat), NECK_TOP_Z
    )

    airway = rng.uniform(0.7, 1.2)
    _column(canvas, region, colours["sinus_air"], (0.0, 10.0), (12.0 * airway, 6.0 * airway), -62.0)
    _column(canvas, region, colours["cortical"], (0.0, -20.0), (10.0, 9.0), -72.0)
    _column(canvas, region, colours["diploe"], (0.0, -20.0), (8.5, 7.5), -73.5)

    _ellipsoid(canvas, region, colours["cortical"], (0.0, 48.0, -80.0), (24.0, 28.0, 4.0))
    _ellipsoid(canvas, region, colours["sinus_air"], (0.0, 58.0, -56.0), (9.0, 26.0, 17.0))
    maxillary = rng.uniform(0.75, 1.15)
    eye_y, eye_z = 62.0 + rng.uniform(-3, 3), -42.0 + rng.uniform(-3, 3)
    eye_r = rng.uniform(11.0, 12.5)
    sinus = (14.0 * maxillary, 17.0 * maxillary, 14.0 * maxillary)
    for side in (-1.0, 1.0):
        antrum = (side * 30.0, 52.0, -64.0)
        _ellipsoid(canvas, region, colours["cortical"], antrum, _wider(sinus, 2.0))
        _ellipsoid(canvas, region, colours["sinus_air"], antrum, sinus)
        # the orbit: a bony cone of fat open in front, the globe in its mouth
        orbit = (side * 31.0, eye_y - 16.0, eye_z)
        _ellipsoid(canvas, region, colours["cortical"], orbit, (19.0, 22.0, 18.0))
        _ellipsoid(canvas, region, colours["fat"], orbit, (17.0, 20.0, 16.0))
        _ellipsoid(canvas, region, colours["vitreous"], (side * 32.0, eye_y, eye_z), (eye_r,) * 3)
    return {
        "face": (
            f"eyes radius {eye_r:.1f} mm, maxillary sinus scale {maxillary:.2f}, "
            f"airway scale {airway:.2f}"
        ),
    }


def paint_skull_base(
    canvas: Canvas, region: Region, colours: dict[str, FloatArray], rng: np.random.Generator
) -> dict[str, str]:
    """The sphenoid body with its sinus, under the sella between the temporal lobes."""
    _ellipsoid(canvas, region, colours["cortical"], (0.0, 8.0, -40.0), (17.0, 19.0, 13.0))
    _ellipsoid(canvas, region, colours["diploe"], (0.0, 8.0, -40.0), (15.0, 17.0, 11.0))
    size = rng.uniform(0.5, 1.1)
    _ellipsoid(
        canvas,
        region,
        colours["sinus_air"],
        (0.0, 12.0, -40.0),
        (11.0 * size, 12.0 * size, 9.0 * size),
    )
    return {"sphenoid_sinus": f"scale {size:.2f}"}
