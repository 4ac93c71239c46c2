"""The review gate as a reviewer sees it: the queue of output series awaiting review,
and the decision on one of them.

A route with ``review: true`` holds its output series in ``awaiting_review`` (the outbox
puts them there). Approving one releases it and queues its deliveries exactly as the
outbox releases any series; rejecting one makes it ``rejected``: it stays on the node for
audit and is never sent. Who decided, when and why goes to the audit table, which is
where :func:`decision` reads it for every view of the series. The DICOM objects are not
touched, so their signature still verifies.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from dicom_node.dispatch.outbox import latest_review_event, queue_deliveries, record_event
from storage.models import OutputSeries, OutputState


class ReviewRefused(ValueError):
    """The decision cannot be taken; the message says why."""


class NotAwaitingReview(ReviewRefused):
    """The series exists but is not awaiting review, or not in the version the reviewer
    saw (the API answers 409)."""


def review_queue(session: Session, now: datetime) -> list[dict[str, Any]]:
    """Every output series awaiting review, oldest first, with how long it has waited
    (since the outbox held it) and its ``version``: the hold's audit event, which a new
    version of the series (a re-run's new pixels) replaces. A decision may name the
    version it was taken on, so it never applies to pixels nobody looked at."""
    rows = []
    outputs = session.scalars(
        select(OutputSeries)
        .where(OutputSeries.state == OutputState.AWAITING_REVIEW)
        .order_by(OutputSeries.id)
    )
    for output in outputs:
        held = latest_review_event(session, output.series_uid)
        since = held.at if held is not None else output.created_at
        rows.append(
            {
                "series_uid": output.series_uid,
                "study_uid": output.study_uid,
                "model": output.model_key,
                "instances": output.instance_count,
                "send_to": output.send_to,
                "version": held.id if held is not None else None,
                "awaiting_since": since.isoformat(),
                "waited_s": round((now - since).total_seconds()),
            }
        )
    rows.sort(key=lambda r: str(r["awaiting_since"]))
    return rows


def approve(
    session: Session,
    series_uid: str,
    reviewer: str,
    now: datetime,
    comment: str | None = None,
    version: int | None = None,
) -> list[str]:
    """Releases an output series awaiting review and queues its deliveries; returns the
    destinations queued. With ``version`` (from :func:`review_queue`) only that version
    is approved."""
    output = _awaiting(session, series_uid, reviewer, OutputState.RELEASED, version)
    queue_deliveries(session, output.id, output.send_to, now)
    _record(session, output, "review.approved", now, reviewer=reviewer, comment=comment)
    return list(output.send_to)


def reject(
    session: Session,
    series_uid: str,
    reviewer: str,
    reason: str,
    now: datetime,
    version: int | None = None,
) -> None:
    """Rejects an output series awaiting review: it is never sent, and stays on the node.
    With ``version`` only that version is rejected."""
    if not reason.strip():
        raise ReviewRefused("a rejection needs a reason")
    output = _awaiting(session, series_uid, reviewer, OutputState.REJECTED, version)
    _record(session, output, "review.rejected", now, reviewer=reviewer, reason=reason)


def decision(session: Session, series_uid: str) -> dict[str, Any] | None:
    """The review story's latest step for a series, as every view shows it: ``status``
    (awaiting, approved, rejected, superseded), ``at`` and the event's details (reviewer,
    comment or reason); None for a series that never met the review gate."""
    event = latest_review_event(session, series_uid)
    if event is None:
        return None
    return {"status": event.kind.removeprefix("review."), "at": event.at.isoformat()} | dict(
        event.detail
    )


def _awaiting(
    session: Session, series_uid: str, reviewer: str, to: OutputState, version: int | None
) -> OutputSeries:
    """The output series, moved from awaiting_review to ``to`` in one conditional update
    (a concurrent decision or re-run wins or loses whole); the row is locked first, so a
    re-run cannot hold a new version between the version check and the move."""
    if not reviewer.strip():
        raise ReviewRefused("a decision needs the reviewer's name")
    output = session.scalar(
        select(OutputSeries).where(OutputSeries.series_uid == series_uid).with_for_update()
    )
    if output is None:
        raise ReviewRefused(f"no output series {series_uid}")
    if version is not None:
        held = latest_review_event(session, series_uid)
        if held is None or held.id != version or held.kind != "review.awaiting":
            current = held.id if held is not None and held.kind == "review.awaiting" else None
            raise NotAwaitingReview(
                f"output series {series_uid} is no longer version {version}"
                + (f" (now version {current}): look at it again" if current else "")
            )
    moved = session.execute(
        update(OutputSeries)
        .where(OutputSeries.id == output.id, OutputSeries.state == OutputState.AWAITING_REVIEW)
        .values(state=to)
    )
    if moved.rowcount == 0:  # type: ignore[attr-defined]
        session.refresh(output)
        raise NotAwaitingReview(
            f"output series {series_uid} is {output.state.value}, not awaiting review"
        )
    return output


def _record(
    session: Session, output: OutputSeries, kind: str, now: datetime, **detail: str | None
) -> None:
    kept = {k: v for k, v in detail.items() if v is not None}
    record_event(session, output, kind, now, kept)
