"""Quality of a model on held-out simulated subjects, beside the intensity-lookup baseline.

The model runs through the node's own serving path (``inference.predict.translate``),
so what is measured is what the node would produce. Any model whose input and output
roles the simulator makes (T1, T2, FLAIR, CT) can be evaluated, a user's included.
The truth is the subject's noise-free target (``Truth.targets``): the image the head
gives without an acquisition's noise, which no model can predict; the figures against
the acquired image, noise and all, are kept beside them (``…_acquired``). CT is
compared in HU. MR has no absolute unit: the truth is in reference units where the
head's 99.5th percentile reads 1000, and the prediction gets the one gain that fits it
best inside the head (least squares), as a reader's window would; the acquired-image
figures scale prediction and acquisition alike by their 99.5th percentiles.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from inference.geometry import FloatArray
from inference.normalize import normalize
from inference.predict import translate
from inference.registry import LoadedModel
from inference.training.baselines import IntensityLookup
from inference.training.figures import Panel, panel_figure
from inference.training.metrics import Mask, mae, psnr, ssim
from inference.training.recipes import MR_REFERENCE_LEVEL, Truth, reference_units, to_reference

CT_DATA_RANGE = 4095.0
"""PSNR and SSIM of CT over −1024…3071 HU, the range a CT image stores."""

SIMULATED_ROLES = ("T1", "T2", "FLAIR", "CT")


@dataclass
class Evaluation:
    model_key: str
    per_subject: list[dict[str, float]] = field(default_factory=list)
    seconds_per_subject: float = 0.0

    @property
    def seeds(self) -> list[int]:
        return [int(s["seed"]) for s in self.per_subject]

    @property
    def mean(self) -> dict[str, float]:
        """Each figure's mean over the subjects."""
        keys = [k for k in self.per_subject[0] if k != "seed"]
        return {k: float(np.mean([s[k] for s in self.per_subject])) for k in keys}

    def summary(self) -> str:
        return ", ".join(f"{k} {v:.4g}" for k, v in self.mean.items())


def true_units(subject: Truth, role: str) -> FloatArray:
    """The subject's noise-free ``role`` image: CT in HU, MR in reference units."""
    image = subject.targets[role].array
    return image if role == "CT" else to_reference(image, subject.head)


def fitted_gain(prediction: FloatArray, truth: FloatArray, head: Mask) -> FloatArray:
    """An MR prediction times the gain that brings it closest to ``truth`` inside the
    head (least squares): MR units are arbitrary, so the scale is not the model's to
    get right, and unlike a percentile the fit does not hang on the brightest voxels."""
    p = prediction[head].astype(np.float64)
    t = truth[head].astype(np.float64)
    gain = float(p @ t / (p @ p)) if p.any() else 1.0
    return (prediction * np.float32(gain)).astype(np.float32)


def scores(role: str, prediction: FloatArray, subject: Truth) -> dict[str, float]:
    """The figures of one output against the subject's truth (see the module text)."""
    truth = true_units(subject, role)
    acquired = reference_units(subject, role)
    head = subject.head
    if role == "CT":
        clipped = np.clip(prediction, -1024, 3071)
        return {
            "mae_hu_head": mae(clipped, truth, head),
            "mae_hu_bone": mae(clipped, truth, subject.bone),
            "psnr_db": psnr(clipped, truth, head, CT_DATA_RANGE),
            "ssim": ssim(clipped, truth, head, CT_DATA_RANGE),
            "mae_hu_head_acquired": mae(clipped, acquired, head),
        }
    scaled = fitted_gain(prediction, truth, head)
    data_range = float(truth[head].max() - truth[head].min())
    acquired_range = float(acquired[head].max() - acquired[head].min())
    return {
        "mae_head": mae(scaled, truth, head),
        "psnr_db": psnr(scaled, truth, head, data_range),
        "ssim": ssim(scaled, truth, head, data_range),
        "ssim_acquired": ssim(to_reference(prediction, head), acquired, head, acquired_range),
    }


def _normalised_inputs(model: LoadedModel, subject: Truth) -> FloatArray:
    return np.stack(
        [
            normalize(subject.images[spec.role].array, spec.normalization)
            for spec in model.card.inputs
        ]
    )


def fit_baseline(model: LoadedModel, subjects: Iterable[Truth]) -> IntensityLookup:
    """The lookup baseline for the model's roles, fitted on ``subjects``."""
    channels = len(model.card.inputs)
    lookup = IntensityLookup(channels, bins=64 if channels == 1 else 48)
    for subject in subjects:
        x = _normalised_inputs(model, subject)[:, subject.head]
        lookup.fit(x, true_units(subject, model.card.output.role)[subject.head])
    return lookup


