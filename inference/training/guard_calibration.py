"""The shipped models' input guards: fitted on what the models were trained on, judged on
cases neither fitting nor training made.

The reference of a role is either the training simulator's canonical contrasts at
random acquisitions, in every variant a guard must accept (``canonical``: what the
1.0.0 models were trained on), or whole-head series of the domain-randomised simulator
(``randomized``: what the 2.x recipes train on). Measured on 2026-12-01, neither made a
guard worth shipping: fitted on fine grids, both accepted nearly every case they should
refuse (docs/models.md), so no shipped card carries a guard. The guard is judged on
labelled cases: T1w series to accept — held-out randomised heads, the training
simulator's canonical T1w at random acquisitions with more noise, more bias, cropped or
padded fields of view and lossy JPEG 2000, and the independent test simulator's T1w at
several grids and planes —, and series to refuse — T2w labelled T1, CT labelled MR, QA
phantoms, pure noise, nearly empty series.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor

from inference.card import RoleGuard
from inference.geometry import Volume
from inference.training.guard_cases import (
    Case,
    labelled_cases,
    subject_at_random_acquisition,
    t1_variants,
)
from inference.training.guard_eval import GuardEvaluation, evaluate_guard
from inference.training.guard_fit import fit_role_guard
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


def canonical_series(seeds: Sequence[int]) -> list[dict[str, Volume]]:
    """Per seed of the training simulator at a random acquisition: its T1w in every
    variant a guard must accept, and the head's T2w once."""
    series: list[dict[str, Volume]] = []
    for seed in seeds:
        subject, t1, _, rng = subject_at_random_acquisition(seed)
        series.append({"T2": subject.images["T2"]})
        series += [{"T1": variant} for _, _, variant in t1_variants(t1, rng)]
    return series


def fit_guards(
    series: Iterable[dict[str, Volume]], roles: Sequence[str], source: str
) -> dict[str, RoleGuard]:
    """One guard per role from the series' volumes of that role; ``source`` says where
    they come from, in the card."""
    collected = list(series)
    return {
        role: fit_role_guard(
            [s[role] for s in collected if role in s],
            fitted_on=f"{sum(role in s for s in collected)} {role}w series: {source}",
        )
        for role in roles
    }


def _test_sim_cases(seed: int) -> list[Case]:
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


def t1_guard_cases(
    randomized: Iterable[dict[str, Volume]],
    canonical_seeds: Sequence[int],
    test_seeds: Sequence[int],
    workers: int = 1,
) -> Iterator[Case]:
    """Every labelled case for a T1 guard (see the module text)."""
    for n, series in enumerate(randomized):
        yield Case("T1 randomised (held out)", f"randomised head {n}", series["T1"], True)
    yield from labelled_cases(list(canonical_seeds))
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            for cases in pool.map(_test_sim_cases, test_seeds):
                yield from cases
    else:
        for seed in test_seeds:
            yield from _test_sim_cases(seed)


def t2_guard_cases(
    randomized: Sequence[dict[str, Volume]], test_seeds: Sequence[int]
) -> Iterator[Case]:
    """Labelled cases for a T2 guard: held-out randomised and test-simulator T2w series to
    accept, the same heads' T1w series to refuse."""
    for n, series in enumerate(randomized):
        yield Case("T2 randomised (held out)", f"randomised head {n}", series["T2"], True)
        yield Case("T1 labelled T2", f"randomised head {n}", series["T1"], False)
    for seed in test_seeds:
        case = simulate_case(seed)
        yield Case("T2 test simulator", f"test simulator seed {seed}", case.images["T2"], True)
        yield Case(
            "T1 labelled T2 (test sim.)", f"test simulator seed {seed}", case.images["T1"], False
        )


def judge(
    guard: RoleGuard, cases: Iterable[Case], progress: Callable[[str], None] = print
) -> GuardEvaluation:
    """The guard's table over ``cases``, each wrong decision named."""
    result = evaluate_guard(guard, cases)
    progress(result.table())
    for line in result.false_refusals + result.false_acceptances:
        progress(f"  wrong: {line}")
    return result
