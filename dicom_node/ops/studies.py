"""Studies as an operator sees them: each study's state and, for each of its series, the
role it plays as routing reads it now, or why it plays none, and for the node's own
outputs where they stand (written, awaiting review, rejected, released, delivered) and
the review decision on them."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from dicom_node.ops.jobs import job_row
from dicom_node.ops.review import decision
from dicom_node.roles.rules import RoleRules
from dicom_node.route.assembly import study_series
from dicom_node.route.routing import study_roles
from storage.models import AuditEvent, Instance, Job, OutputSeries, Series, Study, StudyState
from storage.spool import Spool


def list_studies(
    session: Session,
    spool: Spool,
    roles: Mapping[str, RoleRules],
    exclusions: Mapping[str, RoleRules],
    state: StudyState | None = None,
) -> list[dict[str, Any]]:
    """Every study (or those in ``state``), oldest first, with its series in Series
    Number order. A series' roles come from its headers in the spool and the configured
    rules, exactly as routing would find them today (``roles explain`` says why);
    ``ignored`` names why a series plays none (synthetic, excluded, no role matches, not
    an image series, unreadable)."""
    outputs = {o.series_uid: o for o in session.scalars(select(OutputSeries))}
    per_series = select(Instance.series_id, func.count(Instance.id)).group_by(Instance.series_id)
    counts = {series_id: count for series_id, count in session.execute(per_series)}
    return [
        _study_row(session, spool, roles, exclusions, study, outputs, counts)
        for study in session.scalars(_studies(state))
    ]


def _studies(state: StudyState | None) -> Select[Study]:
    query = select(Study).order_by(Study.id)
    return query if state is None else query.where(Study.state == state)


def study_detail(
    session: Session,
    spool: Spool,
    roles: Mapping[str, RoleRules],
    exclusions: Mapping[str, RoleRules],
    study_uid: str,
) -> dict[str, Any] | None:
    """One study as :func:`list_studies` shows it, plus its jobs (with their progress in
    slices) and its output series (id, state, review decision); None for an unknown
    study."""
    study = session.scalar(select(Study).where(Study.study_uid == study_uid))
    if study is None:
        return None
    outputs = {
        o.series_uid: o
        for o in session.scalars(select(OutputSeries).where(OutputSeries.study_uid == study_uid))
    }
    per_series = (
        select(Instance.series_id, func.count(Instance.id))
        .join(Series, Series.id == Instance.series_id)
        .where(Series.study_id == study.id)
        .group_by(Instance.series_id)
    )
    counts = {series_id: count for series_id, count in session.execute(per_series)}
    row = _study_row(session, spool, roles, exclusions, study, outputs, counts)
    row["jobs"] = [
        job_row(job) for job in session.scalars(select(Job).where(Job.study_id == study.id))
    ]
    row["outputs"] = [
        {
            "id": o.id,
            "series_uid": o.series_uid,
            "model": o.model_key,
            "job_id": o.job_id,
            "state": o.state.value,
            "instances": o.instance_count,
            "review": decision(session, o.series_uid),
        }
        for o in sorted(outputs.values(), key=lambda o: o.id)
    ]
    return row


class StudyNotFound(LookupError):
    """No study has that Study Instance UID."""


class NotReceiving(ValueError):
    """The study is not waiting for its stable time (it was routed already)."""


def force_complete(
    session: Session, study_uid: str, now: datetime, stable_seconds: float, by: str
) -> None:
    """Makes a study still receiving stable now, so the route stage routes it on its next
    tick instead of waiting ``stable_seconds`` after its last instance: its last-received
    time is moved back to ``now - stable_seconds`` (the time it really last received goes
    into the audit event, with who forced it). An instance arriving afterwards starts its
    clock again, as for any study. Raises :class:`StudyNotFound` or :class:`NotReceiving`."""
    study = session.scalar(select(Study).where(Study.study_uid == study_uid).with_for_update())
    if study is None:
        raise StudyNotFound(f"no study {study_uid}")
    if study.state != StudyState.RECEIVING:
        raise NotReceiving(
            f"study {study_uid} is {study.state.value}, not receiving: nothing to complete"
        )
    received = study.last_received_at
    study.last_received_at = min(received, now - timedelta(seconds=stable_seconds))
    session.add(
        AuditEvent(
            at=now,
            kind="study.forced_complete",
            study_uid=study_uid,
            detail={"by": by, "last_received_at": received.isoformat()},
        )
    )


def _study_row(
    session: Session,
    spool: Spool,
    roles: Mapping[str, RoleRules],
    exclusions: Mapping[str, RoleRules],
    study: Study,
    outputs: Mapping[str, OutputSeries],
    counts: Mapping[int, int],
) -> dict[str, Any]:
    """One study with its series, their roles and the node's outputs among them."""
    readable = study_series(session, study, spool)
    recognised = study_roles(readable, roles, exclusions)
    played: dict[str, list[str]] = {}
    for role, members in recognised.by_role.items():
        for series_info, _ in members:
            played.setdefault(series_info.series_uid, []).append(role)
    ignored = dict(recognised.ignored)
    read = {s.series_uid for s in readable}
    series = session.scalars(
        select(Series)
        .where(Series.study_id == study.id)
        .order_by(Series.series_number, Series.series_uid)
    )
    return {
        "study_uid": study.study_uid,
        "state": study.state.value,
        "last_received_at": study.last_received_at.isoformat(),
        "routed_at": study.routed_at.isoformat() if study.routed_at else None,
        "series": [
            {
                "series_uid": s.series_uid,
                "series_number": s.series_number,
                "modality": s.modality,
                "instances": counts.get(s.id, 0),
                "roles": sorted(played.get(s.series_uid, [])),
                "ignored": ignored.get(s.series_uid)
                or (None if s.series_uid in read else "unreadable"),
                "output": _output(session, outputs.get(s.series_uid)),
            }
            for s in series
        ],
    }


def _output(session: Session, output: OutputSeries | None) -> dict[str, Any] | None:
    """What the node knows of a series it wrote itself; None for a received one."""
    if output is None:
        return None
    return {
        "model": output.model_key,
        "state": output.state.value,
        "send_to": output.send_to,
        "review": decision(session, output.series_uid),
    }
