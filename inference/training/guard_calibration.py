"""The volumes the shipped models' input guards are fitted and judged on, beside
``guard_cases`` (the training simulator's canonical contrasts in every variant):
whole-head series of the domain-randomised simulator (what the 2.x recipes train on),
and the independent test simulator's T1w at several grids and planes, with its T2w and
CT of the same head to refuse. ``guard_table`` reduces them all to signatures.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor

from inference.geometry import Volume
from inference.training.guard_cases import Case
from inference.training.randomized import simulate_randomized
from inference.training.robustness import jpeg2000_round_trip
from inference.training.testbench import Scan, simulate_case

TEST_SCANS = (
    Scan(),
    Scan(pixel_spacing_mm=0.8, slice_thickness_mm=1.5, oblique_degrees=15.0),
    Scan(plane="sagittal", pixel_spacing_mm=1.0, slice_thickness_mm=1.2),
    Scan(pixel_spacing_mm=1.4, slice_thickness_mm=5.0, noise=2.0, bias=2.0),
)
"""The test simulator's acquisitions a T1w guard must accept."""


def _randomized_images(seed: int) -> dict[str, Volume]:
    images = simulate_randomized(seed, whole_head=True).images
    return {"T1": images["T1"], "T2": images["T2"]}


def randomized_series(seeds: Sequence[int], workers: int = 1) -> list[dict[str, Volume]]:
    """The T1w and T2w whole-head series of the randomised subjects of ``seeds``."""
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            return list(pool.map(_randomized_images, seeds))
    return [_randomized_images(seed) for seed in seeds]


def testbench_cases(seed: int) -> list[Case]:
    """The test simulator's head of ``seed``: its T1w at every scan of
    :data:`TEST_SCANS` and after JPEG 2000 at 20:1 (to accept), its T2w and CT at the
    default scan offered as T1 (to refuse)."""
    cases = []
    for scan in TEST_SCANS:
        case = simulate_case(seed, scan)
        tag = f"test simulator seed {seed}, {scan.plane} {scan.pixel_spacing_mm} mm x "
        tag += f"{scan.slice_thickness_mm} mm, oblique {scan.oblique_degrees:g} deg"
        cases.append(Case("T1 test simulator", tag, case.images["T1"], True))
        if scan == Scan():
            compressed = jpeg2000_round_trip(case.images["T1"], 20.0)
            cases.append(Case("T1 test simulator JPEG 2000", f"{tag}, 20:1", compressed, True))
            cases.append(Case("T2 labelled T1 (test sim.)", tag, case.images["T2"], False))
            cases.append(Case("CT labelled MR (test sim.)", tag, case.images["CT"], False))
    return cases
