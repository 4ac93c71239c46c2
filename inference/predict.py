"""Inference: volumes in, volume out, on the first input's grid (or a grid given).

Inputs are normalised per the card on their own grids, resampled onto that grid, cut
into what the network takes (batched 2D slices, 2.5D slice stacks, or overlapping 3D patches
blended back together), and the output is denormalised into its physical units.

:func:`translate_with_spread` runs the network more than once (test-time augmentation:
the input as is, mirrored left-right, optionally with a mild intensity gain) and returns
the mean output with the per-voxel spread across the passes: where a model is sure,
mirroring a head does not change what it says; where it guesses, it does.

A caller may follow a run through ``progress(done, total)``: called once before the
first batch (0 of total) and after each batch, where the total counts the network's
inputs (slices, or 3D patches) over every pass.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from inference.card import ModelCard, Spatial3D, Spatial25D
from inference.geometry import FloatArray, Geometry, Volume
from inference.normalize import denormalize, normalize
from inference.registry import LoadedModel
from inference.resample import in_plane_shape, onto_grid, zoom_in_plane

Progress = Callable[[int, int], None]
"""``progress(done, total)``: network inputs run so far, of all the run will take."""


class InferenceError(RuntimeError):
    """The model could not be run on these inputs; the message says why."""


class _Tally:
    """Counts the network inputs run across every pass for a ``progress`` callback."""

    def __init__(self, progress: Progress | None, total: int) -> None:
        self.progress = progress
        self.total = total
        self.done = 0
        if progress is not None:
            progress(0, total)

    def add(self, n: int) -> None:
        self.done += n
        if self.progress is not None:
            self.progress(self.done, self.total)


def prepare_inputs(
    card: ModelCard, inputs: Sequence[Volume], grid: Geometry | None = None
) -> tuple[FloatArray, tuple[int, int]]:
    """(channels, slices, rows, cols) normalised input at the model's spacing, and the
    in-plane shape to return to. Training prepares its examples with this same function,
    so a model sees in service exactly what it was trained on.

    Each input is normalised on its own grid, then resampled onto ``grid`` (default: the
    first input's), so that the margins a resampling adds never weigh in its statistics.
    """
    if len(inputs) != len(card.inputs):
        raise InferenceError(f"{card.key} takes {len(card.inputs)} inputs, got {len(inputs)}")
    reference = grid or inputs[0].geometry
    native = reference.shape[1:]
    work = in_plane_shape(reference, card.pixel_spacing_mm) if card.pixel_spacing_mm else native
    channels = []
    for spec, volume in zip(card.inputs, inputs, strict=True):
        normalized = Volume(normalize(volume.array, spec.normalization), volume.geometry)
        aligned = onto_grid(normalized, reference).array
        channels.append(zoom_in_plane(aligned, work))
    return np.stack(channels), native


def _pad_to(x: FloatArray, multiple: int) -> tuple[FloatArray, tuple[int, int]]:
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        pad = [(0, 0)] * (x.ndim - 2) + [(0, ph), (0, pw)]
        x = np.pad(x, pad, mode="edge")
    return x, (h, w)


def slice_stacks(x: FloatArray, half: int) -> Iterator[FloatArray]:
    """Per slice: (channels × (2·half+1), H, W), neighbours clamped at the ends."""
    depth = x.shape[1]
    for k in range(depth):
        idx = np.clip(np.arange(k - half, k + half + 1), 0, depth - 1)
        yield x[:, idx].reshape(-1, *x.shape[2:])


def _run_batches(
    model: LoadedModel, items: Iterator[FloatArray], batch: int, tally: _Tally | None
) -> FloatArray:
    outputs, pending = [], []
    for item in items:
        pending.append(item)
        if len(pending) == batch:
            outputs.append(_run(model, np.stack(pending)))
            if tally is not None:
                tally.add(len(pending))
            pending = []
    if pending:
        outputs.append(_run(model, np.stack(pending)))
        if tally is not None:
            tally.add(len(pending))
    return np.concatenate(outputs)[:, 0]


def _run(model: LoadedModel, tensor: FloatArray) -> FloatArray:
    (out,) = model.session.run(None, {model.input_name: np.ascontiguousarray(tensor)})
    return np.asarray(out, dtype=np.float32)


def _predict_slices(
    model: LoadedModel, x: FloatArray, batch: int, tally: _Tally | None
) -> FloatArray:
    half = model.card.spatial.slices // 2 if isinstance(model.card.spatial, Spatial25D) else 0
    padded, (h, w) = _pad_to(x, model.card.tile_multiple)
    out = _run_batches(model, slice_stacks(padded, half), batch, tally)
    return out[:, :h, :w]


def _starts(size: int, patch: int, step: int) -> list[int]:
    if size <= patch:
        return [0]
    starts = list(range(0, size - patch, step))
    return [*starts, size - patch]


def _blend_weights(patch: tuple[int, int, int]) -> FloatArray:
    """Separable triangular weights: patch centres count more than their borders."""
    axes = [1.0 - np.abs(np.linspace(-1, 1, n)) * 0.9 for n in patch]
    return (axes[0][:, None, None] * axes[1][None, :, None] * axes[2][None, None, :]).astype(
        np.float32
    )


def _padded_for_patches(x: FloatArray, spatial: Spatial3D) -> FloatArray:
    pad = [(0, 0)] + [(0, max(0, p - s)) for p, s in zip(spatial.patch, x.shape[1:], strict=True)]
    return np.pad(x, pad, mode="edge")


def _corners(shape: tuple[int, ...], spatial: Spatial3D) -> list[tuple[int, int, int]]:
    """The patches' corners on a padded (channels, slices, rows, cols) input."""
    patch = spatial.patch
    steps = [max(1, int(p * (1 - spatial.overlap))) for p in patch]
    return [
        (a, b, c)
        for a in _starts(shape[1], patch[0], steps[0])
        for b in _starts(shape[2], patch[1], steps[1])
        for c in _starts(shape[3], patch[2], steps[2])
    ]


def _predict_patches(
    model: LoadedModel, x: FloatArray, spatial: Spatial3D, batch: int, tally: _Tally | None
) -> FloatArray:
    patch = spatial.patch
    shape = x.shape[1:]
    xp = _padded_for_patches(x, spatial)
    corners = _corners(xp.shape, spatial)
    weights = _blend_weights(patch)
    acc = np.zeros(xp.shape[1:], dtype=np.float32)
    norm = np.zeros(xp.shape[1:], dtype=np.float32)
    for i in range(0, len(corners), batch):
        chunk = corners[i : i + batch]
        tensor = np.stack(
            [xp[:, a : a + patch[0], b : b + patch[1], c : c + patch[2]] for a, b, c in chunk]
        )
        for (a, b, c), out in zip(chunk, _run(model, tensor)[:, 0], strict=True):
            region = (slice(a, a + patch[0]), slice(b, b + patch[1]), slice(c, c + patch[2]))
            acc[region] += out * weights
            norm[region] += weights
        if tally is not None:
            tally.add(len(chunk))
    return (acc / norm)[: shape[0], : shape[1], : shape[2]]


def _forward(
    model: LoadedModel, x: FloatArray, batch_size: int, tally: _Tally | None = None
) -> FloatArray:
    spatial = model.card.spatial
    if isinstance(spatial, Spatial3D):
        return _predict_patches(model, x, spatial, batch_size, tally)
    return _predict_slices(model, x, batch_size, tally)


def _network_inputs(model: LoadedModel, x: FloatArray) -> int:
    """How many inputs (slices, or 3D patches) one pass over ``x`` runs."""
    spatial = model.card.spatial
    if isinstance(spatial, Spatial3D):
        padded = tuple(max(p, s) for p, s in zip(spatial.patch, x.shape[1:], strict=True))
        return len(_corners((x.shape[0], *padded), spatial))
    return int(x.shape[1])


def _in_output_units(model: LoadedModel, y: FloatArray, native: tuple[int, int]) -> FloatArray:
    out = model.card.output
    return denormalize(zoom_in_plane(y, native), out.denormalization, out.value_range)


def translate(
    model: LoadedModel, inputs: Sequence[Volume], batch_size: int = 8, grid: Geometry | None = None
) -> Volume:
    """Runs ``model`` on ``inputs`` (in the card's input order) resampled onto ``grid``;
    the output on that grid (default: the first input's)."""
    reference = grid or inputs[0].geometry
    x, native = prepare_inputs(model.card, inputs, reference)
    values = _in_output_units(model, _forward(model, x, batch_size), native)
    return Volume(values, reference, {"model": model.card.key})


@dataclass(frozen=True)
class Augmentation:
    """The test-time augmentation passes run beside the input as it is."""

    mirror: bool = True
    """Mirror the input left-right in plane (along columns), mirror the output back."""
    intensity_gain: float | None = None
    """Multiply the normalised inputs by this (e.g. 1.05): a mild monotone change of
    contrast scale the model should shrug off."""

    @property
    def passes(self) -> tuple[str, ...]:
        names = ["identity"]
        if self.mirror:
            names.append("mirror-columns")
        if self.intensity_gain is not None:
            names.append(f"intensity-gain-{self.intensity_gain:g}")
        return tuple(names)


@dataclass(frozen=True)
class Prediction:
    """The mean output over the passes, and the per-voxel standard deviation across them
    (population, in the output's units) on the same grid."""

    output: Volume
    spread: FloatArray
    passes: tuple[str, ...]


def translate_with_spread(
    model: LoadedModel,
    inputs: Sequence[Volume],
    batch_size: int = 8,
    augmentation: Augmentation | None = None,
    grid: Geometry | None = None,
    progress: Progress | None = None,
) -> Prediction:
    """Runs ``model`` once per augmentation pass on ``inputs`` resampled onto ``grid``
    (default: the first input's); the mean and spread of the outputs on that grid.
    ``progress`` follows the run over every pass."""
    augmentation = augmentation or Augmentation()
    reference = grid or inputs[0].geometry
    x, native = prepare_inputs(model.card, inputs, reference)
    tally = _Tally(progress, _network_inputs(model, x) * len(augmentation.passes))
    outputs = [_in_output_units(model, _forward(model, x, batch_size, tally), native)]
    if augmentation.mirror:
        mirrored = _forward(model, np.ascontiguousarray(x[..., ::-1]), batch_size, tally)
        outputs.append(_in_output_units(model, np.ascontiguousarray(mirrored[..., ::-1]), native))
    if augmentation.intensity_gain is not None:
        gained = x * np.float32(augmentation.intensity_gain)
        outputs.append(_in_output_units(model, _forward(model, gained, batch_size, tally), native))
    stack = np.stack(outputs)
    mean = stack.mean(axis=0, dtype=np.float64).astype(np.float32)
    spread = stack.std(axis=0, dtype=np.float64).astype(np.float32)
    return Prediction(
        Volume(mean, reference, {"model": model.card.key}), spread, augmentation.passes
    )
