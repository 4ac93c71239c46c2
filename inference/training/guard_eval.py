"""How often the input guard is wrong: false refusals and false acceptances by case kind.

Run it over a few hundred labelled cases (``guard_cases.labelled_cases``) to report
the guard's table; every wrong decision is listed with its score and the feature that
decided it, and each kind's lowest and highest score say how far it lies from the
threshold.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from inference.card import RoleGuard
from inference.guard import score, signature
from inference.training.guard_cases import Case


@dataclass(frozen=True)
class MeasuredCase:
    """A labelled case reduced to its signature (see ``guard_table``)."""

    kind: str
    name: str
    in_distribution: bool
    signature: Mapping[str, float]


@dataclass
class KindCount:
    """One row of the table: how many cases of a kind, how many were decided wrong, and
    the range of their scores."""

    expected_accept: bool
    cases: int = 0
    wrong: int = 0
    lowest: float = math.inf
    highest: float = -math.inf


@dataclass
class GuardEvaluation:
    """Counts per case kind; each wrong decision named with its score."""

    kinds: dict[str, KindCount] = field(default_factory=dict)
    false_refusals: list[str] = field(default_factory=list)
    false_acceptances: list[str] = field(default_factory=list)
    in_distribution: int = 0
    out_of_distribution: int = 0

    def table(self) -> str:
        """A plain-text table: kind, expected decision, cases, wrong decisions, scores."""
        lines = [f"{'case kind':32s} {'expected':8s} {'cases':>5s} {'wrong':>5s}  scores"]
        for kind, count in self.kinds.items():
            expected = "accept" if count.expected_accept else "refuse"
            lines.append(
                f"{kind:32s} {expected:8s} {count.cases:5d} {count.wrong:5d}  "
                f"{count.lowest:.1f}-{count.highest:.1f}"
            )
        lines.append(
            f"false refusals {len(self.false_refusals)}/{self.in_distribution}, "
            f"false acceptances {len(self.false_acceptances)}/{self.out_of_distribution}"
        )
        return "\n".join(lines)


def evaluate_measured(guard: RoleGuard, cases: Iterable[MeasuredCase]) -> GuardEvaluation:
    """Scores every measured case and counts the guard's wrong decisions."""
    result = GuardEvaluation()
    for case in cases:
        value, feature = score(dict(case.signature), guard)
        accepted = value <= guard.threshold
        count = result.kinds.setdefault(case.kind, KindCount(case.in_distribution))
        count.cases += 1
        count.lowest, count.highest = min(count.lowest, value), max(count.highest, value)
        line = f"{case.name}: score {value:.2f} ({feature}), threshold {guard.threshold:.2f}"
        if case.in_distribution:
            result.in_distribution += 1
            if not accepted:
                count.wrong += 1
                result.false_refusals.append(line)
        else:
            result.out_of_distribution += 1
            if accepted:
                count.wrong += 1
                result.false_acceptances.append(line)
    return result


def evaluate_guard(guard: RoleGuard, cases: Iterable[Case]) -> GuardEvaluation:
    """Assesses every case (its signature, then its score) and counts wrong decisions."""
    return evaluate_measured(
        guard,
        (MeasuredCase(c.kind, c.name, c.in_distribution, signature(c.volume)) for c in cases),
    )
