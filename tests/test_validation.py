"""The validation report: both simulators beside the baseline, the previous model beside
the new one, the robustness sweeps, and what of it goes into a card."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import pytest

from inference.registry import LoadedModel, load_registry
from inference.training.robustness import jpeg2000_round_trip, sweep
from inference.training.simulate import Acquisition, simulate_subject
from inference.training.testbench import Scan, simulate_case
from inference.training.validation import HeldOutSet, card_figures, validate

ROOT = Path(__file__).resolve().parents[1]
COARSE = Scan(pixel_spacing_mm=2.0, slice_thickness_mm=6.0)


@pytest.fixture(scope="module")
def sct() -> LoadedModel:
    return load_registry(ROOT / "models", ["CPUExecutionProvider"]).models["mr-t1-to-ct"]


def test_lossless_jpeg2000_keeps_the_stored_pixels_and_lossy_changes_them() -> None:
    volume = simulate_case(3, COARSE).images["T1"]
    stored = np.rint(volume.array)
    assert np.array_equal(jpeg2000_round_trip(volume, 1.0).array, stored)
    lossy = jpeg2000_round_trip(volume, 30.0).array
    error = np.abs(lossy - stored)
    assert 0 < error.mean() < 0.25 * stored.mean()


def test_a_report_puts_each_simulator_beside_the_baseline_and_the_previous_model(
    sct: LoadedModel, tmp_path: Path
) -> None:
    small = Acquisition(pixel_spacing_mm=2.0, slice_thickness_mm=6.0, rows=132, columns=120)
    sets = (
        HeldOutSet(
            "train_sim", "training", partial(simulate_subject, acquisition=small), [9000], [1000]
        ),
        HeldOutSet("test_sim", "test", partial(simulate_case, scan=COARSE), [1], [101]),
    )
    report = validate([sct], [sct], tmp_path, sets, progress=lambda _: None)
    entry = report["mr-t1-to-ct"]
    assert set(entry["sets"]) == {"train_sim", "test_sim"}
    for held_out in entry["sets"].values():
        model, baseline = held_out["model"], held_out["baseline"]
        assert model["per_subject"][0]["seed"] == held_out["seeds"][0]
        assert held_out["previous"]["mean"] == model["mean"], "the same file scores the same"
        assert model["mean"]["mae_hu_head"] != baseline["mean"]["mae_hu_head"]
        assert (tmp_path / held_out["figure"]).stat().st_size > 10_000
    figures = card_figures(entry)
    assert figures["test_sim_mae_hu_head"] == round(
        entry["sets"]["test_sim"]["model"]["mean"]["mae_hu_head"], 4
    )
    assert "test_sim_baseline_mae_hu_head" in figures and "baseline" in figures


def test_a_sweep_moves_one_factor_over_the_same_head(sct: LoadedModel) -> None:
    points = sweep([sct], [1], {"noise": (0.0, 4.0)})
    assert [p.value for p in points] == [0.0, 4.0]
    assert points[0].figures[sct.card.key] != points[1].figures[sct.card.key]
