"""The shipped reference models: valid cards, and the quality docs/models.md reports,
checked on held-out simulated subjects through the node's own serving path."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from inference.registry import Registry, load_registry
from inference.training.evaluate import evaluate
from inference.training.recipes import HELD_OUT_SEEDS, RECIPES, TRAIN_SEEDS
from inference.training.simulate import Subject, simulate_subject

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "models"


@pytest.fixture(scope="module")
def registry() -> Registry:
    return load_registry(MODELS, ["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def held_out() -> Subject:
    return simulate_subject(HELD_OUT_SEEDS[0])


@pytest.fixture(scope="module")
def training_subject() -> Subject:
    return simulate_subject(TRAIN_SEEDS[0])


Scores = dict[str, tuple[dict[str, float], dict[str, float]]]


@pytest.fixture(scope="module")
def scores(registry: Registry, held_out: Subject, training_subject: Subject) -> Scores:
    """Per model: its figures and the baseline's on the held-out subject."""
    out = {}
    for model_id, model in registry.models.items():
        result, baseline = evaluate(model, [held_out], [training_subject])
        out[model_id] = (result.per_subject[0], baseline.per_subject[0])
        print(f"\n{model_id} on held-out subject {held_out.seed}: {out[model_id][0]}")
        print(f"baseline: {out[model_id][1]}")
    return out


def test_both_reference_models_load_with_their_recipes_cards(registry: Registry) -> None:
    assert registry.refused == []
    assert set(registry.models) == set(RECIPES)
    for model_id, model in registry.models.items():
        recipe_card = RECIPES[model_id].card
        assert model.card.model_copy(update={"validation": {}}) == recipe_card
        assert "not for diagnosis" in model.card.intended_use
        assert model.providers[-1] == "CPUExecutionProvider"
        validation = model.card.validation
        assert "held_out_subjects" in validation and "baseline" in validation


def test_synthetic_ct_meets_the_head_mae_target_and_beats_the_baseline(scores: Scores) -> None:
    ours, baseline = scores["mr-t1-to-ct"]
    assert ours["mae_hu_head"] <= 60.0
    assert ours["mae_hu_head"] < 0.6 * baseline["mae_hu_head"]
    assert ours["mae_hu_bone"] < baseline["mae_hu_bone"]
    assert ours["ssim"] > baseline["ssim"]
    assert ours["psnr_db"] > baseline["psnr_db"]


def test_synthetic_flair_meets_the_ssim_target_and_beats_the_baseline(scores: Scores) -> None:
    ours, baseline = scores["mr-t1t2-to-flair"]
    assert ours["ssim"] >= 0.90
    assert ours["ssim"] > baseline["ssim"]
    assert ours["psnr_db"] > baseline["psnr_db"]


def test_the_cards_report_what_a_held_out_subject_measures(
    registry: Registry, scores: Scores
) -> None:
    """The cards' figures are means over ten held-out subjects; one of them lands near."""
    for model_id, key in (("mr-t1-to-ct", "mae_hu_head"), ("mr-t1t2-to-flair", "ssim")):
        reported = float(registry.models[model_id].card.validation[key])
        measured = scores[model_id][0][key]
        assert abs(measured - reported) < 0.25 * reported, (model_id, measured, reported)


def test_the_node_lists_the_shipped_models_without_importing_torch() -> None:
    script = (
        "import sys, json\n"
        "from dicom_node.cli import main\n"
        "code = main(['models', 'list', '--json'])\n"
        "roots = {m.split('.')[0] for m in sys.modules}\n"
        "heavy = sorted(roots & {'torch', 'nilearn', 'sklearn'})\n"
        "print(json.dumps({'code': code, 'heavy': heavy}))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    *rows, last = done.stdout.strip().splitlines()
    assert json.loads(last) == {"code": 0, "heavy": []}
    listed = {json.loads(r)["id"]: json.loads(r) for r in rows}
    assert set(listed) == {"mr-t1-to-ct", "mr-t1t2-to-flair"}
    assert listed["mr-t1t2-to-flair"]["inputs"] == ["T1", "T2"]
    assert listed["mr-t1-to-ct"]["spatial"] == "2.5d"
    assert "CPUExecutionProvider" in listed["mr-t1-to-ct"]["providers"]
