"""The MR protocols of a case and their closed-form signal equations.

Each equation gives the signed transverse signal of one tissue (proton density × the
longitudinal magnetisation at the k-space centre × echo decay); partial volume mixes these
signed values and the magnitude is taken only after noise, as a scanner does, so inversion
recovery images keep their dark boundary lines.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from inference.training.testbench.properties import Tissue

CSF_T1_NOMINAL_MS = 4300.0
"""The CSF T1 a FLAIR protocol is tuned to; a case's own CSF T1 differs a little."""


def _t2star(tissue: Tissue) -> float:
    """Gradient-echo decay time: T2 shortened by field inhomogeneity."""
    return 0.6 * tissue.t2_ms


class Sequence(Protocol):
    """A protocol that turns a tissue into a signed signal and can say what it was."""

    name: str

    def signal(self, tissue: Tissue) -> float: ...

    def describe(self) -> str: ...


@dataclass(frozen=True)
class Mprage:
    """3D inversion-prepared spoiled gradient echo (MPRAGE), linear phase-encode order."""

    ti_ms: float
    tr_ms: float
    """Inversion to inversion."""
    echo_spacing_ms: float
    flip_degrees: float
    train_length: int
    te_ms: float
    inversion_efficiency: float = 0.96
    name: str = "MPRAGE"

    def signal(self, tissue: Tissue) -> float:
        """Steady state over inversion cycles, read when the central line is acquired."""
        t1 = tissue.t1_ms
        alpha = math.radians(self.flip_degrees)
        q = math.cos(alpha) * math.exp(-self.echo_spacing_ms / t1)
        m_ss = (1 - math.exp(-self.echo_spacing_ms / t1)) / (1 - q)
        n_centre = self.train_length // 2
        t_first = self.ti_ms - n_centre * self.echo_spacing_ms
        t_after = self.tr_ms - t_first - self.train_length * self.echo_spacing_ms
        e_a, e_d = math.exp(-t_first / t1), math.exp(-t_after / t1)
        q_n = q**self.train_length
        m_before_inversion = ((1 - e_d) + e_d * m_ss * (1 - q_n) + e_d * q_n * (1 - e_a)) / (
            1 + self.inversion_efficiency * e_d * q_n * e_a
        )
        m_first = (1 - e_a) - self.inversion_efficiency * e_a * m_before_inversion
        m_centre = m_ss + (m_first - m_ss) * q**n_centre
        decay = math.exp(-self.te_ms / _t2star(tissue))
        return tissue.pd * m_centre * math.sin(alpha) * decay

    def describe(self) -> str:
        return (
            f"MPRAGE TI {self.ti_ms:.0f} ms, TR {self.tr_ms:.0f} ms, flip "
            f"{self.flip_degrees:.1f}°, echo spacing {self.echo_spacing_ms:.1f} ms, "
            f"{self.train_length} echoes, TE {self.te_ms:.1f} ms"
        )


@dataclass(frozen=True)
class Flash:
    """3D spoiled gradient echo (FLASH / SPGR) in steady state."""

    tr_ms: float
    flip_degrees: float
    te_ms: float
    name: str = "FLASH"

    def signal(self, tissue: Tissue) -> float:
        alpha = math.radians(self.flip_degrees)
        e1 = math.exp(-self.tr_ms / tissue.t1_ms)
        mz = (1 - e1) / (1 - math.cos(alpha) * e1)
        return tissue.pd * mz * math.sin(alpha) * math.exp(-self.te_ms / _t2star(tissue))

    def describe(self) -> str:
        return (
            f"FLASH TR {self.tr_ms:.1f} ms, flip {self.flip_degrees:.1f}°, TE {self.te_ms:.1f} ms"
        )


@dataclass(frozen=True)
class TurboSpinEcho:
    """T2-weighted turbo spin echo; magnetisation recovers from zero after each train."""

    tr_ms: float
    te_ms: float
    echo_train_length: int
    echo_spacing_ms: float
    name: str = "TSE"

    def signal(self, tissue: Tissue) -> float:
        recovery = self.tr_ms - self.echo_train_length * self.echo_spacing_ms
        mz = 1 - math.exp(-recovery / tissue.t1_ms)
        return tissue.pd * mz * math.exp(-self.te_ms / tissue.t2_ms)

    def describe(self) -> str:
        return (
            f"TSE TR {self.tr_ms:.0f} ms, TE {self.te_ms:.0f} ms, ETL {self.echo_train_length}, "
            f"echo spacing {self.echo_spacing_ms:.1f} ms"
        )


