"""The input guard's signature table: every reference volume and labelled case, reduced
to its signature once, so that fitting and judging guards on feature subsets costs
nothing.

Simulating a whole head costs tens of seconds and its signature about one; fitting a
guard and scoring a few hundred cases from their signatures costs milliseconds. So the
calibration is split: :func:`signature_table` simulates and measures (saved as JSON by
``python -m inference.training guard-table``), and ``guard --table`` fits, judges and
writes guards from that file. Each row names the set (``reference`` or ``cases``), the
role a reference volume stands for, or the case's kind, name and expected decision as a
T1 input; :func:`t2_view` says how each case reads when offered as a T2 input.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from inference.guard import signature
from inference.training.guard_calibration import randomized_series, testbench_cases
from inference.training.guard_cases import (
    labelled_cases,
    subject_at_random_acquisition,
    variants,
)
from inference.training.guard_eval import MeasuredCase


@dataclass(frozen=True)
class Row:
    """One volume's signature and what it is."""

    set: str
    """``reference`` (fitting) or ``cases`` (judging)."""
    source: str
    """``canonical``, ``randomized`` or ``test simulator``."""
    seed: int
    role: str
    """What the volume is a series of: ``T1``, ``T2``, or ``other`` (CT, phantom, ...)."""
    kind: str
    name: str
    signature: dict[str, float]


def _canonical_reference(seed: int) -> list[Row]:
    _, mr, tag, rng = subject_at_random_acquisition(seed)
    return [
        Row("reference", "canonical", seed, role, kind, f"{kind} {detail} ({tag})", signature(v))
        for role in ("T1", "T2")
        for kind, detail, v in variants(mr[role], rng, role)
    ]


def _canonical_cases(seed: int) -> list[Row]:
    rows = []
    for case in labelled_cases([seed]):
        role = "T1" if case.in_distribution else "other"
        role = "T2" if case.kind == "T2 labelled T1" else role
        rows.append(
            Row("cases", "canonical", seed, role, case.kind, case.name, signature(case.volume))
        )
    return rows


def _randomized(seed: int, set_: str) -> list[Row]:
    (series,) = randomized_series([seed])
    return [
        Row(
            set_,
            "randomized",
            seed,
            role,
            f"{role} randomised",
            f"randomised head {seed}",
            signature(series[role]),
        )
        for role in ("T1", "T2")
    ]


def _test_simulator(seed: int) -> list[Row]:
    rows = []
    for case in testbench_cases(seed):
        role = "T1" if case.in_distribution else "other"
        role = "T2" if case.kind.startswith("T2 labelled") else role
        rows.append(
            Row("cases", "test simulator", seed, role, case.kind, case.name, signature(case.volume))
        )
    return rows


def _job(job: tuple[str, int]) -> list[Row]:
    what, seed = job
    if what == "canonical reference":
        return _canonical_reference(seed)
    if what == "canonical cases":
        return _canonical_cases(seed)
    if what == "randomized reference":
        return _randomized(seed, "reference")
    if what == "randomized cases":
        return _randomized(seed, "cases")
    return _test_simulator(seed)


def signature_table(
    canonical_reference: Sequence[int],
    randomized_reference: Sequence[int],
    canonical_cases: Sequence[int],
    randomized_cases: Sequence[int],
    test_cases: Sequence[int],
    workers: int = 1,
) -> Iterator[list[Row]]:
    """The rows of every seed's volumes, one seed's list at a time (cheap seeds first)."""
    jobs = [
        *(("canonical reference", s) for s in canonical_reference),
        *(("canonical cases", s) for s in canonical_cases),
        *(("test simulator", s) for s in test_cases),
        *(("randomized reference", s) for s in randomized_reference),
        *(("randomized cases", s) for s in randomized_cases),
    ]
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            yield from pool.map(_job, jobs)
    else:
        yield from map(_job, jobs)


def save_table(rows: Iterable[Row], path: Path) -> None:
    """Writes rows as a JSON list."""
    path.write_text(json.dumps([asdict(r) for r in rows]) + "\n")


def load_table(path: Path) -> list[Row]:
    """Reads rows written by :func:`save_table`."""
    return [Row(**r) for r in json.loads(path.read_text())]


def reference_signatures(
    rows: Iterable[Row], role: str, sources: Sequence[str]
) -> list[dict[str, float]]:
    """The reference signatures of ``role`` from the given sources."""
    return [
        r.signature for r in rows if r.set == "reference" and r.role == role and r.source in sources
    ]


_SOURCE_TAG = {"canonical": "", "randomized": " (randomised)", "test simulator": " (test sim.)"}
_T2_KIND = {
    "canonical": "T2 canonical",
    "randomized": "T2 randomised (held out)",
    "test simulator": "T2 test simulator",
}
_T1_ONCE = ("T1 as simulated", "T1 test simulator", "T1 randomised")
"""The T1w rows offered as T2 cases: each head's T1w once, not in every variant."""


def _offered_as(row: Row, role: str) -> MeasuredCase:
    """The case a row makes when its volume is offered as a series of ``role``."""
    if row.role == role == "T1":
        kind = "T1 randomised (held out)" if row.kind == "T1 randomised" else row.kind
    elif row.role == role:
        kind = _T2_KIND[row.source]
    elif row.role in ("T1", "T2"):
        kind = f"{row.role} labelled {role}{_SOURCE_TAG[row.source]}"
    else:
        kind = row.kind
    return MeasuredCase(kind, row.name, row.role == role, row.signature)


def cases_as(rows: Iterable[Row], role: str) -> list[MeasuredCase]:
    """Every case row offered as a series of ``role``: to accept when it is one, to refuse
    otherwise (another contrast under that label, a CT, a phantom, noise, an empty
    series); T1w variants count once as T2 cases (as simulated), not six times."""
    return [
        _offered_as(r, role)
        for r in rows
        if r.set == "cases" and not (role != "T1" and r.role == "T1" and r.kind not in _T1_ONCE)
    ]
