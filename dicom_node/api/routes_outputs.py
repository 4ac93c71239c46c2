"""The versioned REST API, ``/api/v1``: JSON over the same operations the CLI runs
(dicom_node.ops), each behind the role it needs."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from dicom_node.api.auth import context, require
from dicom_node.ops import outbox, previews, review
from dicom_node.ops.accounts import Principal
from storage.models import Job, OutputSeries, OutputState, Role
from storage.spool import Spool

router = APIRouter(prefix="/api/v1")

Viewer = Annotated[Principal, Depends(require(Role.VIEWER))]
Reviewer = Annotated[Principal, Depends(require(Role.REVIEWER))]
Admin = Annotated[Principal, Depends(require(Role.ADMIN))]


class Approval(BaseModel):
    comment: str | None = Field(None, max_length=2000)
    version: int | None = Field(
        None, description="the review version the reviewer looked at (see the output's item)"
    )


class Rejection(BaseModel):
    reason: str = Field(min_length=1, max_length=2000, pattern=r"\S")
    version: int | None = None


class Resend(BaseModel):
    to: str | None = Field(
        None, description="one configured destination; default: those the route named"
    )


def _output(session: Session, output_id: int) -> OutputSeries:
    output = session.get(OutputSeries, output_id)
    if output is None:
        raise HTTPException(404, f"no output {output_id}")
    return output


def output_item(session: Session, output: OutputSeries, spool: Spool) -> dict[str, Any]:
    """One output series as the API and the dashboard show it; ``slices`` counts the
    frames of an enhanced one (None when its files cannot be read)."""
    job = session.get(Job, output.job_id)
    return {
        "id": output.id,
        "state": output.state.value,
        "study_instance_uid": output.study_uid,
        "series_instance_uid": output.series_uid,
        "model": output.model_key,
        "model_version": job.model_version if job is not None else None,
        "job_id": output.job_id,
        "instances": output.instance_count,
        "slices": previews.slice_count(session, spool, output),
        "send_to": list(output.send_to),
        "created": output.created_at.isoformat(),
        "review": review.decision(session, output.series_uid),
    }


@router.get("/outputs", tags=["outputs"])
def list_outputs(
    request: Request, _user: Viewer, state: OutputState | None = None
) -> list[dict[str, Any]]:
    """Output series, newest first; ``state`` keeps one state (``awaiting_review``: the
    review queue)."""
    ctx = context(request)
    with ctx.db.session() as session:
        query = select(OutputSeries).order_by(OutputSeries.id.desc())
        if state is not None:
            query = query.where(OutputSeries.state == state)
        return [output_item(session, o, ctx.spool) for o in session.scalars(query)]


@router.get("/outputs/{output_id}", tags=["outputs"])
def get_output(request: Request, _user: Viewer, output_id: int) -> dict[str, Any]:
    """One output series: its state, model, job, instances, slices, destinations and
    review decision."""
    ctx = context(request)
    with ctx.db.session() as session:
        return output_item(session, _output(session, output_id), ctx.spool)


@router.get("/outputs/{output_id}/provenance", tags=["outputs"])
def get_provenance(request: Request, _user: Viewer, output_id: int) -> dict[str, Any]:
    """The provenance record the output's instances carry (signed in each of them)."""
    ctx = context(request)
    with ctx.db.session() as session:
        return dict(_output(session, output_id).provenance)


def _decide(request: Request, output_id: int, act: Any) -> dict[str, Any]:
    ctx = context(request)
    with ctx.db.session() as session:
        output = _output(session, output_id)
        try:
            act(session, output.series_uid, ctx.clock())
        except review.NotAwaitingReview as exc:
            raise HTTPException(409, str(exc)) from exc
        except review.ReviewRefused as exc:
            raise HTTPException(422, str(exc)) from exc
        session.flush()
        return output_item(session, output, ctx.spool)


@router.post("/outputs/{output_id}/approve", tags=["review"])
def approve_output(
    request: Request, user: Reviewer, output_id: int, body: Approval | None = None
) -> dict[str, Any]:
    """Releases an output awaiting review to its route's destinations; 409 when it is
    not awaiting review (or no longer in ``version``)."""
    given = body or Approval()
    return _decide(
        request,
        output_id,
        lambda s, uid, now: review.approve(s, uid, user.name, now, given.comment, given.version),
    )


@router.post("/outputs/{output_id}/reject", tags=["review"])
def reject_output(
    request: Request, user: Reviewer, output_id: int, body: Rejection
) -> dict[str, Any]:
    """Rejects an output awaiting review: never sent, kept for audit; 422 without a
    reason, 409 when it is not awaiting review."""
    return _decide(
        request,
        output_id,
        lambda s, uid, now: review.reject(s, uid, user.name, body.reason, now, body.version),
    )


@router.get(
    "/outputs/{output_id}/preview.png",
    tags=["outputs"],
    response_class=Response,
    responses={200: {"content": {"image/png": {}}, "description": "the three panels"}},
)
def get_preview(
    request: Request,
    _user: Viewer,
    output_id: int,
    slice_: Annotated[
        int | None, Query(alias="slice", description="0-based, in position order; default: middle")
    ] = None,
    window: Literal["brain", "bone"] = "brain",
) -> Response:
    """One slice as a PNG of three panels side by side: source | synthetic | signed
    difference of the two windowed images (grey = 0): a visual check that anatomy lines up,
    not an error map. CT in a brain (W 80 / L 40) or bone (W 2000 / L 400) window, MR in
    its series' 1st-99th percentile. 404 unknown output, 422 slice out of range."""
    ctx = context(request)
    cache: previews.PreviewCache = request.app.state.previews
    with ctx.db.session() as session:
        try:
            volumes = cache.get(session, ctx.spool, output_id)
            n = volumes.slices // 2 if slice_ is None else slice_
            picture = volumes.render(n, window)
        except previews.UnknownOutput as exc:
            raise HTTPException(404, str(exc)) from exc
        except previews.SliceOutOfRange as exc:
            raise HTTPException(422, str(exc)) from exc
        except previews.PreviewError as exc:
            raise HTTPException(409, str(exc)) from exc
    return Response(picture, media_type="image/png", headers={"Cache-Control": "no-store"})


@router.post("/outputs/{output_id}/resend", tags=["outbox"])
def resend_output(
    request: Request, user: Admin, output_id: int, body: Resend | None = None
) -> dict[str, Any]:
    """Queues a released or delivered output series again, for its route's destinations
    or for ``to`` alone; 409 for a series not cleared for sending, 422 for a destination
    not configured."""
    ctx = context(request)
    given = body or Resend()
    names = [d.name for d in ctx.config.destinations]
    if given.to is not None and given.to not in names:
        raise HTTPException(422, f"no destination named {given.to!r} in the configuration")
    with ctx.db.session() as session:
        output = _output(session, output_id)
        try:
            queued = outbox.resend(
                session, output.series_uid, ctx.clock(), names, given.to, by=user.name
            )
        except outbox.ResendRefused as exc:
            raise HTTPException(409, str(exc)) from exc
        return {"id": output.id, "queued_for": queued, "by": user.name}
