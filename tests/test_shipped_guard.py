"""The input guards shipped in the models' cards, on heads they were not fitted on: the
T1 guard refuses a T2w labelled T1, a CT, phantoms, noise and a nearly empty series, and
accepts T1w heads of both simulators at fine random acquisitions, oblique, noisy, biased,
cropped, padded and after lossy JPEG 2000; the FLAIR model's T2 guard does the same for
its T2 input, a T1w labelled T2 refused (docs/models.md). The figures on a few hundred
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
def flair_t2() -> RoleGuard:
    card = read_card(MODELS / "mr-t1t2-to-flair.onnx")
    sct = read_card(MODELS / "mr-t1-to-ct.onnx")
    assert card.guard is not None and set(card.guard) == {"T1", "T2"}
    assert sct.guard is not None and card.guard["T1"] == sct.guard["T1"]
    return card.guard["T2"]


@pytest.fixture(scope="module")
def cases() -> list[Case]:
    return [
        *labelled_cases([CANONICAL_HEAD]),
        *guard_calibration.testbench_cases(TEST_SIMULATOR_HEAD),
    ]


def _wrongly(guard: RoleGuard, cases: list[Case], accepted: bool) -> list[str]:
    """Each case the guard judged ``accepted`` (the wrong decision for these cases), with
    its score and the feature furthest from the reference."""
    verdicts = [(c.name, assess(c.volume, guard)) for c in cases]
    return [f"{n}: {v.score:.2f} ({v.feature})" for n, v in verdicts if v.accepted == accepted]


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
    assert _wrongly(shipped, refused, accepted=True) == [], f"threshold {shipped.threshold:.2f}"


def test_the_shipped_guard_accepts_t1w_heads_of_both_simulators_however_acquired(
    shipped: RoleGuard, cases: list[Case]
) -> None:
    genuine = [c for c in cases if c.in_distribution]
    assert {"T1 test simulator", "T1 test simulator JPEG 2000", "T1 JPEG 2000 lossy"} <= {
        c.kind for c in genuine
    }
    assert _wrongly(shipped, genuine, accepted=False) == [], f"threshold {shipped.threshold:.2f}"


def _t2w(case: Case) -> bool:
    """Whether a case is a T2w head (to accept as a T2 input)."""
    return case.kind.startswith("T2 labelled T1")


def test_the_flair_models_t2_guard_refuses_t1w_ct_phantoms_noise_and_empty(
    flair_t2: RoleGuard, cases: list[Case]
) -> None:
    refused = [c for c in cases if not _t2w(c)]
    assert {"T1 as simulated", "T1 JPEG 2000 lossy", "T1 test simulator", "phantom"} <= {
        c.kind for c in refused
    }
    assert _wrongly(flair_t2, refused, accepted=True) == [], f"threshold {flair_t2.threshold:.2f}"


def test_the_flair_models_t2_guard_accepts_t2w_heads_of_both_simulators(
    flair_t2: RoleGuard, cases: list[Case]
) -> None:
    genuine = [c for c in cases if _t2w(c)]
    assert len(genuine) == 7, "six variants of the canonical head, one test-simulator T2w"
    assert _wrongly(flair_t2, genuine, accepted=False) == [], f"threshold {flair_t2.threshold:.2f}"
