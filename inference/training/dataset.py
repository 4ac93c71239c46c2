"""Training examples: network inputs and targets per subject, prepared exactly as the
node prepares its inputs in service (``inference.predict.prepare_inputs``), and random
crops of slice stacks from them for training.

Subjects come on their own grids (randomised spacing, thickness, field of view), so each
is kept whole on the card's in-plane spacing and stacks are cut from it when a batch is
drawn.
"""

from __future__ import annotations

from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from inference.card import Spatial25D
from inference.geometry import FloatArray
from inference.predict import prepare_inputs
from inference.resample import zoom_in_plane
from inference.training.recipes import Recipe
from inference.training.simulate import Subject

BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class SubjectExamples:
    """One subject on the card's grid: normalised inputs (C, D, H, W), target (D, H, W)
    in the network's output units, the head mask (D, H, W) and each voxel's weight in
    the loss (D, H, W; see ``Schedule.lesion_weight``)."""

    inputs: npt.NDArray[np.float16]
    target: FloatArray
    head: BoolArray
    weight: npt.NDArray[np.float16]

    @property
    def slices(self) -> int:
        return int(self.target.shape[0])


@dataclass(frozen=True)
class SliceSet:
    """The examples of some subjects, and how many neighbours each side a stack holds."""

    subjects: list[SubjectExamples]
    half: int

    def __len__(self) -> int:
        return sum(s.slices for s in self.subjects)

    def stack(self, subject: int, k: int) -> FloatArray:
        """Slice ``k`` of a subject with its neighbours (clamped at the ends) as channels:
        what the network takes, (C × (2·half+1), H, W)."""
        x = self.subjects[subject].inputs
        index = np.clip(np.arange(k - self.half, k + self.half + 1), 0, x.shape[1] - 1)
        return x[:, index].reshape(-1, *x.shape[2:]).astype(np.float32)


def subject_examples(recipe: Recipe, subject: Subject) -> SubjectExamples:
    """One subject's examples, on the card's grid and in the card's normalisation."""
    card = recipe.card
    x, _ = prepare_inputs(card, [subject.images[role] for role in card.input_roles])
    work = (int(x.shape[2]), int(x.shape[3]))
    target = zoom_in_plane(recipe.target(subject), work)
    head = zoom_in_plane(subject.head.astype(np.float32), work, order=0) > 0.5
    lesion = zoom_in_plane(subject.fractions["lesion"], work)
    weight = 1.0 + (recipe.schedule.lesion_weight - 1.0) * np.clip(lesion, 0.0, 1.0)
    return SubjectExamples(x.astype(np.float16), target, head, weight.astype(np.float16))


def _seed_examples(recipe: Recipe, seed: int) -> SubjectExamples:
    return subject_examples(recipe, recipe.simulate(seed))


def build_slices(recipe: Recipe, seeds: Iterable[int], workers: int = 1) -> SliceSet:
    """Examples from the subjects of ``seeds``, ``workers`` subjects at a time (each
    subject depends on its seed only)."""
    seeds = list(seeds)
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            subjects = list(pool.map(_seed_examples, [recipe] * len(seeds), seeds))
    else:
        subjects = [_seed_examples(recipe, seed) for seed in seeds]
    spatial = recipe.card.spatial
    half = spatial.slices // 2 if isinstance(spatial, Spatial25D) else 0
    return SliceSet(subjects, half)


class CropSampler:
    """Random square crops of slice stacks centred near the head (``lesion_crops`` of
    them on a white-matter lesion, where the loss weighs voxels more), flipped
    left-right half the time.

    Slices with little head are skipped: air maps to air and teaches nothing.
    """

    def __init__(
        self, data: SliceSet, crop: int, rng: np.random.Generator, lesion_crops: float = 0.0
    ) -> None:
        small = [s.head.shape[1:] for s in data.subjects if min(s.head.shape[1:]) < crop]
        if small:
            raise ValueError(f"crop {crop} is larger than the slices ({small[0]})")
        self.data, self.crop, self.rng = data, crop, rng
        self.slices = [
            (n, int(k))
            for n, s in enumerate(data.subjects)
            for k in np.flatnonzero(s.head.reshape(s.slices, -1).mean(axis=1) > 0.02)
        ]
        if not self.slices:
            raise ValueError("no slice contains any head")
        self.lesion_crops = lesion_crops
        self.lesions: list[tuple[int, int, int, int]] = []
        """(subject, slice, row, column) of voxels the loss weighs at least half as much
        as the subject's most weighted one: its lesions."""
        for n, s in enumerate(data.subjects if lesion_crops > 0 else []):
            most = float(s.weight.max())
            if most > 1:
                found = np.argwhere(s.weight >= 1 + (most - 1) / 2)
                self.lesions += [(n, int(k), int(r), int(c)) for k, r, c in found]

    def batch(self, size: int) -> tuple[FloatArray, FloatArray, FloatArray]:
        """Inputs (N, C, crop, crop), targets and loss weights (N, 1, crop, crop)."""
        c = self.crop
        xs, ys, ws = [], [], []
        for pick in self.rng.integers(len(self.slices), size=size):
            if self.lesions and self.rng.uniform() < self.lesion_crops:
                n, k, row, col = self.lesions[self.rng.integers(len(self.lesions))]
            else:
                n, k = self.slices[pick]
                rows, cols = np.nonzero(self.data.subjects[n].head[k])
                centre = self.rng.integers(rows.size)
                row, col = rows[centre], cols[centre]
            subject = self.data.subjects[n]
            h, w = subject.head.shape[1:]
            top = int(np.clip(row - c // 2, 0, h - c))
            left = int(np.clip(col - c // 2, 0, w - c))
            x = self.data.stack(n, k)[:, top : top + c, left : left + c]
            y = subject.target[None, k, top : top + c, left : left + c]
            w = subject.weight[None, k, top : top + c, left : left + c].astype(np.float32)
            if self.rng.uniform() < 0.5:
                x, y, w = x[..., ::-1], y[..., ::-1], w[..., ::-1]
            xs.append(x)
            ys.append(y)
            ws.append(w)
        x, y, w = (np.ascontiguousarray(np.stack(a)) for a in (xs, ys, ws))
        return x, y, w
