"""Synthesis jobs as an operator sees them, with the running attempt's progress."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from storage.models import Job, JobState


def job_row(job: Job) -> dict[str, Any]:
    """One job as every view shows it; ``slices_done`` of ``slices_total`` is the running
    attempt's progress through the model (0 of 0: not begun; both passes of test-time
    augmentation count)."""
    return {
        "id": job.id,
        "study_uid": job.study.study_uid,
        "model": job.model_id,
        "version": job.model_version,
        "state": job.state.value,
        "attempts": job.attempts,
        "inputs": job.input_series,
        "output_series_uid": job.output_series_uid,
        "error": job.error,
        "slices_done": job.slices_done,
        "slices_total": job.slices_total,
        "created": job.created_at.isoformat(),
        "updated": job.updated_at.isoformat(),
    }


def list_jobs(session: Session, state: JobState | None = None) -> list[dict[str, Any]]:
    """Every job (or those in ``state``), oldest first."""
    query = select(Job).order_by(Job.id)
    if state is not None:
        query = query.where(Job.state == state)
    return [job_row(job) for job in session.scalars(query)]
