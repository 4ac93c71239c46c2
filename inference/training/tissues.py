"""Tissue properties and the signal equations that turn them into MR and CT images.

Relaxation times are typical 3 T values from the literature (rounded; every subject
draws its own within a few per cent), proton densities relative to CSF, CT numbers in
HU. MR signals use the textbook spin-echo and inversion-recovery equations, so each
contrast differs from the others the way the acquisitions do: CSF dark on T1w, bright
on T2w, nulled on FLAIR; bone and air dark on all three; fat bright on T1w.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np


@dataclass(frozen=True)
class Tissue:
    pd: float
    """Proton density relative to CSF."""
    t1_ms: float
    t2_ms: float
    hu: float


TISSUES: dict[str, Tissue] = {
    "gm": Tissue(pd=0.80, t1_ms=1400, t2_ms=95, hu=38),
    "wm": Tissue(pd=0.70, t1_ms=850, t2_ms=75, hu=28),
    "csf": Tissue(pd=1.00, t1_ms=4200, t2_ms=1800, hu=8),
    "lesion": Tissue(pd=0.80, t1_ms=1300, t2_ms=220, hu=24),
    "cortical": Tissue(pd=0.05, t1_ms=1000, t2_ms=1, hu=1650),
    "marrow": Tissue(pd=0.60, t1_ms=450, t2_ms=90, hu=650),
    "fat": Tissue(pd=0.95, t1_ms=380, t2_ms=110, hu=-95),
    "skin": Tissue(pd=0.75, t1_ms=1100, t2_ms=45, hu=45),
    "muscle": Tissue(pd=0.72, t1_ms=1400, t2_ms=35, hu=50),
    "air": Tissue(pd=0.0, t1_ms=1000, t2_ms=1, hu=-1000),
}
"""Every tissue the simulator places; fractions of these sum to 1 in every voxel."""

Weighting = Literal["spin_echo", "inversion_recovery"]


@dataclass(frozen=True)
class Sequence:
    """An MR acquisition's timing: enough to compute each tissue's signal."""

    name: str
    weighting: Weighting
    tr_ms: float
    te_ms: float
    ti_ms: float = 0.0

    def signal(self, tissue: Tissue) -> float:
        """Steady-state magnitude signal of a pure voxel of ``tissue`` (arbitrary units)."""
        e_te = math.exp(-self.te_ms / tissue.t2_ms)
        e_tr = math.exp(-self.tr_ms / tissue.t1_ms)
        if self.weighting == "spin_echo":
            return tissue.pd * (1.0 - e_tr) * e_te
        e_ti = math.exp(-self.ti_ms / tissue.t1_ms)
        return tissue.pd * abs(1.0 - 2.0 * e_ti + e_tr) * e_te


SEQUENCES: dict[str, Sequence] = {
    "T1": Sequence("T1w spin echo", "spin_echo", tr_ms=500, te_ms=12),
    "T2": Sequence("T2w turbo spin echo", "spin_echo", tr_ms=4000, te_ms=100),
    "FLAIR": Sequence("T2w FLAIR", "inversion_recovery", tr_ms=9000, te_ms=120, ti_ms=2500),
}


def jittered(rng: np.random.Generator, spread: float = 0.05) -> dict[str, Tissue]:
    """One subject's tissues: every property scaled by its own factor within ±spread;
    bone and marrow CT numbers vary more (mineral density differs between people):
    cortical bone 1200–1900 HU, marrow 250–850 HU — one marrow tissue stands for fatty
    and red diploë and for the cancellous bone of the vertebral bodies, which reads
    150–400 HU in adults."""

    def factor() -> float:
        return float(rng.uniform(1 - spread, 1 + spread))

    out = {}
    for name, t in TISSUES.items():
        hu = t.hu
        if name == "cortical":
            hu = float(rng.uniform(1200, 1900))
        elif name == "marrow":
            hu = float(rng.uniform(250, 850))
        elif name != "air":
            hu = t.hu + float(rng.normal(0, 3))
        out[name] = replace(
            t, pd=t.pd * factor(), t1_ms=t.t1_ms * factor(), t2_ms=t.t2_ms * factor(), hu=hu
        )
    return out
