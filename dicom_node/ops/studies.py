"""Studies as an operator sees them: each study's state and, for each of its series, the
role it plays as routing reads it now, or why it plays none, and for the node's own
outputs where they stand (written, awaiting review, rejected, released, delivered) and
the review decision on them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from dicom_node.ops.review import decision
from dicom_node.roles.rules import RoleRules
from dicom_node.route.assembly import study_series
from dicom_node.route.routing import study_roles
from storage.models import Instance, OutputSeries, Series, Study
from storage.spool import Spool


def list_studies(
    session: Session,
    spool: Spool,
    roles: Mapping[str, RoleRules],
    exclusions: Mapping[str, RoleRules],
) -> list[dict[str, Any]]:
    """Every study, oldest first, with its series in Series Number order. A series' roles
    come from its headers in the spool and the configured rules, exactly as routing
    would find them today (``roles explain`` says why); ``ignored`` names why a series
    plays none (synthetic, excluded, no role matches, not an image series, unreadable)."""
    outputs = {o.series_uid: o for o in session.scalars(select(OutputSeries))}
    per_series = select(Instance.series_id, func.count(Instance.id)).group_by(Instance.series_id)
    counts = {series_id: count for series_id, count in session.execute(per_series)}
    rows = []
    for study in session.scalars(select(Study).order_by(Study.id)):
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
        rows.append(
            {
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
        )
    return rows


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
