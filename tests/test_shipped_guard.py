"""The input guard shipped in `mr-t1-to-ct`'s card, on heads it was not fitted on: it
refuses a T2w labelled T1, a CT, phantoms, noise and a nearly empty series, and accepts
T1w heads of both simulators at fine random acquisitions, oblique, noisy, biased,
cropped, padded and after lossy JPEG 2000 (docs/models.md). The figures on a few hundred
cases are in docs/model-reports/guard.json; this checks one head of each simulator."""

from __future__ import annotations

from pathlib import Path

import pytest

from inference.card import RoleGuard
from inference.cardfile import read_card
from inference.guard import assess
from inference.training import guard_calibration
from inference.training.guard_cases import Case, labelled_cases

MODELS = Path(__file__).resolve().parents[1] / "models"
CANONICAL_HEAD = 6003
"""A held-out head of the training simulator (the guard was fitted on heads 200-219)."""
TEST_SIMULATOR_HEAD = 2


@pytest.fixture(scope="module")
def shipped() -> RoleGuard:
    card = read_card(MODELS / "mr-t1-to-ct.onnx")
    assert card.guard is not None and set(card.guard) == {"T1"}
    return card.guard["T1"]


@pytest.fixture(scope="module")
def cases() -> list[Case]:
    return [
        *labelled_cases([CANONICAL_HEAD]),
        *guard_calibration.testbench_cases(TEST_SIMULATOR_HEAD),
    ]


def test_the_flair_model_ships_without_a_guard() -> None:
    """Its T2 guard candidate accepted T1w labelled T2 (docs/models.md)."""
    assert read_card(MODELS / "mr-t1t2-to-flair.onnx").guard is None


def test_the_shipped_guard_refuses_every_kind_it_must(
    shipped: RoleGuard, cases: list[Case]
) -> None:
    refused = [c for c in cases if not c.in_distribution]
    assert {c.kind for c in refused} >= {
        "T2 labelled T1",
        "CT labelled MR",
        "phantom",
        "phantom with inserts",
        "pure noise",
        "nearly empty",
        "T2 labelled T1 (test sim.)",
        "CT labelled MR (test sim.)",
    }
    verdicts = [(c.name, assess(c.volume, shipped)) for c in refused]
    accepted = [f"{name}: {v.score:.2f}" for name, v in verdicts if v.accepted]
    assert accepted == [], f"threshold {shipped.threshold:.2f}"


def test_the_shipped_guard_accepts_t1w_heads_of_both_simulators_however_acquired(
    shipped: RoleGuard, cases: list[Case]
) -> None:
    genuine = [c for c in cases if c.in_distribution]
    assert {"T1 test simulator", "T1 test simulator JPEG 2000", "T1 JPEG 2000 lossy"} <= {
        c.kind for c in genuine
    }
    verdicts = [(c.name, assess(c.volume, shipped)) for c in genuine]
    refused = [f"{name}: {v.score:.2f} ({v.feature})" for name, v in verdicts if not v.accepted]
    assert refused == [], f"threshold {shipped.threshold:.2f}"
