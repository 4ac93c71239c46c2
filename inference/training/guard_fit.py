"""Fitting the input guard's reference for one input role, and writing it into a card.

The reference is the signature (``inference.guard.signature``) of volumes the model was
trained on — for the shipped models, the training simulator's inputs at varied
acquisitions. Per feature: centre = median, scale = the larger of 1.4826 × MAD (the
standard deviation, were the feature normal), half the standard deviation, and a floor
(:data:`SCALE_FLOORS`) below which a difference is not worth a refusal, so that a
reference of a few volumes that happen to agree does not make the guard brittle. The
standardised features' covariance is the Ledoit-Wolf shrunk estimate (Ledoit & Wolf
2004), invertible even with fewer reference volumes than features.

Threshold rule: each reference volume is scored leave-one-out (against a reference
fitted on all the others: an honest score of a new in-distribution volume, where an
in-sample score would flatter), and the threshold is ``margin`` × the ``quantile`` of
those scores, at least ``minimum``. Defaults: 2 × the 0.99 quantile, at least 4. The
margin is 2, not less, because a reference usually holds several volumes of one head
(one per acquisition variant), so leaving one volume out does not leave its head out:
measured with a guard fitted on 36 volumes of 6 simulated heads, T1w volumes of 4 new
heads scored up to 1.6 × the 0.99 leave-one-out quantile, the nearest refused case (a
T2w labelled T1) 4.9 × (with the first version of the foreground, see docs/models.md).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnx

from inference.card import CARD_KEY, ModelCard, RoleGuard, parse_card
from inference.geometry import Volume
from inference.guard import FEATURES, signature

SCALE_FLOORS: dict[str, float] = {
    **{name: 0.02 for name in FEATURES if name.startswith(("hist_", "depth_"))},
    "deep_p95_over_median": 0.03,
    "deep_p5_over_median": 0.03,
    "log_volume_ml": 0.25,
    "log_roughness": 0.1,
}
"""Smallest scale per feature: 2 % of the foreground for a histogram share, 0.02 of the
99th percentile for a depth-profile value, 0.03 for a ratio of deep percentiles, a
factor 1.8 for the volume, 1.26 for the roughness."""

FloatMatrix = npt.NDArray[np.float64]

MIN_REFERENCE = 3


class GuardFitError(ValueError):
    """The reference cannot be fitted (too few volumes)."""


@dataclass(frozen=True)
class _Reference:
    centre: FloatMatrix
    scale: FloatMatrix
    location: FloatMatrix
    precision: FloatMatrix

    def score(self, row: FloatMatrix) -> float:
        d = (row - self.centre) / self.scale - self.location
        return float(np.sqrt(max(float(d @ self.precision @ d), 0.0)))


def ledoit_wolf(z: FloatMatrix) -> FloatMatrix:
    """The Ledoit-Wolf shrunk covariance of the rows of ``z`` (already centred)."""
    n, p = z.shape
    sample = z.T @ z / n
    mu = float(np.trace(sample)) / p
    squared = z**2
    beta = float(np.sum(squared.T @ squared)) / n - float(np.sum(sample**2))
    beta /= n
    delta = float(np.sum((sample - mu * np.eye(p)) ** 2))
    shrinkage = 0.0 if delta == 0 else min(beta, delta) / delta
    return (1 - shrinkage) * sample + shrinkage * mu * np.eye(p)


def _fit(rows: FloatMatrix, features: Sequence[str]) -> _Reference:
    centre = np.median(rows, axis=0)
    mad = 1.4826 * np.median(np.abs(rows - centre), axis=0)
    floors = np.array([SCALE_FLOORS[n] for n in features])
    scale = np.maximum.reduce([mad, 0.5 * rows.std(axis=0), floors])
    z = (rows - centre) / scale
    location = z.mean(axis=0)
    precision = np.asarray(np.linalg.pinv(ledoit_wolf(z - location)), dtype=np.float64)
    return _Reference(centre, scale, location, precision)


def fit_role_guard(
    volumes: Iterable[Volume],
    *,
    features: Sequence[str] = FEATURES,
    fitted_on: str = "",
    quantile: float = 0.99,
    margin: float = 2.0,
    minimum: float = 4.0,
) -> RoleGuard:
    """The reference of one input role from volumes of what the model was trained on.

    At least three volumes; a few dozen at the acquisitions the model should accept
    (spacings, thicknesses, noise, bias, fields of view) make a guard that refuses only
    what is really different. ``features``: the signature's features the guard scores
    (a subset of :data:`inference.guard.FEATURES`).
    """
    return fit_from_signatures(
        [signature(v) for v in volumes],
        features=features,
        fitted_on=fitted_on,
        quantile=quantile,
        margin=margin,
        minimum=minimum,
    )


def fit_from_signatures(
    signatures: Sequence[Mapping[str, float]],
    *,
    features: Sequence[str] = FEATURES,
    fitted_on: str = "",
    quantile: float = 0.99,
    margin: float = 2.0,
    minimum: float = 4.0,
) -> RoleGuard:
    """:func:`fit_role_guard` from the reference volumes' signatures, already measured."""
    unknown = sorted(set(features) - set(FEATURES))
    if unknown or not features:
        raise GuardFitError(f"features must be a non-empty subset of the signature's: {unknown}")
    names = tuple(features)
    rows = np.array([[s[n] for n in names] for s in signatures], dtype=np.float64)
    if len(rows) < MIN_REFERENCE:
        raise GuardFitError(
            f"a guard needs at least {MIN_REFERENCE} reference volumes, got {len(rows)}"
        )
    reference = _fit(rows, names)
    held_out = [_fit(np.delete(rows, i, axis=0), names).score(rows[i]) for i in range(len(rows))]
    threshold = max(minimum, margin * float(np.quantile(held_out, quantile)))
    return RoleGuard(
        features=names,
        centre=tuple(float(v) for v in reference.centre),
        scale=tuple(float(v) for v in reference.scale),
        location=tuple(float(v) for v in reference.location),
        precision=tuple(tuple(float(v) for v in row) for row in reference.precision),
        threshold=threshold,
        reference_cases=len(rows),
        fitted_on=fitted_on,
    )


def write_guards(path: Path, guards: Mapping[str, RoleGuard]) -> ModelCard:
    """Puts ``guards`` (by input role) into the card of the ONNX file at ``path``,
    keeping the guards of other roles; returns the new card. The card is validated
    before anything is written, so a guard for a role the model lacks is refused."""
    model = onnx.load(path)
    props = {p.key: p.value for p in model.metadata_props}
    card = parse_card(props, str(path))
    updated = ModelCard.model_validate(
        {**card.model_dump(), "guard": {**(card.guard or {}), **guards}}
    )
    props[CARD_KEY] = updated.to_json()
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, props)
    onnx.save(model, path)
    return updated
