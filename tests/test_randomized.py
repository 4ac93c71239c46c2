"""The domain-randomised training subjects: every draw stays a plausible head whose
contrast keeps what defines it, while grid, contrast and scanner vary across their ranges."""

from __future__ import annotations

import numpy as np
import pytest

from inference.training.randomized import (
    CSF_MARGIN,
    _physical_signals,
    csf_margin,
    flair_sequence,
    random_geometry,
    simulate_randomized,
    varied_tissues,
)
from inference.training.simulate import Subject, draw_anatomy
from inference.training.tissues import TISSUES

SEEDS = range(3000, 3004)


@pytest.fixture(scope="module")
def subjects() -> list[Subject]:
    return [simulate_randomized(seed) for seed in SEEDS]


def _pure(subject: Subject, tissue: str) -> np.ndarray:
    return subject.fractions[tissue] > 0.9


def test_a_seed_gives_the_same_subject_bit_for_bit(subjects: list[Subject]) -> None:
    again = simulate_randomized(SEEDS[0])
    for role, volume in subjects[0].images.items():
        assert np.array_equal(volume.array, again.images[role].array), role
        assert volume.geometry == again.images[role].geometry


def test_grids_cover_the_acquisition_ranges() -> None:
    rng = np.random.default_rng(0)
    grids = [random_geometry(rng) for _ in range(200)]
    spacing = np.array([g.spacing[1] for g in grids])
    thickness = np.array([g.spacing[0] for g in grids])
    assert 0.5 <= spacing.min() < 0.6 and 1.4 < spacing.max() <= 1.5
    assert 1.0 <= thickness.min() < 1.3 and 5.0 < thickness.max() <= 6.0
    tilt = np.degrees(np.arccos([abs(g.slice_direction[2]) for g in grids]))
    assert (tilt < 5).sum() > 50 and (tilt > 15).sum() > 10
    assert all(g.shape[0] * g.shape[1] * g.shape[2] <= 4.0e6 for g in grids)
    whole = [random_geometry(rng, whole_head=True) for _ in range(20)]
    assert all(g.shape[0] * g.spacing[0] >= 150 for g in whole)
    assert all(g.shape[0] * g.shape[1] * g.shape[2] <= 12.5e6 for g in whole)


def test_t1w_keeps_fat_and_white_matter_bright_and_csf_and_bone_dark(
    subjects: list[Subject],
) -> None:
    judged = 0
    for s in subjects:
        t1 = s.images["T1"].array
        wm, csf = t1[_pure(s, "wm")].mean(), t1[_pure(s, "csf") & s.brain].mean()
        gm = t1[_pure(s, "gm")].mean()
        fat = t1[s.fractions["fat"] > 0.6].mean()
        assert wm > gm > csf and fat > gm, s.seed
        bone = s.fractions["cortical"] > 0.6
        if bone.sum() >= 20:
            judged += 1
            assert t1[bone].mean() < 0.5 * wm, s.seed
    assert judged >= 2, "too few subjects with cortical bone voxels to judge"


def test_t2w_keeps_csf_bright_and_white_matter_below_grey(subjects: list[Subject]) -> None:
    for s in subjects:
        t2 = s.images["T2"].array
        csf = t2[_pure(s, "csf") & s.brain].mean()
        assert csf > t2[_pure(s, "gm")].mean() > t2[_pure(s, "wm")].mean(), s.seed


def test_contrasts_differ_between_subjects(subjects: list[Subject]) -> None:
    ratios = [
        s.images["T1"].array[_pure(s, "gm")].mean() / s.images["T1"].array[_pure(s, "wm")].mean()
        for s in subjects
    ]
    assert max(ratios) - min(ratios) > 0.1


def test_targets_are_the_anatomy_without_the_scanner(subjects: list[Subject]) -> None:
    for s in subjects:
        flair = s.images["FLAIR"].array
        outside = s.fractions["air"] > 0.999
        assert np.all(flair[outside] < 1e-3), "the FLAIR target has no noise in air"
        ct = s.images["CT"].array
        assert ct[s.bone].mean() > 600 and ct[_pure(s, "wm")].mean() < 50


def test_skulls_span_three_to_ten_millimetres() -> None:
    rng = np.random.default_rng(1)
    totals = []
    for _ in range(60):
        head = draw_anatomy(rng).head
        totals.append(head.inner_table + head.diploe + head.outer_table)
    assert 3.0 <= min(totals) < 4.0 and 9.0 < max(totals) <= 10.0


def test_drawn_tissues_vary_widely_and_keep_grey_matter_slower_than_white() -> None:
    rng = np.random.default_rng(2)
    drawn = [varied_tissues(rng, TISSUES) for _ in range(200)]
    grey_t1 = np.array([t["gm"].t1_ms for t in drawn])
    assert grey_t1.max() / grey_t1.min() > 1.6
    assert all(t["gm"].t1_ms > t["wm"].t1_ms and t["gm"].t2_ms > t["wm"].t2_ms for t in drawn)
    assert all(t["cortical"] == TISSUES["cortical"] for t in drawn)


def test_the_flair_protocol_nulls_the_subjects_own_csf() -> None:
    rng = np.random.default_rng(3)
    for _ in range(50):
        tissues = varied_tissues(rng, TISSUES)
        sequence = flair_sequence(tissues)
        assert sequence.signal(tissues["csf"]) < 1e-6
        assert sequence.signal(tissues["wm"]) > 0.05


@pytest.fixture(scope="module")
def physical() -> list[Subject]:
    return [simulate_randomized(seed, physical=True) for seed in (3000, 3001)]


def test_a_physical_subjects_flair_follows_its_own_tissues(physical: list[Subject]) -> None:
    ratios = []
    for s in physical:
        flair = s.images["FLAIR"].array
        wm = flair[_pure(s, "wm")].mean()
        assert flair[_pure(s, "csf") & s.brain].mean() < 0.1 * wm, s.seed
        ratios.append(flair[_pure(s, "gm")].mean() / wm)
    assert max(ratios) - min(ratios) > 0.3, ratios


def test_physical_inputs_keep_csf_where_their_contrast_puts_it() -> None:
    """On T1w CSF is darker, on T2w brighter, than every brain tissue, lesions included:
    a lesion that looks like CSF on both inputs but is bright on the FLAIR is a
    contradiction no network can learn (12 % of T1w and 19 % of T2w draws had one before
    timings were drawn again)."""
    margins: dict[str, list[float]] = {"T1": [], "T2": []}
    for seed in range(100):
        rng = np.random.default_rng(seed)
        tissues = varied_tissues(rng, TISSUES)
        for role in margins:
            margins[role].append(csf_margin(_physical_signals(rng, role, tissues), role))
    assert min(margins["T1"]) >= CSF_MARGIN
    assert min(margins["T2"]) > 1.0
    assert np.mean(np.array(margins["T2"]) >= CSF_MARGIN) > 0.8
