"""inference.training.testbench: the independent head simulator used to judge the models."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pytest
from scipy import ndimage

from inference.training.testbench import Case, Scan, simulate_case
from inference.training.testbench.atlas import load_atlas
from inference.training.testbench.case import subject
from inference.training.testbench.properties import draw_marrow, draw_tissues
from inference.training.testbench.sequences import draw_protocols

THICK_SKULL, THIN_SKULL = 4, 11
"""Seeds whose drawn vault thickness is 6.7 mm and 4.3 mm (sclerotic diploë)."""
SMALL = Scan(pixel_spacing_mm=3.0, slice_thickness_mm=6.0)
CLEAN = Scan(pixel_spacing_mm=1.5, slice_thickness_mm=3.0, noise=0.0, bias=0.0)


@pytest.fixture(scope="module")
def clean() -> Case:
    return simulate_case(THICK_SKULL, CLEAN)


@pytest.fixture(scope="module")
def axial() -> Case:
    return simulate_case(THICK_SKULL, SMALL)


@pytest.fixture(scope="module")
def sagittal() -> Case:
    return simulate_case(
        THICK_SKULL, Scan(plane="sagittal", pixel_spacing_mm=3.0, slice_thickness_mm=6.0)
    )


def _template_points(case: Case, mask: npt.NDArray[np.bool_]) -> tuple[npt.NDArray[np.intp], ...]:
    """Voxels of ``case``'s grid where template voxels in ``mask`` land (nearest)."""
    atlas, subj = load_atlas(), subject(case.seed)
    mm = np.argwhere(mask) @ atlas.affine[:3, :3].T + atlas.affine[:3, 3]
    to_index = np.linalg.inv(case.images["CT"].geometry.affine)
    index = np.rint(subj.pose.to_patient(mm) @ to_index[:3, :3].T + to_index[:3, 3]).astype(int)
    inside = np.all((index >= 0) & (index < np.asarray(case.head.shape)), axis=1)
    return tuple(index[inside].T)


def _tissue_medians(case: Case) -> dict[str, dict[str, float]]:
    """Per image, the median over deep white matter, cortical grey matter and ventricular CSF."""
    atlas = load_atlas()
    x, y, z = atlas.coordinates()
    tissue = atlas.gm + atlas.wm
    ventricle_box = (
        (np.abs(x) < 25)[None, None, :]
        & ((y > -45) & (y < 25))[None, :, None]
        & ((z > 0) & (z < 30))[:, None, None]
    )
    sets = {
        "wm": ndimage.binary_erosion(atlas.wm > 0.97, iterations=2),
        "gm": atlas.gm > 0.85,
        "csf": ventricle_box & (ndimage.maximum_filter(tissue, size=5) < 0.15),
    }
    points = {name: _template_points(case, mask) for name, mask in sets.items()}
    return {
        image: {name: float(np.median(volume.array[at])) for name, at in points.items()}
        for image, volume in case.images.items()
    }


def test_same_seed_gives_a_bit_identical_case() -> None:
    first = simulate_case(THIN_SKULL, SMALL)
    subject.cache_clear()
    second = simulate_case(THIN_SKULL, SMALL)
    assert first.description == second.description
    for name, volume in first.images.items():
        assert volume.geometry == second.images[name].geometry
        np.testing.assert_array_equal(volume.array, second.images[name].array)
    for mask in ("head", "bone", "brain"):
        np.testing.assert_array_equal(getattr(first, mask), getattr(second, mask))


