"""Per-series uncertainty figures from a test-time augmentation spread.

The spread (``inference.predict.translate_with_spread``) is summarised inside the head
only, where the output means something: for a CT output the voxels above -500 HU, for
an MR output those above 5 % of the output's 99th percentile. The figures are in the
output's units (HU for CT), so that "mean 12 HU, 95th percentile 40 HU" reads directly
against the model's validation error.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from inference.card import ModelCard
from inference.geometry import FloatArray

CT_HEAD_HU = -500.0
MR_HEAD_FRACTION = 0.05


@dataclass(frozen=True)
class SpreadFigures:
    mean: float
    p95: float
    region: str
    """In words, which voxels the figures summarise."""


def head_region(output: FloatArray, card: ModelCard) -> tuple[npt.NDArray[np.bool_], str]:
    """The voxels of the output that are head, and how they were chosen."""
    if card.output.modality == "CT":
        return output > CT_HEAD_HU, f"output above {CT_HEAD_HU:g} HU"
    level = MR_HEAD_FRACTION * float(np.percentile(output, 99))
    return output > level, f"output above {MR_HEAD_FRACTION:g} of its 99th percentile"


def spread_figures(output: FloatArray, spread: FloatArray, card: ModelCard) -> SpreadFigures:
    """Mean and 95th percentile of the spread inside the head (0 when no voxel is)."""
    region, words = head_region(output, card)
    values = spread[region]
    if values.size == 0:
        return SpreadFigures(0.0, 0.0, words)
    return SpreadFigures(float(values.mean()), float(np.percentile(values, 95)), words)
