"""The output series of one study, and the patient and study attributes the node keeps
for a study (shown to signed-in users, never logged)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from storage.models import OutputSeries, Study


def study_outputs(session: Session, study_uid: str) -> list[OutputSeries]:
    """The study's output series, oldest first."""
    return list(
        session.scalars(
            select(OutputSeries)
            .where(OutputSeries.study_uid == study_uid)
            .order_by(OutputSeries.id)
        )
    )


def output_ids(session: Session, series_uids: list[str]) -> dict[str, int]:
    """The output id of each of ``series_uids`` the node wrote."""
    rows = session.execute(
        select(OutputSeries.series_uid, OutputSeries.id).where(
            OutputSeries.series_uid.in_(series_uids)
        )
    )
    return {uid: output_id for uid, output_id in rows}


def study_headers(session: Session) -> dict[str, dict[str, Any]]:
    """Per Study Instance UID: patient name and ID, study date, accession number and
    description, as received."""
    return {
        s.study_uid: {
            "patient_name": s.patient_name,
            "patient_id": s.patient_id,
            "study_date": s.study_date,
            "accession_number": s.accession_number,
            "description": s.study_description,
        }
        for s in session.scalars(select(Study))
    }
