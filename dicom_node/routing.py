"""Route: which series play which role, and which models to run on a stable study.

A model runs when every one of its input roles is present and its output role is
missing. A series marked synthetic — by this node or any other synthesizer — is never
an input and never counts as a present output, so a PACS that routes everything back
causes no loop (ARCHITECTURE.md, "Synthetic series").
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from sqlalchemy import select
from sqlalchemy.orm import Session

from dicom_node.config import RoleRule, Route
from dicom_node.provenance import PRIVATE_CREATOR
from dicom_node.sop_classes import is_volume_image
from inference.card import ModelCard
from storage.models import AuditEvent, Job, JobState, Study

SYNTHESIZING_EQUIPMENT = ("109100", "DCM")


@dataclass(frozen=True)
class SeriesInfo:
    """A received series as routing sees it: the header of one of its image instances,
    those instances, and the SOP classes of the other objects it holds (left out)."""

    series_uid: str
    header: Dataset
    sop_instance_uids: tuple[str, ...]
    series_number: int | None = None
    other_objects: tuple[str, ...] = ()

    @property
    def is_image(self) -> bool:
        return is_volume_image(str(self.header.get("SOPClassUID", ""))) and "Rows" in self.header


def is_synthetic(header: Dataset) -> bool:
    """True when any standard or project mark says the instance was synthesized."""
    if str(header.get("SyntheticData", "")).upper() == "YES":
        return True
    for item in header.get("ContributingEquipmentSequence", []):
        for code in item.get("PurposeOfReferenceCodeSequence", []):
            if (str(code.get("CodeValue", "")), str(code.get("CodingSchemeDesignator", ""))) == (
                SYNTHESIZING_EQUIPMENT
            ):
                return True
    return any(
        elem.tag.is_private_creator and str(elem.value) == PRIVATE_CREATOR for elem in header
    )


def _text(value: object) -> str:
    if isinstance(value, (list, tuple, MultiValue)):
        return "\\".join(str(v) for v in value)
    return "" if value is None else str(value)


def _matches(header: Dataset, rule: RoleRule) -> bool:
    for keyword, expected in rule.items():
        value = header.get(keyword)
        if value is None or value == "":
            return False
        if isinstance(expected, str):
            if not re.search(expected, _text(value)):
                return False
        else:
            try:
                number = float(value[0] if isinstance(value, (list, MultiValue)) else value)
            except (TypeError, ValueError):
                return False
            if not expected[0] <= number <= expected[1]:
                return False
    return True


def classify(header: Dataset, roles: Mapping[str, RoleRule]) -> frozenset[str]:
    """Every role whose rule the header satisfies (usually one)."""
    return frozenset(role for role, rule in roles.items() if _matches(header, rule))


def fingerprint(series: Sequence[SeriesInfo]) -> str:
    """Identifies the exact input instances of a job; new instances → new fingerprint."""
    h = hashlib.sha256()
    for s in series:
        h.update(s.series_uid.encode())
        for uid in sorted(s.sop_instance_uids):
            h.update(b"/" + uid.encode())
        h.update(b"|")
    return h.hexdigest()


@dataclass(frozen=True)
class JobPlan:
    """A model run that routing decided on."""

    card: ModelCard
    inputs: tuple[SeriesInfo, ...]
    send_to: tuple[str, ...]

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.inputs)


@dataclass(frozen=True)
class Decision:
    """What routing decided for one route, with the reason when nothing is to run."""

    model: str
    plan: JobPlan | None
    reason: str


@dataclass
class StudyRoles:
    """The study's non-synthetic image series, grouped by role."""

    by_role: dict[str, list[tuple[SeriesInfo, frozenset[str]]]] = field(default_factory=dict)
    ignored: list[tuple[str, str]] = field(default_factory=list)

    def present(self, role: str) -> bool:
        return bool(self.by_role.get(role))

    def best(self, role: str) -> SeriesInfo:
        """Prefers a series that plays only this role, then the most slices, then the lowest
        series number, so that a choice between candidates is stable."""
        candidates = self.by_role[role]
        return min(
            candidates,
            key=lambda c: (
                len(c[1]),
                -len(c[0].sop_instance_uids),
                c[0].series_number or 0,
                c[0].series_uid,
            ),
        )[0]


def study_roles(series: Iterable[SeriesInfo], roles: Mapping[str, RoleRule]) -> StudyRoles:
    result = StudyRoles()
    for s in series:
        if is_synthetic(s.header):
            result.ignored.append((s.series_uid, "synthetic"))
            continue
        if not s.is_image:
            result.ignored.append((s.series_uid, "not an image series"))
            continue
        matched = classify(s.header, roles)
        if not matched:
            result.ignored.append((s.series_uid, "no role matches"))
        for role in matched:
            result.by_role.setdefault(role, []).append((s, matched))
    return result


def decide(
    series: Sequence[SeriesInfo],
    roles: Mapping[str, RoleRule],
    routes: Sequence[Route],
    cards: Mapping[str, ModelCard],
    sender_destination: str | None,
) -> list[Decision]:
    """For every route: the job to run, or why none runs."""
    present = study_roles(series, roles)
    decisions = []
    for route in routes:
        card = cards.get(route.model)
        if card is None:
            decisions.append(Decision(route.model, None, "model not loaded"))
            continue
        if present.present(card.output.role):
            decisions.append(Decision(route.model, None, f"{card.output.role} already present"))
            continue
        missing = [r for r in card.input_roles if not present.present(r)]
        if missing:
            decisions.append(Decision(route.model, None, f"missing input roles {missing}"))
            continue
        targets = (sender_destination if t == "sender" else t for t in route.send_to)
        send_to = tuple(dict.fromkeys(t for t in targets if t is not None))
        if not send_to:
            decisions.append(
                Decision(
                    route.model, None, "no destination: the sender is not a configured destination"
                )
            )
            continue
        inputs = tuple(present.best(r) for r in card.input_roles)
        plan = JobPlan(card=card, inputs=inputs, send_to=send_to)
        decisions.append(Decision(route.model, plan, "inputs present, output missing"))
    return decisions


def record_decisions(
    session: Session, study: Study, decisions: Sequence[Decision], now: datetime
) -> list[Job]:
    """Routing's commit: a job row per new plan (an identical earlier job — same model
    version, same input instances — is not repeated) and an audit row per decision."""
    created = []
    for d in decisions:
        if d.plan is not None:
            plan = d.plan
            existing = session.scalar(
                select(Job.id).where(
                    Job.study_id == study.id,
                    Job.model_id == plan.card.id,
                    Job.model_version == plan.card.version,
                    Job.fingerprint == plan.fingerprint,
                )
            )
            if existing is not None:
                d = Decision(d.model, None, f"already decided as job {existing}")
            else:
                job = Job(
                    study_id=study.id,
                    model_id=plan.card.id,
                    model_version=plan.card.version,
                    input_series=[s.series_uid for s in plan.inputs],
                    fingerprint=plan.fingerprint,
                    send_to=list(plan.send_to),
                    state=JobState.PENDING,
                    attempts=0,
                    created_at=now,
                    updated_at=now,
                )
                session.add(job)
                created.append(job)
        session.add(
            AuditEvent(
                at=now,
                kind="route.job" if d.plan else "route.skip",
                study_uid=study.study_uid,
                detail={"model": d.model, "reason": d.reason},
            )
        )
    session.flush()
    return created