def baseline_prediction(lookup: IntensityLookup, model: LoadedModel, subject: Truth) -> FloatArray:
    """The lookup inside the head; outside it, what surrounds a head: air (CT) or 0 (MR)."""
    outside = -1000.0 if model.card.output.modality == "CT" else 0.0
    guess = np.full(subject.head.shape, outside, dtype=np.float32)
    guess[subject.head] = lookup.predict(_normalised_inputs(model, subject)[:, subject.head])
    return guess


def _check_roles(model: LoadedModel) -> None:
    roles = [*model.card.input_roles, model.card.output.role]
    unknown = [r for r in roles if r not in SIMULATED_ROLES]
    if unknown:
        raise ValueError(
            f"{model.card.key}: the simulator makes {', '.join(SIMULATED_ROLES)}, "
            f"not {', '.join(unknown)}"
        )


def evaluate(
    model: LoadedModel,
    subjects: Iterable[Truth],
    baseline_subjects: Iterable[Truth],
    *,
    figure: Path | None = None,
    batch_size: int = 8,
) -> tuple[Evaluation, Evaluation]:
    """The model's and the baseline's figures on held-out ``subjects`` (the baseline is
    fitted on ``baseline_subjects``); the figure, when asked for, shows the first."""
    figures = {model.card.key: figure} if figure else {}
    ((result, baseline),) = evaluate_models(
        [model], subjects, baseline_subjects, figures=figures, batch_size=batch_size
    )
    return result, baseline


def evaluate_models(
    models: Sequence[LoadedModel],
    subjects: Iterable[Truth],
    baseline_subjects: Iterable[Truth],
    *,
    figures: Mapping[str, Path] | None = None,
    batch_size: int = 8,
) -> list[tuple[Evaluation, Evaluation]]:
    """:func:`evaluate` for several models at once: each subject is made once and shared
    by the models; ``figures`` maps a model's key to the picture of its first subject."""
    for model in models:
        _check_roles(model)
    baseline_heads = list(baseline_subjects)
    lookups = [fit_baseline(model, baseline_heads) for model in models]
    results = [
        (Evaluation(m.card.key), Evaluation(f"intensity lookup ({m.card.key} roles)"))
        for m in models
    ]
    elapsed = [0.0] * len(models)
    for n, subject in enumerate(subjects):
        for i, (model, lookup) in enumerate(zip(models, lookups, strict=True)):
            role = model.card.output.role
            started = time.monotonic()
            inputs = [subject.images[r] for r in model.card.input_roles]
            prediction = translate(model, inputs, batch_size).array
            elapsed[i] += time.monotonic() - started
            guess = baseline_prediction(lookup, model, subject)
            result, baseline = results[i]
            result.per_subject.append({"seed": subject.seed, **scores(role, prediction, subject)})
            baseline.per_subject.append({"seed": subject.seed, **scores(role, guess, subject)})
            figure = (figures or {}).get(model.card.key)
            if n == 0 and figure is not None:
                side_by_side(model, subject, prediction, guess, figure)
    for (result, _), seconds in zip(results, elapsed, strict=True):
        result.seconds_per_subject = seconds / max(1, len(result.seeds))
    return results


def side_by_side(
    model: LoadedModel, subject: Truth, prediction: FloatArray, baseline: FloatArray, path: Path
) -> Path:
    """Input(s) | synthetic | truth | difference | baseline, at two levels of the head."""
    role = model.card.output.role
    truth = true_units(subject, role)
    if role == "CT":
        window, spread, units = (-400.0, 1600.0), 400.0, "HU"
    else:
        prediction = fitted_gain(prediction, truth, subject.head)
        baseline = fitted_gain(baseline, truth, subject.head)
        window, spread, units = (0.0, 1.1 * MR_REFERENCE_LEVEL), 300.0, ""
    depth = truth.shape[0]
    rows = []
    for k in (depth // 3, depth // 2 + 4):
        panels: list[Panel] = []
        for r in model.card.input_roles:
            image = subject.images[r].array
            panels.append((f"{r} (input) z{k}", image[k], 0.0, float(np.percentile(image, 99.5))))
        panels += [
            (f"synthetic {role}", prediction[k], *window),
            (f"true {role}", truth[k], *window),
            (f"difference ±{spread:g} {units}", prediction[k] - truth[k], -spread, spread),
            ("baseline (intensity lookup)", baseline[k], *window),
        ]
        rows.append(panels)
    return panel_figure(rows, path)
