"""``python -m inference.training``: train, evaluate and export translation models.

train RECIPE --out models/       simulate, train, export, evaluate, write the card
evaluate MODEL.onnx              figures on held-out simulated subjects + baseline
validate MODEL.onnx              both simulators, baseline, previous model, robustness
guard-table TABLE.json           simulate the input guard's reference and cases, save signatures
guard MODEL.onnx ... --table T   fit, judge and write the input guards into the cards
export --factory M:F ...         any torch generator → the node's model contract
"""

from __future__ import annotations

import argparse
import functools
import importlib
import json
import logging
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from inference.card import ModelCard
from inference.registry import load_model
from inference.training.recipes import HELD_OUT_SEEDS, RECIPES, TRAIN_SEEDS, Recipe, Schedule

if TYPE_CHECKING:
    from inference.training.unet import UNet


def _seeds(text: str) -> list[int]:
    """``1000-1023`` or ``1,5,9``."""
    if "-" in text:
        first, last = (int(v) for v in text.split("-", 1))
        return list(range(first, last + 1))
    return [int(v) for v in text.split(",")]


def _evaluate_file(model_path: Path, args: argparse.Namespace) -> None:
    """Scores the model on the held-out subjects; prints, and writes what was asked:
    the figure, a JSON report, the figures into the model's card."""
    from inference.training.evaluate import evaluate
    from inference.training.export import set_card
    from inference.training.simulate import simulate_subject

    model = load_model(model_path, ["CPUExecutionProvider"], args.threads)
    result, baseline = evaluate(
        model,
        (simulate_subject(seed) for seed in args.held_out),
        (simulate_subject(seed) for seed in args.baseline_seeds),
        figure=args.figure,
    )
    print(f"{result.model_key}: {result.summary()}")
    print(f"baseline: {baseline.summary()}")
    if args.figure:
        print(f"figure: {args.figure}")
    if args.report:
        report = {
            "model": result.model_key,
            "file": str(model_path),
            "held_out_seeds": args.held_out,
            "baseline_fitted_on_seeds": args.baseline_seeds,
            "model_mean": result.mean,
            "baseline_mean": baseline.mean,
            "per_subject": result.per_subject,
            "baseline_per_subject": baseline.per_subject,
            "inference_seconds_per_subject": result.seconds_per_subject,
        }
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(json.dumps(report, indent=2) + "\n")
        print(f"report: {args.report}")
    if args.write_card:
        validation: dict[str, float | str] = {k: round(v, 4) for k, v in result.mean.items()}
        validation.update({f"baseline_{k}": round(v, 4) for k, v in baseline.mean.items()})
        validation["held_out_subjects"] = (
            f"{len(args.held_out)} simulated (seeds {args.held_out[0]}-{args.held_out[-1]})"
        )
        validation["baseline"] = "intensity-lookup regression on the same inputs, in the head"
        set_card(model_path, model.card.model_copy(update={"validation": validation}))
        print(f"validation figures written into the card of {model_path}")


def _validate(args: argparse.Namespace) -> int:
    """Held-out sets of both simulators (``--sets``) and robustness sweeps
    (``--robustness-seeds``) for the models, beside the previous versions."""
    from inference.training.export import set_card
    from inference.training.validation import card_figures, robustness, validate

    providers = ["CPUExecutionProvider"]
    models = [load_model(path, providers, args.threads) for path in args.models]
    previous = [load_model(path, providers, args.threads) for path in args.previous]
    report: dict[str, object] = {}
    if args.sets:
        report["sets"] = validate(
            models, previous, args.figures, progress=functools.partial(print, flush=True)
        )
    if args.robustness_seeds:
        report["robustness"] = robustness(
            [*models, *previous], args.robustness_seeds, functools.partial(print, flush=True)
        )
    if args.report:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(json.dumps(report, indent=2) + "\n")
        print(f"report: {args.report}")
    if args.write_card and args.sets:
        for path, model in zip(args.models, models, strict=True):
            figures = card_figures(report["sets"][model.card.id])  # type: ignore[index]
            set_card(path, model.card.model_copy(update={"validation": figures}))
            print(f"validation figures written into the card of {path}")
    return 0