@dataclass(frozen=True)
class Flair:
    """Inversion-recovery turbo spin echo with TI chosen to null CSF at this TR."""

    tr_ms: float
    ti_ms: float
    te_ms: float
    echo_train_length: int
    echo_spacing_ms: float
    name: str = "FLAIR"

    def signal(self, tissue: Tissue) -> float:
        t1 = tissue.t1_ms
        recovery = self.tr_ms - self.ti_ms - self.echo_train_length * self.echo_spacing_ms
        mz = 1 - 2 * math.exp(-self.ti_ms / t1) + math.exp(-(self.ti_ms + recovery) / t1)
        return tissue.pd * mz * math.exp(-self.te_ms / tissue.t2_ms)

    def describe(self) -> str:
        return (
            f"FLAIR TR {self.tr_ms:.0f} ms, TI {self.ti_ms:.0f} ms, TE {self.te_ms:.0f} ms, "
            f"ETL {self.echo_train_length}"
        )


def csf_null_ti(tr_ms: float, train_ms: float, csf_t1_ms: float = CSF_T1_NOMINAL_MS) -> float:
    """The inversion time that nulls CSF of ``csf_t1_ms`` when recovery ends at TR."""
    ti = csf_t1_ms * math.log(2.0)
    for _ in range(30):
        recovery = tr_ms - ti - train_ms
        ti = csf_t1_ms * math.log(2.0 - math.exp(-recovery / csf_t1_ms))
    return ti


@dataclass(frozen=True)
class Protocols:
    """The three MR series of one case."""

    t1w: Mprage | Flash
    t2w: TurboSpinEcho
    flair: Flair


def _draw_mprage(rng: np.random.Generator) -> Mprage:
    ti = float(rng.uniform(850.0, 1100.0))
    spacing = float(rng.uniform(6.5, 9.0))
    longest = int(2 * (ti - 120.0) / spacing)
    train = int(rng.choice([n for n in (144, 160, 176, 192, 208, 224, 256) if n <= longest]))
    tr = ti + train * spacing / 2 + float(rng.uniform(400.0, 1000.0))
    return Mprage(
        ti_ms=ti,
        tr_ms=tr,
        echo_spacing_ms=spacing,
        flip_degrees=float(rng.uniform(7.0, 10.0)),
        train_length=train,
        te_ms=float(rng.uniform(2.2, 3.8)),
    )


def _draw_flash(rng: np.random.Generator) -> Flash:
    tr = float(rng.uniform(8.0, 25.0))
    ernst_wm = math.degrees(math.acos(math.exp(-tr / 950.0)))
    flip = float(rng.uniform(max(12.0, 2.0 * ernst_wm), 30.0))
    return Flash(tr_ms=tr, flip_degrees=flip, te_ms=float(rng.uniform(2.5, 5.0)))


def draw_protocols(rng: np.random.Generator) -> Protocols:
    """A T1w (MPRAGE or FLASH), a T2w TSE and a FLAIR with clinical-range timings."""
    t1w: Mprage | Flash = _draw_mprage(rng) if rng.random() < 0.6 else _draw_flash(rng)
    t2w = TurboSpinEcho(
        tr_ms=float(rng.uniform(3500.0, 6500.0)),
        te_ms=float(rng.uniform(80.0, 115.0)),
        echo_train_length=int(rng.integers(12, 25)),
        echo_spacing_ms=float(rng.uniform(8.0, 11.0)),
    )
    tr = float(rng.uniform(8000.0, 11000.0))
    etl = int(rng.integers(14, 25))
    spacing = float(rng.uniform(8.5, 11.0))
    flair = Flair(
        tr_ms=tr,
        ti_ms=csf_null_ti(tr, etl * spacing),
        te_ms=float(rng.uniform(85.0, 130.0)),
        echo_train_length=etl,
        echo_spacing_ms=spacing,
    )
    return Protocols(t1w=t1w, t2w=t2w, flair=flair)
