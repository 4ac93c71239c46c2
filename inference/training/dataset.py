"""Training examples: network inputs and targets per slice, prepared exactly as the node
prepares its inputs in service (``inference.predict.prepare_inputs``), and random crops
of them for training.
"""

from __future__ import annotations

from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from inference.card import Spatial25D
from inference.geometry import FloatArray
from inference.predict import prepare_inputs, slice_stacks
from inference.training.recipes import Recipe
from inference.training.simulate import Subject, simulate_subject


@dataclass(frozen=True)
class SliceSet:
    """Every slice of some subjects: inputs (N, C, H, W), targets (N, 1, H, W) and
    head masks (N, H, W)."""

    inputs: FloatArray
    targets: FloatArray
    head: npt.NDArray[np.bool_]

    def __len__(self) -> int:
        return int(self.inputs.shape[0])


def subject_slices(recipe: Recipe, subject: Subject) -> SliceSet:
    """One subject's examples, on the card's grid and in the card's normalisation."""
    card = recipe.card
    volumes = [subject.images[role] for role in card.input_roles]
    x, native = prepare_inputs(card, volumes)
    if x.shape[2:] != native:
        raise ValueError(
            f"{card.id}: subjects must be simulated at the card's pixel spacing "
            f"{card.pixel_spacing_mm}, got grid {native} → {x.shape[2:]}"
        )
    half = card.spatial.slices // 2 if isinstance(card.spatial, Spatial25D) else 0
    inputs = np.stack(list(slice_stacks(x, half)))
    targets = recipe.target(subject)[:, None]
    return SliceSet(inputs, targets.astype(np.float32), subject.head)


def _seed_slices(recipe: Recipe, seed: int) -> SliceSet:
    return subject_slices(recipe, simulate_subject(seed, recipe.acquisition))


def build_slices(recipe: Recipe, seeds: Iterable[int], workers: int = 1) -> SliceSet:
    """Examples from the subjects of ``seeds``, simulated on the recipe's acquisition,
    ``workers`` subjects at a time (each subject depends on its seed only)."""
    seeds = list(seeds)
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            sets = list(pool.map(_seed_slices, [recipe] * len(seeds), seeds))
    else:
        sets = [_seed_slices(recipe, seed) for seed in seeds]
    return SliceSet(
        np.concatenate([s.inputs for s in sets]),
        np.concatenate([s.targets for s in sets]),
        np.concatenate([s.head for s in sets]),
    )


class CropSampler:
    """Random square crops centred near the head, flipped left-right half the time.

    Slices with no head are skipped: air maps to air and teaches nothing.
    """

    def __init__(self, data: SliceSet, crop: int, rng: np.random.Generator) -> None:
        h, w = data.inputs.shape[2:]
        if crop > min(h, w):
            raise ValueError(f"crop {crop} is larger than the slices ({h}×{w})")
        self.data, self.crop, self.rng = data, crop, rng
        self.slices = np.flatnonzero(data.head.reshape(len(data), -1).mean(axis=1) > 0.02)
        if self.slices.size == 0:
            raise ValueError("no slice contains any head")

    def batch(self, size: int) -> tuple[FloatArray, FloatArray]:
        h, w = self.data.inputs.shape[2:]
        c = self.crop
        xs, ys = [], []
        for n in self.rng.choice(self.slices, size=size):
            rows, cols = np.nonzero(self.data.head[n])
            pick = self.rng.integers(rows.size)
            top = int(np.clip(rows[pick] - c // 2, 0, h - c))
            left = int(np.clip(cols[pick] - c // 2, 0, w - c))
            x = self.data.inputs[n, :, top : top + c, left : left + c]
            y = self.data.targets[n, :, top : top + c, left : left + c]
            if self.rng.uniform() < 0.5:
                x, y = x[..., ::-1], y[..., ::-1]
            xs.append(x)
            ys.append(y)
        return np.ascontiguousarray(np.stack(xs)), np.ascontiguousarray(np.stack(ys))
