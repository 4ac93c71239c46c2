"""A simulated case: one head, imaged as T1w, T2w, FLAIR and CT on one slice stack.

Everything about the head and the scanners is drawn from the seed alone, in separate random
streams, so two Scans of one seed image the same head with the same tissues, sequences and
scanner imperfections; only the acquisition (plane, obliquity, resolution, noise and bias
multipliers) differs, and a robustness sweep can vary one factor at a time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Literal

import numpy as np
import numpy.typing as npt

from inference.geometry import Volume
from inference.training.testbench import anatomy, layers, properties, scanner, sequences
from inference.training.testbench.canvas import CHANNELS, palette
from inference.training.testbench.grid import PLANES, plan_stack
from inference.training.testbench.pose import Pose, draw_pose
from inference.training.testbench.sampling import slabs

STREAMS = ("tissues", "protocols", "anatomy", "pose", "scanner", "oblique", "noise")
MR_SERIES = ("T1", "T2", "FLAIR")
NECK_BELOW_MM = 160
"""How far below the painted grid the neck can show in a sagittal or coronal field of view."""


def stream(seed: int, name: str) -> np.random.Generator:
    """The seed's independent random stream for one kind of draw."""
    return np.random.default_rng([seed, STREAMS.index(name)])


@dataclass(frozen=True)
class Scan:
    """The acquisition factors a robustness sweep varies, one at a time."""

    plane: Literal["axial", "sagittal", "coronal"] = "axial"
    oblique_degrees: float = 0.0
    """Tilt of the slice plane about an in-plane axis drawn from the seed."""
    pixel_spacing_mm: float = 1.0
    """In plane, square pixels; 0.5–1.5 mm is the supported range."""
    slice_thickness_mm: float = 3.0
    """1–6 mm; slices are contiguous (spacing = thickness)."""
    fov_mm: float = 240.0
    noise: float = 1.0
    """Multiplier on the case's drawn noise level (0 = noiseless)."""
    bias: float = 1.0
    """Multiplier on the case's drawn receive-bias amplitude (0 = flat)."""

    def __post_init__(self) -> None:
        if self.plane not in PLANES:
            raise ValueError(f"plane {self.plane!r} is not one of {sorted(PLANES)}")
        if not 0.2 <= self.pixel_spacing_mm <= 4.0:
            raise ValueError(f"pixel_spacing_mm {self.pixel_spacing_mm} is outside 0.2–4 mm")
        if not 0.5 <= self.slice_thickness_mm <= 10.0:
            raise ValueError(f"slice_thickness_mm {self.slice_thickness_mm} is outside 0.5–10 mm")
        if self.fov_mm < 50.0:
            raise ValueError(f"fov_mm {self.fov_mm} is too small for a head")
        if self.noise < 0 or self.bias < 0:
            raise ValueError(f"noise {self.noise} and bias {self.bias} must be non-negative")


@dataclass(frozen=True)
class Case:
    """One simulated study: four images and the truth masks, all on one grid."""

    seed: int
    scan: Scan
    images: dict[str, Volume]
    """"T1", "T2", "FLAIR" in scanner units (>= 0); "CT" in HU within [-1024, 3071]."""
    head: npt.NDArray[np.bool_]
    """Inside the head, sinus and airway air included."""
    bone: npt.NDArray[np.bool_]
    """Cortical bone and marrow make up at least half the voxel."""
    brain: npt.NDArray[np.bool_]
    """Brain tissue and the CSF within the skull make up at least half the voxel."""
    targets: dict[str, Volume]
    """"FLAIR" and "CT" as acquired but without noise: what a synthetic image is judged
    against, since no model can predict an acquisition's noise."""
    description: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Subject:
    """What a seed fixes: the painted head, its pose, and every tissue and scanner draw."""

    head: anatomy.Head
    pose: Pose
    head_points: npt.NDArray[np.float64]
    """(n, 3) patient mm of points inside the head, for planning coverage."""
    neck_points: npt.NDArray[np.float64]
    """Points of the neck below the painted grid, which imaging carries on downward."""
    gains: dict[str, float]
    scanner: scanner.ScannerDraw
    description: dict[str, str]