def _guard_table(args: argparse.Namespace) -> int:
    """Simulates the guard's reference volumes and labelled cases and saves their
    signatures (see ``inference.training.guard_table``)."""
    from inference.training.guard_table import Row, save_table, signature_table

    started = time.monotonic()
    rows: list[Row] = []
    for chunk in signature_table(
        args.canonical_reference,
        args.randomized_reference,
        args.canonical_cases,
        args.randomized_cases,
        args.test_cases,
        args.workers,
    ):
        rows += chunk
        save_table(rows, args.table)
        first = chunk[0]
        print(
            f"{first.set} {first.source} seed {first.seed}: {len(rows)} rows, "
            f"{time.monotonic() - started:.0f} s",
            flush=True,
        )
    return 0


def _features(text: str) -> tuple[str, ...]:
    """``all`` or comma-separated names of the signature's features."""
    from inference.guard import FEATURES

    return FEATURES if text == "all" else tuple(text.split(","))


def _guard(args: argparse.Namespace) -> int:
    """Fits the input guards of the T1 and T2 roles on a signature table, judges them on
    its cases, and writes them into the models' cards."""
    from dataclasses import asdict

    from inference.training.guard_eval import evaluate_measured
    from inference.training.guard_fit import fit_from_signatures, write_guards
    from inference.training.guard_table import cases_as, load_table, reference_signatures

    rows = load_table(args.table)
    report = {}
    guards = {}
    for role, features in (("T1", args.t1_features), ("T2", args.t2_features)):
        reference = reference_signatures(rows, role, args.reference)
        guard = fit_from_signatures(
            reference,
            features=features,
            fitted_on=f"{len(reference)} {role}w series: {', '.join(args.reference)} "
            "simulator at random acquisitions",
        )
        result = evaluate_measured(guard, cases_as(rows, role))
        print(f"{role}: threshold {guard.threshold:.2f}, {len(reference)} reference volumes")
        print(result.table())
        for line in result.false_refusals + result.false_acceptances:
            print(f"  wrong: {line}")
        guards[role] = guard
        report[role] = {
            "features": list(features),
            "threshold": guard.threshold,
            "reference_cases": guard.reference_cases,
            "table": asdict(result),
        }
    for path in args.models:
        card = load_model(path, ["CPUExecutionProvider"], 1).card
        write_guards(path, {role: guards[role] for role in card.input_roles})
        print(f"guards for {', '.join(card.input_roles)} written into {path}")
    if args.report:
        args.report.write_text(json.dumps(report, indent=2) + "\n")
    return 0


def _train(args: argparse.Namespace) -> int:
    import torch
    from tqdm import tqdm

    from inference.training.export import export_model
    from inference.training.train import train
    from inference.training.unet import ARCHITECTURE_KEY

    torch.set_num_threads(args.threads)
    recipe = RECIPES[args.recipe]
    if args.steps:
        recipe = recipe.with_schedule(steps=args.steps)
    if args.learning_rate:
        recipe = recipe.with_schedule(learning_rate=args.learning_rate)
    if args.lesion_weight is not None:
        recipe = recipe.with_schedule(lesion_weight=args.lesion_weight)
    if args.lesion_crops is not None:
        recipe = recipe.with_schedule(lesion_crops=args.lesion_crops)
    if args.version:
        recipe = replace(recipe, card=recipe.card.model_copy(update={"version": args.version}))
    initial = None
    if args.init:
        initial, recipe = _continued(args.init, recipe, args.train_seeds)
    else:
        recipe = _described(
            recipe,
            f"; trained on subjects {_seed_text(args.train_seeds)}{_weighting(recipe.schedule)}",
        )
    started = time.monotonic()
    bar = sys.stderr.isatty() if args.progress is None else args.progress
    run = train(
        recipe,
        args.train_seeds,
        workers=args.threads,
        progress=tqdm.write if bar else functools.partial(print, flush=True),
        bar=bar,
        initial=initial,
    )
    path = args.out / f"{recipe.name}.onnx"
    export = export_model(
        run.network,
        recipe.card,
        path,
        run.sample,
        metadata={ARCHITECTURE_KEY: recipe.network.to_json()},
    )
    print(f"exported {export}")
    print(
        f"{recipe.name}: simulation {run.simulate_seconds:.0f} s, training "
        f"{run.train_seconds:.0f} s ({args.threads} threads)",
        flush=True,
    )
    _evaluate_file(path, args)
    print(f"{recipe.name}: {time.monotonic() - started:.0f} s in all")
    return 0


