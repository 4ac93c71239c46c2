"""Partial-volume painting: every voxel holds the mixture of what was painted over it.

Each tissue is painted with a soft mask m in [0, 1] that covers a fraction m of the voxel
and keeps (1 - m) of what lay there before, so tissue fractions always sum to one. Instead
of one fraction per tissue the canvas keeps what the images and truth masks need, which all
mix linearly: the signed MR signals, the CT number, and the head, bone and brain fractions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from inference.geometry import FloatArray
from inference.training.testbench.properties import Marrow, Tissue
from inference.training.testbench.sequences import Protocols

CHANNELS = ("T1", "T2", "FLAIR", "CT", "head", "bone", "brain")


def tissue_values(tissue: Tissue, protocols: Protocols) -> FloatArray:
    """What one tissue contributes to each channel."""
    return np.array(
        [
            protocols.t1w.signal(tissue),
            protocols.t2w.signal(tissue),
            protocols.flair.signal(tissue),
            tissue.hu,
            float(tissue.head),
            float(tissue.bone),
            float(tissue.brain),
        ],
        dtype=np.float32,
    )


def palette(
    tissues: dict[str, Tissue], marrow: Marrow, protocols: Protocols
) -> dict[str, FloatArray]:
    """Channel values of every tissue, plus the diploë: its mix of bone, fat and red marrow."""
    colours = {name: tissue_values(t, protocols) for name, t in tissues.items()}
    soft = (1 - marrow.bone_fraction) * (
        marrow.fat_fraction * colours["fat"] + (1 - marrow.fat_fraction) * colours["red_marrow"]
    )
    diploe = soft + marrow.bone_fraction * colours["cortical"]
    diploe[CHANNELS.index("bone")] = 1.0  # trabecular bone and its marrow both count as bone
    colours["diploe"] = diploe.astype(np.float32)
    colours["sinus_air"] = colours["air"].copy()
    colours["sinus_air"][CHANNELS.index("head")] = 1.0  # air inside the head is head
    return colours


@dataclass
class Canvas:
    """The painted voxels of a region, flattened; ``index`` places them in the full grid."""

    index: npt.NDArray[np.intp]
    values: FloatArray
    """(voxel, channel): a voxel's channels lie together, so painting gathers each once."""

    @classmethod
    def filled(cls, index: npt.NDArray[np.intp], background: FloatArray) -> Canvas:
        values = np.repeat(background[None, :], index.size, axis=0).astype(np.float32)
        return cls(index=index, values=values)

    def paint(
        self, colour: FloatArray, mask: FloatArray, where: npt.NDArray[np.intp] | None = None
    ) -> None:
        """Cover the fraction ``mask`` of each voxel (all, or those at ``where``) by ``colour``.

        Fully covered voxels are simply set; only partly covered ones need the mix.
        """
        at = np.arange(self.index.size) if where is None else where
        self.values[at[mask >= 1]] = colour
        partial = (mask > 0) & (mask < 1)
        at, cover = at[partial], mask[partial]
        part = self.values[at]
        part += cover[:, None] * (colour[None, :] - part)
        self.values[at] = part

    def to_grid(self, shape: tuple[int, int, int], background: FloatArray) -> FloatArray:
        """(channel, *shape) over the whole grid, ``background`` outside the painted region."""
        out = np.empty((len(CHANNELS), *shape), dtype=np.float32)
        for c in range(len(CHANNELS)):
            flat = out[c].reshape(-1)
            flat.fill(background[c])
            flat[self.index] = self.values[:, c]
        return out
