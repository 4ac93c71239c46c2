"""Any orientation in, the model's plane inside.

A model trained on axial slices must see axial slices, whatever plane a series was
acquired in (3D T1s are often sagittal). The first input's voxel axes are permuted, and
flipped, so that its slice axis is the source axis nearest the normal of the model's
plane and its rows and columns grow as that plane is conventionally displayed (LPS:
axial columns toward Left and rows toward Posterior, coronal Left and Inferior, sagittal
Posterior and Inferior). Permuting moves no voxel and interpolates nothing, and the
geometry follows exactly, so the model's output goes back onto the source grid by the
inverse permutation, bit for bit on the source slices. An oblique series stays as
oblique to the model's plane as it was to its own (at most 45°), as tilted axial
acquisitions already are, unless the card says its model was trained on less tilt
(``max_obliquity_degrees``): then the inputs are resampled onto a grid in the plane
and the output back (:mod:`inference.oblique`). In-plane spacing is made the model's
by predict's resampling.
Other inputs need nothing: they are resampled onto the first input's grid through
patient coordinates.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from inference.geometry import PLANE_AXES, Geometry, Volume
from inference.oblique import obliquity_degrees, plane_grid
from inference.predict import Augmentation, Prediction, Progress, translate_with_spread
from inference.registry import LoadedModel
from inference.resample import onto_grid


@dataclass(frozen=True)
class Reorientation:
    """Which source axis becomes each target axis (slice, row, column), and which are
    flipped, from a source grid into a plane."""

    source: Geometry
    axes: tuple[int, int, int]
    flips: tuple[bool, bool, bool]

    @classmethod
    def into(cls, source: Geometry, plane: str) -> Reorientation:
        """The permutation putting ``source``'s slices in ``plane`` ("any": none)."""
        if plane == "any":
            return cls(source, (0, 1, 2), (False, False, False))
        directions = np.asarray(
            [source.slice_direction, source.column_direction, source.row_direction]
        )
        axes: list[int] = []
        flips: list[bool] = []
        for wanted in PLANE_AXES[plane]:
            dots = directions @ np.asarray(wanted)
            free = [a for a in range(3) if a not in axes]
            best = max(free, key=lambda a: abs(dots[a]))
            axes.append(best)
            flips.append(bool(dots[best] < 0))
        return cls(source, (axes[0], axes[1], axes[2]), (flips[0], flips[1], flips[2]))

    @property
    def identity(self) -> bool:
        return self.axes == (0, 1, 2) and not any(self.flips)

    def geometry(self) -> Geometry:
        """The reoriented grid: the same voxels at the same patient positions."""
        src = self.source
        directions = (src.slice_direction, src.column_direction, src.row_direction)
        corner = np.asarray([0.0, 0.0, 0.0, 1.0])
        moved = []
        for axis, flip in zip(self.axes, self.flips, strict=True):
            if flip:
                corner[axis] = src.shape[axis] - 1
            moved.append(_vec(-np.asarray(directions[axis]) if flip else directions[axis]))
        k, j, i = self.axes
        return Geometry(
            origin=_vec((src.affine @ corner)[:3]),
            row_direction=moved[2],
            column_direction=moved[1],
            slice_direction=moved[0],
            spacing=(src.spacing[k], src.spacing[j], src.spacing[i]),
            shape=(src.shape[k], src.shape[j], src.shape[i]),
        )

    def _flipped(self) -> tuple[int, ...]:
        return tuple(k for k, flip in enumerate(self.flips) if flip)

    def apply(self, volume: Volume) -> Volume:
        array = np.flip(np.transpose(volume.array, self.axes), self._flipped())
        return Volume(np.ascontiguousarray(array), self.geometry(), volume.meta)

    def undo(self, volume: Volume) -> Volume:
        """``volume`` (on the reoriented grid) back on the source grid."""
        array = np.transpose(np.flip(volume.array, self._flipped()), np.argsort(self.axes))
        return Volume(np.ascontiguousarray(array), self.source, volume.meta)


def _vec(v: Sequence[float] | np.ndarray) -> tuple[float, float, float]:
    return (float(v[0]), float(v[1]), float(v[2]))


def predict_in_plane(
    model: LoadedModel,
    inputs: Sequence[Volume],
    batch_size: int = 8,
    augmentation: Augmentation | None = None,
    progress: Progress | None = None,
) -> Prediction:
    """:func:`inference.predict.translate_with_spread` with the first input in the model
    card's plane; the output and its spread on the first input's own grid.

    The first input is permuted into the plane; if its slices are then still tilted
    beyond the card's ``max_obliquity_degrees``, every input is resampled onto a grid in
    the plane (:func:`inference.oblique.plane_grid`) and the output resampled back.
    ``augmentation`` defaults to none: one pass, no spread. ``progress(done, total)``
    follows the network's inputs over every pass (:mod:`inference.predict`).
    """
    card = model.card
    passes = augmentation or Augmentation(mirror=False)
    source = inputs[0].geometry
    turn = Reorientation.into(source, card.plane)
    turned = turn.geometry()
    limit = card.max_obliquity_degrees
    if limit is not None and obliquity_degrees(turned, card.plane) > limit:
        grid = plane_grid(turned, card.plane, card.pixel_spacing_mm)
        done = translate_with_spread(model, inputs, batch_size, passes, grid, progress)
        spread = onto_grid(Volume(done.spread, grid), source).array
        return Prediction(onto_grid(done.output, source), spread, done.passes)
    if turn.identity:
        return translate_with_spread(model, inputs, batch_size, passes, progress=progress)
    done = translate_with_spread(
        model, [turn.apply(inputs[0]), *inputs[1:]], batch_size, passes, progress=progress
    )
    spread = turn.undo(Volume(done.spread, done.output.geometry)).array
    return Prediction(turn.undo(done.output), spread, done.passes)


def translate_in_plane(model: LoadedModel, inputs: Sequence[Volume], batch_size: int = 8) -> Volume:
    """:func:`predict_in_plane` without augmentation: the output alone."""
    return predict_in_plane(model, inputs, batch_size).output
