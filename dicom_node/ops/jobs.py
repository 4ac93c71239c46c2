"""Synthesis jobs as an operator sees them."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from storage.models import Job


def list_jobs(session: Session) -> list[dict[str, Any]]:
    """Every job, oldest first."""
    return [
        {
            "id": job.id,
            "study_uid": job.study.study_uid,
            "model": job.model_id,
            "version": job.model_version,
            "state": job.state.value,
            "attempts": job.attempts,
            "inputs": job.input_series,
            "output_series_uid": job.output_series_uid,
            "error": job.error,
        }
        for job in session.scalars(select(Job).order_by(Job.id))
    ]
