"""Assemble: instances → series → study, and when a study is complete.

DICOM has no "end of study" message, so a study counts as STABLE once
``node.stable_seconds`` pass without a new instance; the scheduler then routes it once.
An instance arriving later re-opens the study (the receive stage sets it back to
RECEIVING) and it is routed again when it settles. At start-up, studies still
receiving get their stability clock restarted: the node being down is no evidence
that a study is complete.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from datetime import datetime, timedelta

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from dicom_node.dicom.attributes import number
from dicom_node.dicom.sop_classes import is_volume_image
from dicom_node.obs.logs import emit, get_logger
from dicom_node.route.routing import SeriesInfo
from storage.database import Database
from storage.models import Instance, Series, Study, StudyState
from storage.spool import Spool

log = get_logger("assemble")


def stable_studies(
    session: Session, now: datetime, stable_seconds: float, limit: int = 50
) -> list[Study]:
    """Studies that received nothing for ``stable_seconds`` and are not routed yet, locked
    for this transaction."""
    cutoff = now - timedelta(seconds=stable_seconds)
    return list(
        session.scalars(
            select(Study)
            .where(Study.state == StudyState.RECEIVING, Study.last_received_at <= cutoff)
            .order_by(Study.last_received_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
    )


def _header(spool: Spool, keys: list[str]) -> Dataset | None:
    """The first readable header among a series' files (pixels are not read)."""
    for key in keys:
        try:
            return pydicom.dcmread(spool.path(key), stop_before_pixels=True)
        except (InvalidDicomError, OSError, EOFError, ValueError, KeyError, TypeError):
            continue
    return None


def study_series(session: Session, study: Study, spool: Spool) -> list[SeriesInfo]:
    """Every series of the study: its image instances (what a volume is made of), one of
    their headers, and the other objects it holds, which synthesis leaves out whichever
    instance arrived first (a series with no image instance is described by the header
    of another object, for routing to name it)."""
    rows = session.execute(
        select(
            Series.series_uid, Instance.sop_instance_uid, Instance.sop_class_uid, Instance.spool_key
        )
        .join(Instance, Instance.series_id == Series.id)
        .where(Series.study_id == study.id)
        .order_by(Series.id, Instance.id)
    ).all()
    by_series: dict[str, list[tuple[str, str, str]]] = defaultdict(list)
    for series_uid, sop_uid, sop_class, key in rows:
        by_series[series_uid].append((sop_uid, sop_class, key))
    infos = []
    for series_uid, members in by_series.items():
        images = [(uid, key) for uid, sop_class, key in members if is_volume_image(sop_class)]
        others = tuple(sop_class for _, sop_class, _ in members if not is_volume_image(sop_class))
        header = _header(spool, [key for _, key in images] or [key for _, _, key in members])
        if header is None:
            emit(
                log,
                "series.unreadable",
                30,
                study_uid=study.study_uid,
                series_uid=series_uid,
                reason="no instance of the series has a readable header",
            )
            continue
        if images and others:
            emit(
                log,
                "series.objects_ignored",
                study_uid=study.study_uid,
                series_uid=series_uid,
                images=len(images),
                ignored=len(others),
                sop_classes=sorted(set(others)),
                reason="not images of a volume: kept and retrievable, left out of synthesis",
            )
        infos.append(
            SeriesInfo(
                series_uid=series_uid,
                header=header,
                sop_instance_uids=tuple(uid for uid, _ in images),
                series_number=number(header, "SeriesNumber"),
                other_objects=others,
            )
        )
    return infos


def restart_stability_clocks(db: Database, clock: Callable[[], datetime]) -> int:
    """Gives every study still receiving a full ``node.stable_seconds`` from now; returns
    how many there were.

    While the node was down nothing could arrive, so the quiet time before a restart says
    nothing about whether a study is complete: a sender whose association the stop cut
    resends the rest only once the node listens again. Counted from the last instance
    before the stop, such a study would be routed the moment the node is back, on part
    of its instances; the rest would then re-run the job, and the second output, under
    the same UIDs, would reach a destination that keeps the first copy of an instance
    (Orthanc's default) as a series mixing two runs.
    """
    now = clock()
    with db.session() as session:
        result = session.execute(
            update(Study)
            .where(Study.state == StudyState.RECEIVING, Study.last_received_at < now)
            .values(last_received_at=now)
        )
        count = int(getattr(result, "rowcount", 0) or 0)
    if count:
        emit(log, "study.stability_restarted", studies=count)
    return count