def _described(recipe: Recipe, text: str) -> Recipe:
    """The recipe with ``text`` added to its card's training data."""
    card = recipe.card
    return replace(
        recipe, card=card.model_copy(update={"training_data": card.training_data + text})
    )


def _continued(parent: Path, recipe: Recipe, seeds: list[int]) -> tuple[UNet, Recipe]:
    """The exported network in ``parent`` to continue training from, and the recipe
    with a card that tells the whole history: what the parent was trained on, then
    these steps on subjects of this recipe."""
    import onnx

    from inference.cardfile import read_card
    from inference.training.unet import from_onnx

    card = read_card(parent)
    if card.id != recipe.card.id:
        raise SystemExit(f"{parent}: model {card.id}, not {recipe.card.id}")
    if _version_key(recipe.card.version) <= _version_key(card.version):
        raise SystemExit(
            f"{parent} is {card.id} {card.version}: the continued model needs a later "
            f"version than that (--version), not {recipe.card.version}"
        )
    schedule = recipe.schedule
    recipe_text = recipe.card.training_data
    if recipe_text in card.training_data:
        recipe_text = "as above"
    history = (
        f"{card.training_data}. Then continued from {card.id} {card.version}: "
        f"{schedule.steps} steps at learning rate {schedule.learning_rate:g}"
        f"{_weighting(schedule)} on subjects "
        f"{_seed_text(seeds)} of the {RECIPES[recipe.name].card.version} recipe: {recipe_text}"
    )
    continued = replace(recipe, card=recipe.card.model_copy(update={"training_data": history}))
    return from_onnx(onnx.load(parent)).train(), continued


def _weighting(schedule: Schedule) -> str:
    """How the schedule favours white-matter lesions, for the card's history."""
    said = []
    if schedule.lesion_weight != 1.0:
        said.append(f"white-matter lesions weighted {schedule.lesion_weight:g} times in the loss")
    if schedule.lesion_crops > 0:
        said.append(f"{schedule.lesion_crops:.0%} of crops centred on a lesion")
    return f" with {' and '.join(said)}" if said else ""


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


def _seed_text(seeds: list[int]) -> str:
    if seeds == list(range(seeds[0], seeds[-1] + 1)):
        return f"{seeds[0]}-{seeds[-1]}"
    return ",".join(str(s) for s in seeds)


def _evaluate(args: argparse.Namespace) -> int:
    _evaluate_file(args.model, args)
    return 0


