"""How a model's figures move as one acquisition factor at a time moves across its range,
on heads of the independent test simulator (``testbench``).

Each factor is swept with every other factor at the test simulator's default, over the
same heads, so a change in the figure is the factor's doing. The models run as the node
runs them (``inference.reorient.predict_in_plane``: series tilted beyond the card's
``max_obliquity_degrees`` resampled into the plane and back), one pass. Compression is applied as a
lossy JPEG 2000 round trip of the stored 16-bit pixels, slice by slice, as a PACS that
compresses would.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import openjpeg

from inference.geometry import Volume
from inference.registry import LoadedModel
from inference.reorient import predict_in_plane
from inference.training.evaluate import scores
from inference.training.testbench import Case, Scan, simulate_case

SWEEPS: dict[str, tuple[float, ...]] = {
    "pixel_spacing_mm": (0.5, 0.75, 1.0, 1.25, 1.5),
    "slice_thickness_mm": (1.0, 2.0, 3.0, 4.5, 6.0),
    "oblique_degrees": (0.0, 10.0, 20.0, 30.0),
    "noise": (0.0, 1.0, 2.0, 4.0),
    "bias": (0.0, 1.0, 2.0, 3.0),
    "jpeg2000_ratio": (1.0, 10.0, 20.0, 40.0),
}
"""Factor → values; ``jpeg2000_ratio`` 1 is lossless, the others are compression ratios."""

HEADLINE = {"CT": "mae_hu_head", "FLAIR": "ssim"}
"""The figure a sweep reports for each output role."""


def jpeg2000_round_trip(volume: Volume, ratio: float) -> Volume:
    """The volume as a PACS would return it after JPEG 2000 at ``ratio`` (1: lossless),
    stored as 16-bit unsigned integers like the node's inputs."""
    stored = np.clip(np.rint(volume.array), 0, 65535).astype(np.uint16)
    out = np.empty(stored.shape, dtype=np.float32)
    for k, plane in enumerate(stored):
        lossy = [float(ratio)] if ratio > 1 else None
        encoded = openjpeg.encode(np.ascontiguousarray(plane), compression_ratios=lossy)
        out[k] = np.asarray(openjpeg.decode(encoded), dtype=np.float32)
    return Volume(out, volume.geometry, volume.meta)


def _case(seed: int, factor: str, value: float) -> Case:
    if factor == "jpeg2000_ratio":
        case = simulate_case(seed)
        images = dict(case.images)
        for role in ("T1", "T2"):
            images[role] = jpeg2000_round_trip(images[role], value)
        return replace(case, images=images)
    changed: dict[str, Any] = {factor: value}
    return simulate_case(seed, replace(Scan(), **changed))


@dataclass(frozen=True)
class SweepPoint:
    factor: str
    value: float
    figures: dict[str, float]
    """Model key → mean headline figure over the heads."""


def sweep(
    models: Sequence[LoadedModel], seeds: Sequence[int], sweeps: dict[str, tuple[float, ...]]
) -> list[SweepPoint]:
    """The headline figure of every model at every factor value, over the heads of
    ``seeds``; each head is simulated once per value and shared by the models."""
    points = []
    for factor, values in sweeps.items():
        for value in values:
            sums: dict[str, list[float]] = {m.card.key: [] for m in models}
            for seed in seeds:
                case = _case(seed, factor, value)
                for model in models:
                    role = model.card.output.role
                    inputs = [case.images[r] for r in model.card.input_roles]
                    prediction = predict_in_plane(model, inputs).output.array
                    sums[model.card.key].append(scores(role, prediction, case)[HEADLINE[role]])
            figures = {key: float(np.mean(v)) for key, v in sums.items()}
            points.append(SweepPoint(factor, value, figures))
    return points
