"""The head below and beside the skull's shell: temporalis, face and neck are where a
head has them, made of the tissues a head has there, in every contrast."""

from __future__ import annotations

import numpy as np
import pytest

from inference.training.randomized import simulate_randomized
from inference.training.simulate import (
    Acquisition,
    Subject,
    clean_mr,
    draw_anatomy,
    simulate_subject,
)
from inference.training.tissues import SEQUENCES, Tissue

LOW = Acquisition(z_range_mm=(-95.0, -25.0))
TEMPORAL = Acquisition(z_range_mm=(-10.0, 20.0))


@pytest.fixture(scope="module")
def low() -> Subject:
    return simulate_subject(9100, LOW)


@pytest.fixture(scope="module")
def temporal() -> Subject:
    return simulate_subject(9101, TEMPORAL)


def _slices_below(subject: Subject, z_mm: float) -> np.ndarray:
    g = subject.images["CT"].geometry
    z = g.origin[2] + np.arange(g.shape[0]) * g.spacing[0]
    return z < z_mm


def test_temporalis_lies_outside_the_skull_and_reads_as_soft_tissue(temporal: Subject) -> None:
    muscle = temporal.fractions["muscle"] > 0.9
    assert muscle.sum() > 500, "a temporalis a few millimetres thick on both sides"
    columns = np.nonzero(muscle)[2]
    centre = temporal.images["CT"].array.shape[2] / 2
    assert (columns < centre).sum() > 100 and (columns > centre).sum() > 100, "both sides"
    assert not (muscle & temporal.brain).any()
    ct, t1 = temporal.images["CT"].array, temporal.images["T1"].array
    soft = float(np.median(ct[muscle]))
    assert 30.0 < soft < 150.0, "soft tissue; the scanner's blur of the skull beside it adds"
    assert float(np.median(ct[temporal.bone])) > 4 * soft
    csf = (temporal.fractions["csf"] > 0.9) & temporal.brain
    wm = temporal.fractions["wm"] > 0.9
    assert t1[csf].mean() < t1[muscle].mean() < t1[wm].mean(), "intermediate on T1w"


def test_the_face_holds_orbits_air_and_bone_in_front_of_the_brain(low: Subject) -> None:
    face = _slices_below(low, -30.0)[:, None, None] & ~low.brain
    globes = (low.fractions["csf"] > 0.9) & face & low.head
    assert globes.sum() > 200, "vitreous: water-like, outside the brain"
    enclosed_air = (low.fractions["air"] > 0.9) & low.head & face
    assert enclosed_air.sum() > 300, "nasal cavity, maxillary sinuses and airway"
    rows = np.nonzero(globes)[1]
    brain_rows = np.nonzero(low.brain)[1]
    assert np.median(rows) < np.median(brain_rows), "eyes lie anterior to the brain"
    flair, t1 = low.images["FLAIR"].array, low.images["T1"].array
    fat = (low.fractions["fat"] > 0.9) & face
    assert t1[globes].mean() < 0.5 * t1[fat].mean(), "vitreous is dark on T1w, fat bright"
    assert flair[globes].mean() < flair[fat].mean()


def test_the_neck_is_muscle_around_a_vertebra_and_an_airway(low: Subject) -> None:
    neck = _slices_below(low, -75.0)
    assert neck.sum() >= 3
    head = low.head[neck]
    muscle = low.fractions["muscle"][neck]
    assert (muscle[head] > 0.5).mean() > 0.4, "a neck is mostly muscle"
    bone = low.bone[neck]
    assert bone.sum() > 100, "a cervical vertebra"
    ct = low.images["CT"].array[neck]
    assert ct[bone].mean() > 500
    airway = (low.fractions["air"][neck] > 0.9) & head
    assert airway.sum() > 30, "the pharynx is air inside the neck"


def test_the_flair_target_shares_the_coil_bias_of_the_inputs() -> None:
    ratios = []
    for seed in range(3100, 3106):
        subject = simulate_randomized(seed)
        clean = clean_mr(subject.fractions, SEQUENCES["FLAIR"], _tissues_of(seed))
        wm = (subject.fractions["wm"] > 0.95) & (clean > 0)
        bias = subject.images["FLAIR"].array[wm] / clean[wm]
        t1 = subject.images["T1"].array[wm]
        ratios.append((float(bias.std() / bias.mean()), bias, t1))
    spread, bias, t1 = max(ratios, key=lambda r: r[0])
    assert spread > 0.03, "some subject's coil shades its FLAIR"
    assert np.corrcoef(bias, t1)[0, 1] > 0.5, "the T1w input carries the same shading"


def _tissues_of(seed: int) -> dict[str, Tissue]:
    """The subject's tissues: its anatomy is the first draw of its seed."""
    return draw_anatomy(np.random.default_rng(seed)).tissues
