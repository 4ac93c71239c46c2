"""The guard's calibration from a signature table: a guard fitted on a subset of the
signature's features scores those only, and each measured volume becomes the right case
when offered as a T1 or as a T2 series."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from inference.card import parse_card
from inference.guard import FEATURES, score
from inference.training.__main__ import main as training_main
from inference.training.guard_eval import MeasuredCase, evaluate_measured
from inference.training.guard_fit import GuardFitError, fit_from_signatures
from inference.training.guard_table import (
    Row,
    cases_as,
    load_table,
    reference_signatures,
    save_table,
)
from onnx_models import conv1x1_model, linear_card

SUBSET = ("deep_p95_over_median", "deep_p5_over_median", "log_roughness")


def _signatures(count: int, seed: int = 0) -> list[dict[str, float]]:
    rng = np.random.default_rng(seed)
    return [{name: float(rng.normal(1.0, 0.1)) for name in FEATURES} for _ in range(count)]


def test_a_guard_fitted_on_a_subset_of_the_features_scores_those_only() -> None:
    reference = _signatures(30)
    guard = fit_from_signatures(reference, features=SUBSET)
    assert guard.features == SUBSET
    assert len(guard.centre) == len(guard.precision) == len(guard.precision[0]) == 3
    probe = _signatures(1, seed=1)[0]
    base, _ = score(probe, guard)
    assert score({**probe, "hist_0.0-0.2": 50.0, "log_volume_ml": -3.0}, guard)[0] == base
    moved, feature = score({**probe, "log_roughness": 5.0}, guard)
    assert moved > guard.threshold > base
    assert feature == "log_roughness"


def test_fitting_refuses_features_the_signature_does_not_have() -> None:
    with pytest.raises(GuardFitError, match="subset"):
        fit_from_signatures(_signatures(5), features=("deep_p95_over_median", "contrast"))
    with pytest.raises(GuardFitError, match="subset"):
        fit_from_signatures(_signatures(5), features=())


def _row(set_: str, source: str, role: str, kind: str) -> Row:
    return Row(set_, source, 1, role, kind, f"{source} {kind}", _signatures(1)[0])


ROWS = [
    _row("reference", "canonical", "T1", "T1 as simulated"),
    _row("reference", "randomized", "T2", "T2 randomised"),
    _row("cases", "randomized", "T1", "T1 randomised"),
    _row("cases", "randomized", "T2", "T2 randomised"),
    _row("cases", "canonical", "T1", "T1 as simulated"),
    _row("cases", "canonical", "T1", "T1 more noise"),
    _row("cases", "canonical", "T2", "T2 labelled T1"),
    _row("cases", "canonical", "other", "phantom"),
    _row("cases", "test simulator", "T1", "T1 test simulator JPEG 2000"),
    _row("cases", "test simulator", "T2", "T2 labelled T1 (test sim.)"),
]


def _kinds(role: str) -> list[tuple[str, bool]]:
    return [(c.kind, c.in_distribution) for c in cases_as(ROWS, role)]


def test_cases_offered_as_t1_accept_only_t1w_series() -> None:
    assert _kinds("T1") == [
        ("T1 randomised (held out)", True),
        ("T2 labelled T1 (randomised)", False),
        ("T1 as simulated", True),
        ("T1 more noise", True),
        ("T2 labelled T1", False),
        ("phantom", False),
        ("T1 test simulator JPEG 2000", True),
        ("T2 labelled T1 (test sim.)", False),
    ]


def test_cases_offered_as_t2_accept_only_t2w_series_and_count_each_t1w_head_once() -> None:
    assert _kinds("T2") == [
        ("T1 labelled T2 (randomised)", False),
        ("T2 randomised (held out)", True),
        ("T1 labelled T2", False),
        ("T2 canonical", True),
        ("phantom", False),
        ("T2 test simulator", True),
    ]


def test_the_reference_is_the_roles_reference_rows_of_the_chosen_sources() -> None:
    assert reference_signatures(ROWS, "T1", ("canonical", "randomized")) == [ROWS[0].signature]
    assert reference_signatures(ROWS, "T2", ("canonical",)) == []
    assert reference_signatures(ROWS, "T2", ("randomized",)) == [ROWS[1].signature]


def test_the_table_survives_its_file(tmp_path: Path) -> None:
    save_table(ROWS, tmp_path / "table.json")
    assert load_table(tmp_path / "table.json") == ROWS


def test_the_evaluation_counts_each_wrong_decision_and_the_scores_of_each_kind() -> None:
    guard = fit_from_signatures(_signatures(30), features=SUBSET)
    near = _signatures(1, seed=2)[0]
    far = {**near, "deep_p5_over_median": 9.0}
    cases = [
        MeasuredCase("T1", "near", True, near),
        MeasuredCase("T1", "far", True, far),
        MeasuredCase("noise", "near noise", False, near),
    ]
    result = evaluate_measured(guard, cases)
    assert (result.in_distribution, result.out_of_distribution) == (2, 1)
    assert [line.split(":")[0] for line in result.false_refusals] == ["far"]
    assert [line.split(":")[0] for line in result.false_acceptances] == ["near noise"]
    t1 = result.kinds["T1"]
    assert (t1.cases, t1.wrong) == (2, 1)
    assert t1.lowest == score(near, guard)[0] and t1.highest == score(far, guard)[0]


def test_the_guard_command_fits_judges_and_writes_the_guards_from_a_table(
    tmp_path: Path,
) -> None:
    reference = [
        Row("reference", "canonical", n, role, role, f"{role} {n}", signature)
        for role in ("T1", "T2")
        for n, signature in enumerate(_signatures(12, seed=len(role) + ord(role[1])))
    ]
    save_table(reference + ROWS[2:], tmp_path / "table.json")
    model = conv1x1_model(tmp_path / "m.onnx", linear_card(), [2.0], -1000.0)
    report = tmp_path / "guard.json"
    argv = ["guard", str(model), "--table", str(tmp_path / "table.json")]
    argv += ["--reference", "canonical", "--t1-features", ",".join(SUBSET)]
    assert training_main([*argv, "--report", str(report)]) == 0
    tables = json.loads(report.read_text())
    assert tables["T1"]["features"] == list(SUBSET) and tables["T2"]["features"] == list(FEATURES)
    assert tables["T1"]["reference_cases"] == tables["T2"]["reference_cases"] == 12
    assert tables["T1"]["table"]["in_distribution"] == 4
    card = parse_card({p.key: p.value for p in onnx.load(model).metadata_props}, "m.onnx")
    assert card.guard is not None and set(card.guard) == {"T1"}
    assert card.guard["T1"].features == SUBSET
    assert card.guard["T1"].threshold == tables["T1"]["threshold"]