def test_thick_and_thin_skulls_show_in_the_bone_mask() -> None:
    """Bone above the brain at the vertex, on the mid-sagittal slice, within 3–10 mm (± a pixel)."""
    scan = Scan(plane="sagittal", pixel_spacing_mm=1.0, slice_thickness_mm=4.0, noise=0.0)
    thickness = {}
    for seed in (THIN_SKULL, THICK_SKULL):
        case = simulate_case(seed, scan)
        middle = case.head.shape[0] // 2
        bone, brain = case.bone[middle], case.brain[middle]
        columns = np.flatnonzero(brain.any(axis=0))
        centre = columns[len(columns) * 3 // 10 : len(columns) * 7 // 10]
        counts = [bone[: np.argmax(brain[:, c]), c].sum() for c in centre]
        thickness[seed] = float(np.median(counts)) * scan.pixel_spacing_mm
    assert all(2.0 <= t <= 11.0 for t in thickness.values()), thickness
    assert thickness[THICK_SKULL] > thickness[THIN_SKULL] + 1.0, thickness


def test_different_scans_image_the_same_head(axial: Case, sagittal: Case) -> None:
    assert axial.description == sagittal.description
    deep = {
        name: ndimage.binary_erosion(c.brain, iterations=1)
        for name, c in (("ax", axial), ("sag", sagittal))
    }
    ct_ax = float(np.median(axial.images["CT"].array[deep["ax"]]))
    ct_sag = float(np.median(sagittal.images["CT"].array[deep["sag"]]))
    assert abs(ct_ax - ct_sag) < 3.0
    volume = {
        c.scan.plane: c.brain.sum() * np.prod(c.images["CT"].geometry.spacing)
        for c in (axial, sagittal)
    }
    assert volume["axial"] == pytest.approx(volume["sagittal"], rel=0.05)


@pytest.mark.parametrize(("plane", "axis"), [("axial", 2), ("sagittal", 0), ("coronal", 1)])
def test_each_plane_stacks_along_its_axis_at_the_asked_spacing(
    plane: Literal["axial", "sagittal", "coronal"], axis: int
) -> None:
    scan = Scan(plane=plane, pixel_spacing_mm=3.0, slice_thickness_mm=6.0, fov_mm=240.0)
    case = simulate_case(THICK_SKULL, scan)
    geometry = case.images["T1"].geometry
    assert abs(geometry.slice_direction[axis]) == pytest.approx(1.0)
    assert geometry.spacing == (6.0, 3.0, 3.0)
    assert geometry.shape[1:] == (80, 80)
    assert all(v.geometry == geometry for v in case.images.values())
    extent = geometry.shape[0] * 6.0
    assert {"axial": 170, "sagittal": 130, "coronal": 170}[plane] < extent < 260
    # the stack reaches the head's edges (the neck runs on out of the field of view) and
    # holds all of the brain
    assert case.head[:2].any() and case.head[-2:].any()
    assert not case.brain[[0, -1]].any()
    assert not case.brain[:, [0, -1], :].any() and not case.brain[:, :, [0, -1]].any()


def test_an_oblique_stack_tilts_by_the_asked_angle_and_images_the_same_brain(axial: Case) -> None:
    case = simulate_case(
        THICK_SKULL, Scan(oblique_degrees=20.0, pixel_spacing_mm=3.0, slice_thickness_mm=6.0)
    )
    normal = np.asarray(case.images["CT"].geometry.slice_direction)
    assert np.degrees(np.arccos(normal[2])) == pytest.approx(20.0, abs=1e-6)
    assert case.brain.sum() == pytest.approx(axial.brain.sum(), rel=0.05)


def test_tissue_signals_keep_their_clinical_order_in_every_case() -> None:
    """T1w: WM > GM > CSF, fat bright, bone dark; T2w: CSF > GM > WM; FLAIR: CSF darkest."""
    for seed in range(40):
        rng = np.random.default_rng(seed)
        t = draw_tissues(rng)
        draw_marrow(rng)
        p = draw_protocols(rng)
        t1, t2, flair = (
            lambda name, s=s, t=t: abs(s.signal(t[name])) for s in (p.t1w, p.t2w, p.flair)
        )
        assert t1("wm") > t1("gm") > t1("csf") > t1("cortical"), p.t1w
        assert t1("fat") > t1("wm")
        assert t2("csf") > t2("gm") > t2("wm") > t2("cortical")
        assert flair("csf") < 0.5 * min(flair("wm"), flair("gm")), p.flair
        assert 2000 < p.flair.ti_ms < 2800


def test_images_show_the_clinical_contrasts(clean: Case) -> None:
    m = _tissue_medians(clean)
    assert m["T1"]["wm"] > m["T1"]["gm"] > m["T1"]["csf"]
    assert m["T2"]["csf"] > m["T2"]["gm"] > m["T2"]["wm"]
    assert m["FLAIR"]["csf"] < min(m["FLAIR"]["wm"], m["FLAIR"]["gm"])
    assert 20 < m["CT"]["wm"] < 50 and 20 < m["CT"]["gm"] < 50
    assert m["CT"]["csf"] < m["CT"]["wm"]


def test_ct_bone_is_dense_and_air_is_air(clean: Case) -> None:
    ct = clean.images["CT"].array
    assert float(np.median(ct[clean.bone])) > 700
    assert float(np.median(ct[~clean.head])) == pytest.approx(-1000, abs=5)
    assert ct.min() >= -1024 and ct.max() <= 3071


def test_masks_nest_inside_the_head(axial: Case) -> None:
    assert not (axial.bone & ~axial.head).any()
    assert not (axial.brain & ~axial.head).any()
    assert not (axial.bone & axial.brain).any()
    assert axial.bone.sum() > 0.03 * axial.head.sum()
    assert 0.2 < axial.brain.sum() / axial.head.sum() < 0.7


def test_noise_and_bias_multipliers_change_only_what_they_name(axial: Case) -> None:
    flat = simulate_case(THICK_SKULL, replace(SMALL, noise=0.0, bias=0.0))
    noisier = simulate_case(THICK_SKULL, replace(SMALL, noise=2.0))
    biased = simulate_case(THICK_SKULL, replace(SMALL, noise=0.0, bias=2.0))
    air = ~ndimage.binary_dilation(flat.head, iterations=2)
    assert flat.images["T1"].array[air].max() == 0.0
    rayleigh = {c.scan.noise: float(c.images["T1"].array[air].mean()) for c in (axial, noisier)}
    assert rayleigh[2.0] == pytest.approx(2 * rayleigh[1.0], rel=0.05)
    gain = biased.images["T1"].array[flat.brain] / flat.images["T1"].array[flat.brain]
    assert 0.03 < float(np.std(np.log(gain))) < 1.0
    np.testing.assert_array_equal(biased.images["CT"].array, flat.images["CT"].array)


def test_mr_images_are_non_negative_and_scaled_per_series(axial: Case) -> None:
    for name in ("T1", "T2", "FLAIR"):
        assert axial.images[name].array.min() >= 0
    assert axial.images["CT"].meta["units"] == "HU"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("plane", "oblique"),
        ("pixel_spacing_mm", 0.0),
        ("slice_thickness_mm", 50.0),
        ("noise", -1.0),
    ],
)
def test_an_impossible_scan_is_refused_by_name(field: str, value: Any) -> None:
    with pytest.raises(ValueError, match=field):
        Scan(**{field: value})


def test_the_targets_are_the_same_scan_without_noise(axial: Case) -> None:
    """The truth a model is judged against is what the head gives without the
    acquisition's noise, and drawing it leaves the acquired images as they were."""
    quiet = simulate_case(THICK_SKULL, replace(SMALL, noise=0.0))
    again = simulate_case(THICK_SKULL, SMALL)
    assert set(axial.targets) == {"FLAIR", "CT"}
    for role, target in axial.targets.items():
        np.testing.assert_array_equal(target.array, quiet.images[role].array)
        np.testing.assert_array_equal(again.images[role].array, axial.images[role].array)
        assert target.geometry == axial.images[role].geometry
        noise = axial.images[role].array[axial.head] - target.array[axial.head]
        assert float(np.abs(noise).mean()) > 0.5
