"""The node's work in ``/api/v1``: studies, synthesis jobs and the outbox."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Request
from sqlalchemy.orm import Session

from dicom_node.api.auth import context
from dicom_node.api.routes_outputs import Admin, Viewer
from dicom_node.ops import outbox, studies
from dicom_node.ops.jobs import list_jobs
from storage.models import Delivery, DeliveryState, JobState, StudyState

router = APIRouter(prefix="/api/v1")


@router.get("/studies", tags=["studies"])
def get_studies(
    request: Request, _user: Viewer, state: StudyState | None = None
) -> list[dict[str, Any]]:
    """Every study, oldest first (``state`` keeps one state), with its series, the role
    each plays (or why none) and the node's outputs among them."""
    ctx = context(request)
    config = ctx.config
    with ctx.db.session() as session:
        return studies.list_studies(
            session, ctx.spool, config.series_roles, config.series_exclusions, state
        )


@router.get("/studies/{study_instance_uid}", tags=["studies"])
def get_study(request: Request, _user: Viewer, study_instance_uid: str) -> dict[str, Any]:
    """One study: its series with their roles, its jobs with their progress, its outputs
    with their state and review decision; 404 for an unknown study."""
    ctx = context(request)
    config = ctx.config
    with ctx.db.session() as session:
        found = studies.study_detail(
            session, ctx.spool, config.series_roles, config.series_exclusions, study_instance_uid
        )
    if found is None:
        raise HTTPException(404, f"no study {study_instance_uid}")
    return found


@router.post("/studies/{study_instance_uid}/complete", tags=["studies"])
def complete_study(request: Request, user: Admin, study_instance_uid: str) -> dict[str, Any]:
    """Treats a study still receiving as complete now: the route stage routes it on its
    next tick instead of waiting ``node.stable_seconds``; 404 unknown, 409 not receiving."""
    ctx = context(request)
    with ctx.db.session() as session:
        try:
            studies.force_complete(
                session,
                study_instance_uid,
                ctx.clock(),
                ctx.config.node.stable_seconds,
                user.name,
            )
        except studies.StudyNotFound as exc:
            raise HTTPException(404, str(exc)) from exc
        except studies.NotReceiving as exc:
            raise HTTPException(409, str(exc)) from exc
    return {"study_instance_uid": study_instance_uid, "state": "stable", "by": user.name}


@router.get("/jobs", tags=["jobs"])
def get_jobs(
    request: Request, _user: Viewer, state: JobState | None = None
) -> list[dict[str, Any]]:
    """Synthesis jobs, oldest first (``state`` keeps one state), with the running
    attempt's progress: ``slices_done`` of ``slices_total``."""
    ctx = context(request)
    with ctx.db.session() as session:
        return list_jobs(session, state)


@router.get("/outbox", tags=["outbox"])
def get_outbox(
    request: Request, _user: Viewer, state: DeliveryState | None = None
) -> list[dict[str, Any]]:
    """Every delivery (output series × destination), oldest first (``state`` keeps one
    state, e.g. ``parked``), with its state, attempts, next attempt and last error."""
    ctx = context(request)
    with ctx.db.session() as session:
        return outbox.list_deliveries(session, state)


def _delivery(session: Session, delivery_id: int) -> Delivery:
    delivery = session.get(Delivery, delivery_id)
    if delivery is None:
        raise HTTPException(404, f"no delivery {delivery_id}")
    return delivery


@router.post("/outbox/{delivery_id}/retry", tags=["outbox"])
def retry_delivery(request: Request, _user: Admin, delivery_id: int) -> dict[str, Any]:
    """Queues a delivery again now, attempts zeroed (a parked one, or a done one to send
    its series again); 404 unknown, 409 while it is being sent."""
    ctx = context(request)
    with ctx.db.session() as session:
        delivery = _delivery(session, delivery_id)
        if not outbox.retry(session, delivery_id, ctx.clock()):
            raise HTTPException(
                409, f"delivery {delivery_id} is {delivery.state.value}: wait until it is sent"
            )
        return {"id": delivery_id, "state": "pending"}