def _export(args: argparse.Namespace) -> int:
    import torch

    from inference.training.export import export_model

    module_name, _, function = args.factory.partition(":")
    factory = getattr(importlib.import_module(module_name), function)
    module = factory()
    if args.weights:
        module.load_state_dict(torch.load(args.weights, map_location="cpu", weights_only=True))
    card = ModelCard.model_validate_json(args.card.read_text())
    shape = tuple(int(v) for v in args.sample_shape.split(","))
    sample = np.random.default_rng(0).random(shape, dtype=np.float32)
    print(export_model(module, card, args.out, sample))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m inference.training", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    def evaluation_options(p: argparse.ArgumentParser, write_card: bool) -> None:
        p.add_argument("--held-out", type=_seeds, default=list(HELD_OUT_SEEDS))
        p.add_argument(
            "--baseline-seeds",
            type=_seeds,
            default=list(TRAIN_SEEDS)[:4],
            help="training subjects the lookup baseline is fitted on",
        )
        p.add_argument("--figure", type=Path, help="PNG: input | synthetic | truth | difference")
        p.add_argument("--report", type=Path, help="JSON file for the figures")
        p.add_argument("--threads", type=int, default=2)
        p.add_argument(
            "--write-card",
            action=argparse.BooleanOptionalAction,
            default=write_card,
            help="write the figures into the card's validation (default: when training)",
        )

    training = sub.add_parser("train", help="train a reference recipe and export it")
    training.add_argument("recipe", choices=sorted(RECIPES))
    training.add_argument("--out", type=Path, default=Path("models"))
    training.add_argument("--train-seeds", type=_seeds, default=list(TRAIN_SEEDS))
    training.add_argument("--steps", type=int, help="override the recipe's step count")
    training.add_argument(
        "--learning-rate", type=float, help="override the recipe's initial learning rate"
    )
    training.add_argument(
        "--lesion-weight", type=float, help="override the recipe's lesion weight in the loss"
    )
    training.add_argument(
        "--lesion-crops", type=float, help="override the recipe's share of lesion-centred crops"
    )
    training.add_argument(
        "--init",
        type=Path,
        help="an exported model of the recipe (.onnx) to continue training from",
    )
    training.add_argument(
        "--version",
        help="the exported card's version (default: the recipe's); a continued model "
        "needs one later than its parent's",
    )
    training.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="a progress bar of the training steps on stderr (default: when a terminal)",
    )
    evaluation_options(training, write_card=True)
    training.set_defaults(func=_train)

    evaluation = sub.add_parser("evaluate", help="figures of a model on held-out subjects")
    evaluation.add_argument("model", type=Path)
    evaluation_options(evaluation, write_card=False)
    evaluation.set_defaults(func=_evaluate)

    validation = sub.add_parser(
        "validate", help="both simulators, baseline, previous models and robustness sweeps"
    )
    validation.add_argument("models", type=Path, nargs="+")
    validation.add_argument(
        "--previous", type=Path, nargs="*", default=[], help="the models these replace"
    )
    validation.add_argument(
        "--sets", action=argparse.BooleanOptionalAction, default=True, help="held-out sets"
    )
    validation.add_argument("--figures", type=Path, help="folder for the pictures")
    validation.add_argument("--report", type=Path, help="JSON file for the whole report")
    validation.add_argument(
        "--robustness-seeds", type=_seeds, default=[], help="test-simulator heads to sweep"
    )
    validation.add_argument("--threads", type=int, default=1)
    validation.add_argument("--write-card", action="store_true", help="figures into the cards")
    validation.set_defaults(func=_validate)

    table = sub.add_parser("guard-table", help="signatures of the guard's reference and cases")
    table.add_argument("table", type=Path, help="JSON file to write")
    table.add_argument("--canonical-reference", type=_seeds, default=_seeds("200-219"))
    table.add_argument("--randomized-reference", type=_seeds, default=_seeds("200-211"))
    table.add_argument("--canonical-cases", type=_seeds, default=_seeds("6000-6014"))
    table.add_argument("--randomized-cases", type=_seeds, default=_seeds("5500-5511"))
    table.add_argument("--test-cases", type=_seeds, default=_seeds("1-8"))
    table.add_argument("--workers", type=int, default=2)
    table.set_defaults(func=_guard_table)

    guarding = sub.add_parser("guard", help="fit, judge and write the models' input guards")
    guarding.add_argument("models", type=Path, nargs="*", help="cards to write the guards into")
    guarding.add_argument("--table", type=Path, required=True, help="from guard-table")
    guarding.add_argument(
        "--reference",
        type=lambda text: tuple(text.split(",")),
        default=("canonical", "randomized"),
        help="sources the guard is fitted on: canonical, randomized or both",
    )
    guarding.add_argument("--t1-features", type=_features, default=_features("all"))
    guarding.add_argument("--t2-features", type=_features, default=_features("all"))
    guarding.add_argument("--report", type=Path, help="JSON file for the tables")
    guarding.set_defaults(func=_guard)

    export = sub.add_parser("export", help="export your own torch generator with a card")
    export.add_argument("--factory", required=True, help="module:function returning the module")
    export.add_argument("--weights", type=Path, help="a state_dict saved with torch.save")
    export.add_argument("--card", type=Path, required=True, help="the model card as JSON")
    export.add_argument("--sample-shape", required=True, help="e.g. 2,3,176,160")
    export.add_argument("--out", type=Path, required=True)
    export.set_defaults(func=_export)

    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
