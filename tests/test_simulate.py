"""The simulated subjects: deterministic, physically plausible, and different per seed."""

from __future__ import annotations

import numpy as np
import pytest

from inference.training.simulate import Acquisition, Subject, simulate_subject
from inference.training.tissues import SEQUENCES, TISSUES

SMALL = Acquisition(pixel_spacing_mm=3.0, slice_thickness_mm=6.0, rows=88, columns=80)
"""Coarse and quick: for what does not need pure voxels of thin layers."""

SLAB = Acquisition(z_range_mm=(0.0, 45.0))
"""The reference in-plane resolution through the ventricles and the skull's vault."""


@pytest.fixture(scope="module")
def subject() -> Subject:
    return simulate_subject(1000, SMALL)


@pytest.fixture(scope="module")
def fine() -> Subject:
    return simulate_subject(1000, SLAB)


def _pure(subject: Subject, tissue: str) -> np.ndarray:
    return subject.fractions[tissue] > 0.9


def test_the_same_seed_gives_the_same_subject_bit_for_bit(subject: Subject) -> None:
    again = simulate_subject(1000, SMALL)
    for role, volume in subject.images.items():
        assert np.array_equal(volume.array, again.images[role].array), role
    assert np.array_equal(subject.head, again.head)
    assert np.array_equal(subject.bone, again.bone)


def test_other_seeds_are_other_heads(subject: Subject) -> None:
    other = simulate_subject(1001, SMALL)
    overlap = (subject.head & other.head).sum() / (subject.head | other.head).sum()
    assert overlap < 0.97
    assert abs(subject.bone.sum() - other.bone.sum()) > 0
    assert not np.allclose(subject.images["CT"].array, other.images["CT"].array)


def test_every_contrast_is_on_one_grid_in_patient_coordinates(subject: Subject) -> None:
    grids = {volume.geometry for volume in subject.images.values()}
    assert len(grids) == 1
    (geometry,) = grids
    assert geometry.shape == (SMALL.slices, SMALL.rows, SMALL.columns)
    assert geometry.spacing == (6.0, 3.0, 3.0)
    centre = geometry.affine @ np.array([0, SMALL.rows / 2, SMALL.columns / 2, 1])
    assert abs(centre[0]) < 10 and abs(centre[1] - 17) < 10


def test_tissue_fractions_are_complete_in_every_voxel(subject: Subject) -> None:
    assert set(subject.fractions) == set(TISSUES)
    total = sum(subject.fractions.values())
    assert np.allclose(total, 1.0, atol=1e-4)
    assert min(float(f.min()) for f in subject.fractions.values()) >= -1e-6


def test_csf_is_dark_on_t1_bright_on_t2_and_nulled_on_flair(subject: Subject) -> None:
    csf, wm = _pure(subject, "csf") & subject.brain, _pure(subject, "wm")
    mean = {
        r: (subject.images[r].array[csf].mean(), subject.images[r].array[wm].mean())
        for r in SEQUENCES
    }
    assert mean["T1"][0] < 0.6 * mean["T1"][1]
    assert mean["T2"][0] > 2.0 * mean["T2"][1]
    assert mean["FLAIR"][0] < 0.25 * mean["FLAIR"][1]


def test_bone_and_air_are_both_dark_on_mr_but_opposite_on_ct(fine: Subject) -> None:
    bone = fine.fractions["cortical"] > 0.7
    air = _pure(fine, "air") & ~fine.head
    fat = fine.fractions["fat"] > 0.7
    assert bone.sum() > 50 and air.sum() > 1000 and fat.sum() > 50
    ct, t1 = fine.images["CT"].array, fine.images["T1"].array
    assert ct[bone].mean() > 1000
    assert ct[air].mean() < -950
    for role in SEQUENCES:
        image = fine.images[role].array
        assert image[bone].mean() < 0.35 * image[fat].mean(), role
        assert image[air].mean() < 0.1 * image[fat].mean(), role
    assert t1[fat].mean() > t1[_pure(fine, "wm")].mean()


def test_soft_tissue_ct_numbers_are_where_they_are_in_life(fine: Subject) -> None:
    ct = fine.images["CT"].array
    for tissue, low, high in (("wm", 15, 40), ("gm", 25, 50), ("csf", -5, 20)):
        mean = float(ct[_pure(fine, tissue) & fine.brain].mean())
        assert low < mean < high, (tissue, mean)
    fat = fine.fractions["fat"] > 0.95
    assert ct[fat].mean() < 0, "fat reads below water (thin layer beside bone: partial volume)"


def test_white_matter_lesions_are_bright_on_flair_and_t2() -> None:
    found = None
    for seed in range(1000, 1010):
        candidate = simulate_subject(seed, SMALL)
        if (candidate.fractions["lesion"] > 0.5).sum() >= 2:
            found = candidate
            break
    assert found is not None, "no subject with lesions among ten seeds"
    lesion, wm = found.fractions["lesion"] > 0.5, _pure(found, "wm")
    for role in ("FLAIR", "T2"):
        image = found.images[role].array
        assert image[lesion].mean() > 1.3 * image[wm].mean(), role


def test_sinus_air_lies_inside_the_head_and_reads_as_air_on_ct() -> None:
    enclosed = 0
    for seed in range(1000, 1004):
        s = simulate_subject(seed, SMALL)
        air_in_head = (s.fractions["air"] > 0.6) & s.head
        if air_in_head.any():
            enclosed += 1
            assert s.images["CT"].array[air_in_head].mean() < -400
    assert enclosed >= 2


def test_the_masks_agree_with_the_fractions(subject: Subject) -> None:
    assert subject.brain.sum() < subject.head.sum()
    assert not (subject.bone & ~subject.head).any()
    assert (
        subject.fractions["cortical"][subject.bone] + subject.fractions["marrow"][subject.bone]
    ).min() >= 0.5


def test_the_targets_are_the_images_without_their_noise(subject: Subject) -> None:
    """FLAIR and CT targets: the same head, bias and blur, without the quantum or
    thermal noise no model can predict."""
    head = subject.head
    ct_noise = subject.images["CT"].array[head] - subject.targets["CT"].array[head]
    assert abs(float(ct_noise.mean())) < 1.0
    assert 4.0 * 0.9 < float(ct_noise.std()) < 10.0 * 1.1
    image = subject.images["FLAIR"].array[head].astype(np.float64)
    target = subject.targets["FLAIR"].array[head].astype(np.float64)
    gain = image @ target / (target @ target)
    residual = image - gain * target
    assert float(np.abs(residual).mean()) < 0.05 * float(image.mean())
    assert float(np.abs(residual).mean()) > 0.001 * float(image.mean())
    for role in ("CT", "FLAIR"):
        assert subject.targets[role].geometry == subject.images[role].geometry
