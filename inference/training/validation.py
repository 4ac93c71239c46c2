"""What an imaging physicist asks to see before trusting a model: its figures on held-out
heads of the simulator it was trained on and of the independent test simulator, each
beside the lookup baseline, with the spread over heads, pictures from both, how the
figures move with each acquisition factor — and the same for the model it replaces.

The gap between the training simulator's figures and the test simulator's is the number
to watch: the first says how well a model inverts its own simulator, the second how it
does on heads made by other code.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from inference.registry import LoadedModel
from inference.training.evaluate import Evaluation, evaluate_models
from inference.training.randomized import simulate_randomized
from inference.training.recipes import Truth
from inference.training.robustness import SWEEPS, sweep
from inference.training.simulate import simulate_subject
from inference.training.testbench import simulate_case


@dataclass(frozen=True)
class HeldOutSet:
    """Heads a model is judged on, and the heads its lookup baseline is fitted on."""

    key: str
    title: str
    make: Callable[[int], Truth]
    seeds: Sequence[int]
    baseline_seeds: Sequence[int]

    def subjects(self) -> Iterable[Truth]:
        return (self.make(seed) for seed in self.seeds)

    def baseline_subjects(self) -> Iterable[Truth]:
        return (self.make(seed) for seed in self.baseline_seeds)


HELD_OUT_SETS = (
    HeldOutSet(
        "train_sim",
        "training simulator, canonical acquisition (1.5 mm, 3 mm axial, spin-echo T1w/T2w)",
        simulate_subject,
        range(9000, 9010),
        range(1000, 1004),
    ),
    HeldOutSet(
        "train_sim_randomized",
        "training simulator, domain-randomised contrast and grid",
        simulate_randomized,
        range(9100, 9110),
        range(9200, 9204),
    ),
    HeldOutSet(
        "test_sim",
        "independent test simulator (1 mm, 3 mm axial; MPRAGE/FLASH T1w, TSE T2w)",
        simulate_case,
        range(1, 11),
        range(101, 105),
    ),
)
"""Every set's baseline is fitted on other heads of the same simulator, which favours the
baseline: it never meets a contrast it was not fitted on."""


def _spread(evaluation: Evaluation) -> dict[str, list[float]]:
    keys = [k for k in evaluation.per_subject[0] if k != "seed"]
    return {
        k: [
            float(min(s[k] for s in evaluation.per_subject)),
            float(max(s[k] for s in evaluation.per_subject)),
        ]
        for k in keys
    }


def _summary(evaluation: Evaluation) -> dict[str, Any]:
    return {
        "model": evaluation.model_key,
        "mean": evaluation.mean,
        "range": _spread(evaluation),
        "per_subject": evaluation.per_subject,
        "inference_seconds_per_subject": evaluation.seconds_per_subject,
    }


def validate(
    models: Sequence[LoadedModel],
    previous: Sequence[LoadedModel],
    figures: Path | None,
    sets: Sequence[HeldOutSet] = HELD_OUT_SETS,
    progress: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Every model's report on every held-out set, each beside its baseline and the
    ``previous`` model of the same id, as JSON-ready data; each head is simulated once
    and shared by all models. Pictures of the new models go under ``figures``."""
    before = {m.card.id: m for m in previous}
    everyone = [*models, *previous]
    report: dict[str, Any] = {m.card.id: {"model": m.card.key, "sets": {}} for m in models}
    for held_out in sets:
        started = time.monotonic()
        pictures = {
            m.card.key: figures / f"{m.card.id}-{held_out.key}.png" for m in models if figures
        }
        results = dict(
            zip(
                [m.card.key for m in everyone],
                evaluate_models(
                    everyone, held_out.subjects(), held_out.baseline_subjects(), figures=pictures
                ),
                strict=True,
            )
        )
        for model in models:
            result, baseline = results[model.card.key]
            entry: dict[str, Any] = {
                "title": held_out.title,
                "seeds": list(held_out.seeds),
                "baseline_fitted_on_seeds": list(held_out.baseline_seeds),
                "model": _summary(result),
                "baseline": _summary(baseline),
            }
            if model.card.key in pictures:
                entry["figure"] = pictures[model.card.key].name
            if model.card.id in before:
                entry["previous"] = _summary(results[before[model.card.id].card.key][0])
            report[model.card.id]["sets"][held_out.key] = entry
            progress(f"{model.card.id} {held_out.key}: {result.summary()}")
        progress(f"{held_out.key}: {time.monotonic() - started:.0f} s")
    return report


def robustness(
    models: Sequence[LoadedModel], seeds: Sequence[int], progress: Callable[[str], None] = print
) -> dict[str, Any]:
    """The sweeps of :mod:`robustness` over the test simulator's heads of ``seeds``."""
    started = time.monotonic()
    points = sweep(models, seeds, SWEEPS)
    progress(f"robustness: {len(points)} settings in {time.monotonic() - started:.0f} s")
    return {"seeds": list(seeds), "points": [asdict(p) for p in points]}


def card_figures(report: dict[str, Any]) -> dict[str, float | str]:
    """The report's means as a card's ``validation`` entries: ``<set>_<figure>`` (and its
    ``_min`` and ``_max`` over the heads) for the model, ``<set>_baseline_<figure>`` for
    the baseline."""
    out: dict[str, float | str] = {}
    for key, entry in report["sets"].items():
        for name, value in entry["model"]["mean"].items():
            out[f"{key}_{name}"] = round(float(value), 4)
            low, high = entry["model"]["range"][name]
            out[f"{key}_{name}_min"] = round(float(low), 4)
            out[f"{key}_{name}_max"] = round(float(high), 4)
        for name, value in entry["baseline"]["mean"].items():
            out[f"{key}_baseline_{name}"] = round(float(value), 4)
        out[f"{key}_subjects"] = f"{len(entry['seeds'])} held-out: {entry['title']}"
    out["baseline"] = "intensity-lookup regression fitted on other heads of the same simulator"
    return out


def headline(report: dict[str, Any]) -> str:
    """One line per set: the model's mean beside the baseline's."""
    lines = []
    for key, entry in report["sets"].items():
        model = ", ".join(f"{k} {v:.4g}" for k, v in entry["model"]["mean"].items())
        lines.append(f"{key}: {model}")
    return "\n".join(lines)
