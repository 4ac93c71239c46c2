"""How often the input guard is wrong: false refusals and false acceptances by case kind.

Run it over a few hundred labelled cases (``guard_cases.labelled_cases``) to report
the guard's table; every wrong decision is listed with its score and the feature that
decided it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from inference.card import RoleGuard
from inference.guard import assess
from inference.training.guard_cases import Case


@dataclass
class KindCount:
    """One row of the table: how many cases of a kind, and how many were decided wrong."""

    expected_accept: bool
    cases: int = 0
    wrong: int = 0


@dataclass
class GuardEvaluation:
    """Counts per case kind; each wrong decision named with its score."""

    kinds: dict[str, KindCount] = field(default_factory=dict)
    false_refusals: list[str] = field(default_factory=list)
    false_acceptances: list[str] = field(default_factory=list)
    in_distribution: int = 0
    out_of_distribution: int = 0

    def table(self) -> str:
        """A plain-text table: kind, expected decision, cases, wrong decisions."""
        lines = [f"{'case kind':32s} {'expected':8s} {'cases':>5s} {'wrong':>5s}"]
        for kind, count in self.kinds.items():
            expected = "accept" if count.expected_accept else "refuse"
            lines.append(f"{kind:32s} {expected:8s} {count.cases:5d} {count.wrong:5d}")
        lines.append(
            f"false refusals {len(self.false_refusals)}/{self.in_distribution}, "
            f"false acceptances {len(self.false_acceptances)}/{self.out_of_distribution}"
        )
        return "\n".join(lines)


def evaluate_guard(guard: RoleGuard, cases: Iterable[Case]) -> GuardEvaluation:
    """Assesses every case and counts the guard's wrong decisions."""
    result = GuardEvaluation()
    for case in cases:
        verdict = assess(case.volume, guard)
        count = result.kinds.setdefault(case.kind, KindCount(case.in_distribution))
        count.cases += 1
        line = (
            f"{case.name}: score {verdict.score:.2f} ({verdict.feature}), "
            f"threshold {verdict.threshold:.2f}"
        )
        if case.in_distribution:
            result.in_distribution += 1
            if not verdict.accepted:
                count.wrong += 1
                result.false_refusals.append(line)
        else:
            result.out_of_distribution += 1
            if verdict.accepted:
                count.wrong += 1
                result.false_acceptances.append(line)
    return result
