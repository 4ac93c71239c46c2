"""Role recognition: which role a series plays, by which rule, and why not.

A rule maps DICOM keywords to conditions, all of which must hold: a string is a regular
expression searched in the attribute's text (multi-valued attributes joined with ``\\``),
a ``[min, max]`` pair an inclusive numeric range on its (first) value; a missing or
empty attribute satisfies no condition. A role (or an exclusion) is one rule or a list
of rules, any of which suffices.

Attributes are read where the standard puts them: at the top level of a classic image,
and for Enhanced MR/CT in the functional group macros (PS3.3 C.7.6.16) — Shared first,
then the first frame's — where Echo Time is Effective Echo Time (C.8.13.5.2) and
Inversion Time is Inversion Times (C.8.13.5.8).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

RoleRule = dict[str, str | tuple[float, float]]
RoleRules = RoleRule | list[RoleRule]
"""One rule, or a list of rules any of which suffices."""

ENHANCED_ALIASES = {"EchoTime": "EffectiveEchoTime", "InversionTime": "InversionTimes"}
"""Classic keyword → its name inside the Enhanced MR functional groups."""


def as_rules(rules: RoleRules) -> list[RoleRule]:
    return rules if isinstance(rules, list) else [rules]


def _functional_groups(header: Dataset) -> Iterator[Dataset]:
    """The macro items of the Shared, then the first Per-Frame, functional groups."""
    for keyword in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        groups = header.get(keyword)
        if not groups:
            continue
        for element in groups[0]:
            if element.VR == "SQ" and len(element.value):
                yield element.value[0]


def attribute(header: Dataset, keyword: str) -> object:
    """The value of ``keyword`` for the series' image, wherever the standard keeps it;
    None when absent."""
    value = header.get(keyword)
    if value is not None and value != "":
        return value
    names = (keyword, ENHANCED_ALIASES.get(keyword, keyword))
    for item in _functional_groups(header):
        for name in names:
            found = item.get(name)
            if found is not None and found != "":
                return found
    return None


def _text(value: object) -> str:
    if isinstance(value, (list, tuple, MultiValue)):
        return "\\".join(str(v) for v in value)
    return str(value)


def _number(value: object) -> float | None:
    try:
        return float(value[0] if isinstance(value, (list, tuple, MultiValue)) else value)  # type: ignore[arg-type]
    except (TypeError, ValueError, IndexError):
        return None


@dataclass(frozen=True)
class Condition:
    """One condition of a rule checked against a header."""

    keyword: str
    expected: str | tuple[float, float]
    found: str | None
    holds: bool

    def describe(self) -> str:
        wanted = (
            f"/{self.expected}/"
            if isinstance(self.expected, str)
            else f"in [{self.expected[0]:g}, {self.expected[1]:g}]"
        )
        if self.found is None:
            return f"{self.keyword} absent (wanted {wanted})"
        verb = "matches" if self.holds else "does not match"
        return f"{self.keyword} {self.found!r} {verb} {wanted}"


@dataclass(frozen=True)
class RuleCheck:
    """A rule (1-based ``index`` among its role's rules) checked against a header."""

    index: int
    conditions: tuple[Condition, ...]

    @property
    def holds(self) -> bool:
        return all(c.holds for c in self.conditions)

    @property
    def failures(self) -> tuple[Condition, ...]:
        return tuple(c for c in self.conditions if not c.holds)

    def describe(self) -> str:
        shown = self.conditions if self.holds else self.failures
        return f"rule {self.index}: " + "; ".join(c.describe() for c in shown)


def _condition(header: Dataset, keyword: str, expected: str | tuple[float, float]) -> Condition:
    value = attribute(header, keyword)
    if value is None:
        return Condition(keyword, expected, None, False)
    text = _text(value)
    if isinstance(expected, str):
        return Condition(keyword, expected, text, re.search(expected, text) is not None)
    number = _number(value)
    holds = number is not None and expected[0] <= number <= expected[1]
    return Condition(keyword, expected, text, holds)


def check(header: Dataset, rules: RoleRules) -> list[RuleCheck]:
    """Every rule of ``rules`` checked against ``header``."""
    return [
        RuleCheck(i, tuple(_condition(header, k, v) for k, v in rule.items()))
        for i, rule in enumerate(as_rules(rules), start=1)
    ]


@dataclass(frozen=True)
class Recognition:
    """What the rules make of one series' header, and why."""

    exclusion: tuple[str, RuleCheck] | None
    checks: dict[str, list[RuleCheck]]

    @property
    def roles(self) -> frozenset[str]:
        if self.exclusion is not None:
            return frozenset()
        return frozenset(r for r, checks in self.checks.items() if any(c.holds for c in checks))

    def reasons(self) -> list[str]:
        """One line per role (or the exclusion): the rule that matched, or for each role
        the nearest rule and the conditions it failed on."""
        if self.exclusion is not None:
            name, rule = self.exclusion
            return [f"excluded as {name}: {rule.describe()}"]
        lines = []
        for role, checks in self.checks.items():
            matched = next((c for c in checks if c.holds), None)
            if matched is not None:
                lines.append(f"{role}: yes, {matched.describe()}")
            else:
                nearest = min(checks, key=lambda c: (len(c.failures), c.index))
                lines.append(f"{role}: no; nearest {nearest.describe()}")
        return lines


def recognise(
    header: Dataset, roles: Mapping[str, RoleRules], exclusions: Mapping[str, RoleRules]
) -> Recognition:
    """Exclusions first (the first that holds wins), then every role's rules."""
    for name, rules in exclusions.items():
        held = next((c for c in check(header, rules) if c.holds), None)
        if held is not None:
            return Recognition((name, held), {})
    return Recognition(None, {role: check(header, rules) for role, rules in roles.items()})