@lru_cache(maxsize=1)
def subject(seed: int) -> Subject:
    """The seed's head and draws, kept for the next Scan of the same seed."""
    tissues = properties.draw_tissues(stream(seed, "tissues"))
    anatomy_rng = stream(seed, "anatomy")
    marrow = properties.draw_marrow(anatomy_rng)
    protocols = sequences.draw_protocols(stream(seed, "protocols"))
    colours = palette(tissues, marrow, protocols)
    head = anatomy.build_head(colours, layers.draw_layers(anatomy_rng, marrow), anatomy_rng)
    head.channels.setflags(write=False)
    pose = draw_pose(stream(seed, "pose"), anatomy.HEAD_CENTRE)
    inside = np.argwhere(head.channels[CHANNELS.index("head"), ::2, ::2, ::2] >= 0.5) * 2.0
    lowest = inside[inside[:, 0] == 0]
    below = np.concatenate([lowest - [depth, 0, 0] for depth in range(4, NECK_BELOW_MM, 4)])
    points, neck = (
        pose.to_patient(p @ head.affine[:3, :3].T + head.affine[:3, 3]) for p in (inside, below)
    )
    draw = scanner.draw_scanner(stream(seed, "scanner"))
    gains = {}
    for c, name in enumerate(MR_SERIES):
        brain_signal = (abs(colours["wm"][c]) + abs(colours["gm"][c])) / 2
        gains[name] = draw.brain_level[name] / float(brain_signal)
    sequence = (protocols.t1w, protocols.t2w, protocols.flair)
    described = {
        "field_strength": "3 T",
        **{f"{name}_sequence": s.describe() for name, s in zip(MR_SERIES, sequence, strict=True)},
        "tissue_t1_ms": ", ".join(f"{k} {t.t1_ms:.0f}" for k, t in tissues.items() if k != "air"),
        "tissue_t2_ms": ", ".join(f"{k} {t.t2_ms:.0f}" for k, t in tissues.items() if k != "air"),
        "tissue_hu": ", ".join(f"{k} {t.hu:.0f}" for k, t in tissues.items()),
        "marrow": (
            f"{marrow.kind}: trabecular bone {marrow.bone_fraction:.2f}, "
            f"fat {marrow.fat_fraction:.2f} of the rest, "
            f"{colours['diploe'][CHANNELS.index('CT')]:.0f} HU"
        ),
        "head_pose": pose.describe(),
        **head.description,
        **draw.describe(),
    }
    return Subject(head, pose, points, neck, gains, draw, described)


def simulate_case(seed: int, scan: Scan | None = None) -> Case:
    """The seed's head acquired with ``scan`` (default: 1 mm axial, 3 mm slices)."""
    if seed < 0:
        raise ValueError(f"seed {seed} must be non-negative")
    scan = scan or Scan()
    subj = subject(seed)
    stack = plan_stack(
        scan.plane,
        scan.oblique_degrees,
        scan.pixel_spacing_mm,
        scan.slice_thickness_mm,
        scan.fov_mm,
        subj.head_points,
        subj.neck_points,
        stream(seed, "oblique"),
    )
    geometry = stack.geometry
    images = {name: np.empty(geometry.shape, dtype=np.float32) for name in (*MR_SERIES, "CT")}
    clean = {name: np.empty(geometry.shape, dtype=np.float32) for name in ("FLAIR", "CT")}
    masks = {name: np.empty(geometry.shape, dtype=bool) for name in ("head", "bone", "brain")}
    noise = stream(seed, "noise")
    centre = subj.pose.to_patient(np.asarray([anatomy.HEAD_CENTRE]))[0]
    for slab in slabs(subj.head, subj.pose, stack):
        k0, k1 = slab.first, slab.first + slab.channels.shape[1]
        bias = scanner.bias_field(subj.scanner, scan.bias, geometry, k0, k1 - k0, centre)
        for c, name in enumerate(MR_SERIES):
            gain = subj.gains[name]
            sigma = scan.noise * subj.scanner.brain_level[name] / subj.scanner.snr[name]
            signal = slab.channels[c] * bias * gain
            images[name][k0:k1] = scanner.magnitude(signal, sigma, noise)
            if name in clean:
                clean[name][k0:k1] = scanner.magnitude(signal, 0.0, noise)
        for array, strength in ((images["CT"], scan.noise), (clean["CT"], 0.0)):
            array[k0:k1] = scanner.ct_image(
                slab.channels[CHANNELS.index("CT")],
                subj.scanner,
                strength,
                scan.pixel_spacing_mm,
                noise,
            )
        for name, mask in masks.items():
            mask[k0:k1] = slab.channels[CHANNELS.index(name)] >= 0.5
    units = {"T1": "scanner units", "T2": "scanner units", "FLAIR": "scanner units", "CT": "HU"}
    volumes = {
        name: Volume(array, geometry, {"units": units[name], "simulator": "testbench"})
        for name, array in images.items()
    }
    return Case(
        seed=seed,
        scan=scan,
        images=volumes,
        head=masks["head"],
        bone=masks["bone"],
        brain=masks["brain"],
        targets={
            name: Volume(array, geometry, {"units": units[name]}) for name, array in clean.items()
        },
        description=dict(subj.description),
    )
