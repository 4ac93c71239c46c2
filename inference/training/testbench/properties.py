"""Tissue relaxation times, proton densities and CT numbers of the test heads.

Nominal values are literature-typical at 3 T, the field strength this simulator models:
brain and muscle after Stanisz et al. 2005 (MRM 54:507) and Wansapura et al. 1999
(JMRI 9:531), the rest after the review of Bojorquez et al. 2017 (MRI 35:69); cortical
bone has a T2* well under a millisecond, so it gives no signal on clinical sequences.
CT numbers are textbook adult head values. Each case scales every value by its own draw,
so models are judged on heads whose contrast is not the one they were trained on.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Tissue:
    """One tissue's MR and CT properties and which truth masks it belongs to."""

    t1_ms: float
    t2_ms: float
    pd: float
    """Proton density relative to CSF."""
    hu: float
    head: bool = True
    bone: bool = False
    brain: bool = False


@dataclass(frozen=True)
class Marrow:
    """What fills the diploë: volume fractions of trabecular bone, fat and red marrow."""

    kind: str
    bone_fraction: float
    fat_fraction: float
    """Of the non-bone volume."""


# name: (T1 ms, T2 ms, PD, (HU low, HU high)); 3 T
NOMINAL: dict[str, tuple[float, float, float, tuple[float, float]]] = {
    "wm": (950.0, 72.0, 0.69, (24.0, 32.0)),
    "gm": (1600.0, 95.0, 0.80, (35.0, 44.0)),
    "deep_gm": (1250.0, 66.0, 0.78, (36.0, 45.0)),
    "csf": (4300.0, 1800.0, 1.00, (5.0, 15.0)),
    "lesion": (1450.0, 180.0, 0.84, (18.0, 26.0)),
    "fat": (380.0, 130.0, 0.95, (-115.0, -85.0)),
    "muscle": (1420.0, 48.0, 0.72, (45.0, 60.0)),
    "skin": (1100.0, 40.0, 0.62, (40.0, 60.0)),
    "red_marrow": (1000.0, 50.0, 0.80, (30.0, 60.0)),
    "cortical": (250.0, 0.5, 0.15, (1200.0, 2000.0)),
    "vitreous": (4000.0, 1100.0, 0.98, (5.0, 15.0)),
    "air": (1000.0, 1.0, 0.0, (-1000.0, -1000.0)),
}
BRAIN = ("wm", "gm", "deep_gm", "csf", "lesion")
FLUIDS = ("csf", "vitreous")
"""Nearly pure water: their relaxation varies little between people."""
BONE = ("cortical",)


def draw_tissues(rng: np.random.Generator) -> dict[str, Tissue]:
    """This case's tissues: nominal values with a shared and a per-tissue random scaling
    (fluids only the latter, and less)."""
    t1_case = float(np.exp(rng.normal(0.0, 0.05)))
    t2_case = float(np.exp(rng.normal(0.0, 0.05)))
    out: dict[str, Tissue] = {}
    for name, (t1, t2, pd, (hu_lo, hu_hi)) in NOMINAL.items():
        fluid = name in FLUIDS
        out[name] = Tissue(
            t1_ms=t1
            * (1.0 if fluid else t1_case)
            * float(np.exp(rng.normal(0.0, 0.02 if fluid else 0.04))),
            t2_ms=t2 * (1.0 if fluid else t2_case) * float(np.exp(rng.normal(0.0, 0.04))),
            pd=pd * float(np.exp(rng.normal(0.0, 0.03))),
            hu=float(rng.uniform(hu_lo, hu_hi)),
            head=name != "air",
            bone=name in BONE,
            brain=name in BRAIN,
        )
    return out


def draw_marrow(rng: np.random.Generator) -> Marrow:
    """Fatty (bright on T1w), red, or sclerotic (dense, dark) diploë."""
    kind = str(rng.choice(["fatty", "red", "sclerotic"], p=[0.45, 0.35, 0.20]))
    if kind == "fatty":
        return Marrow(kind, float(rng.uniform(0.26, 0.36)), float(rng.uniform(0.6, 0.85)))
    if kind == "red":
        return Marrow(kind, float(rng.uniform(0.25, 0.4)), float(rng.uniform(0.2, 0.45)))
    return Marrow(kind, float(rng.uniform(0.38, 0.45)), float(rng.uniform(0.1, 0.3)))
