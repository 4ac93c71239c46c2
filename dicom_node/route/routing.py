"""Route: which series play which role, and which models to run on a stable study.

A model runs when every one of its input roles is present and its output role is
missing. A series marked synthetic — by this node or any other synthesizer — is never
an input and never counts as a present output, so a PACS that routes everything back
causes no loop (ARCHITECTURE.md, "Synthetic series").
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from sqlalchemy import select
from sqlalchemy.orm import Session

from dicom_node.config import Route
from dicom_node.dicom.codes import SYNTHESIZING_EQUIPMENT
from dicom_node.dicom.sop_classes import is_volume_image
from dicom_node.evidence.provenance import PRIVATE_CREATOR
from dicom_node.roles.rules import RoleRules, attribute, recognise
from inference.card import ModelCard
from storage.models import AuditEvent, Job, JobState, Study


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


def classify(
    header: Dataset,
    roles: Mapping[str, RoleRules],
    exclusions: Mapping[str, RoleRules] | None = None,
) -> frozenset[str]:
    """Every role whose rules the header satisfies (usually one); none when an exclusion
    holds."""
    return recognise(header, roles, exclusions or {}).roles


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


def _voxel_volume(header: Dataset) -> float:
    """mm³ per voxel (Pixel Spacing × Slice Thickness), infinite when not stated."""
    spacing = attribute(header, "PixelSpacing")
    thickness = attribute(header, "SliceThickness")
    if not isinstance(spacing, (list, MultiValue)) or len(spacing) != 2:
        return float("inf")
    try:
        return float(spacing[0]) * float(spacing[1]) * float(str(thickness))
    except (TypeError, ValueError):
        return float("inf")


def preference(candidate: tuple[SeriesInfo, frozenset[str]]) -> tuple[object, ...]:
    """Order among series that qualify for one role, best first: the one that plays no
    other role; then one without contrast agent (Contrast/Bolus Agent absent, PS3.3
    C.7.6.4); then the finest voxels; then the most instances; then the lowest Series
    Number (the first acquired) and Series Instance UID, so the choice never depends on
    arrival order. Exactly one series is chosen: a role never yields two outputs."""
    series, roles = candidate
    contrast = attribute(series.header, "ContrastBolusAgent") is not None
    return (
        len(roles),
        contrast,
        _voxel_volume(series.header),
        -len(series.sop_instance_uids),
        series.series_number or 0,
        series.series_uid,
    )


@dataclass
class StudyRoles:
    """The study's non-synthetic image series, grouped by role, and why the others play
    none."""

    by_role: dict[str, list[tuple[SeriesInfo, frozenset[str]]]] = field(default_factory=dict)
    ignored: list[tuple[str, str]] = field(default_factory=list)

    def present(self, role: str) -> bool:
        return bool(self.by_role.get(role))

    def best(self, role: str) -> SeriesInfo:
        """The series chosen for ``role`` (:func:`preference`)."""
        return min(self.by_role[role], key=preference)[0]


def why_not_image(series: SeriesInfo) -> str | None:
    """Why a series is no candidate for any role, before its rules are read; None if it is."""
    if is_synthetic(series.header):
        return "synthetic"
    if not series.is_image:
        return "not an image series"
    return None


def study_roles(
    series: Iterable[SeriesInfo],
    roles: Mapping[str, RoleRules],
    exclusions: Mapping[str, RoleRules] | None = None,
) -> StudyRoles:
    result = StudyRoles()
    for s in series:
        reason = why_not_image(s)
        if reason is not None:
            result.ignored.append((s.series_uid, reason))
            continue
        recognition = recognise(s.header, roles, exclusions or {})
        if recognition.exclusion is not None:
            result.ignored.append((s.series_uid, f"excluded as {recognition.exclusion[0]}"))
            continue
        matched = recognition.roles
        if not matched:
            result.ignored.append((s.series_uid, "no role matches"))
        for role in matched:
            result.by_role.setdefault(role, []).append((s, matched))
    return result


def decide(
    series: Sequence[SeriesInfo],
    roles: Mapping[str, RoleRules],
    routes: Sequence[Route],
    cards: Mapping[str, ModelCard],
    sender_destination: str | None,
    exclusions: Mapping[str, RoleRules] | None = None,
) -> list[Decision]:
    """For every route: the job to run, or why none runs."""
    present = study_roles(series, roles, exclusions)
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
