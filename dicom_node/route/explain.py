"""`dicom-node roles explain`: routing as a dry run, the way other routers' rule testers
work — per series, the exclusion or role rule that matched, or each role's nearest rule
and the conditions it failed on; per role, the series chosen among several; per route,
the job that would run or why none would. Nothing is written.

The series come from files (a folder sent by hand, a study exported from the PACS) or
from the node's own database (a study it received), read exactly as routing reads them.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import pydicom
from pydicom.errors import InvalidDicomError
from sqlalchemy import select

from dicom_node.config import Config
from dicom_node.dicom.attributes import number
from dicom_node.dicom.sop_classes import is_volume_image
from dicom_node.roles.rules import recognise
from dicom_node.route.assembly import study_series
from dicom_node.route.routing import SeriesInfo, decide, study_roles, why_not_image
from inference.card import ModelCard
from storage.database import Database, DatabaseUnavailable
from storage.models import Study
from storage.spool import Spool


class ExplainError(ValueError):
    """Nothing to explain: the path holds no DICOM file, or the node has no such study."""


def series_from_files(paths: Iterable[Path]) -> list[SeriesInfo]:
    """The series among ``paths`` as routing would see them (headers only)."""
    by_series: dict[str, list[pydicom.Dataset]] = defaultdict(list)
    for path in paths:
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            by_series[str(ds.SeriesInstanceUID)].append(ds)
        except (InvalidDicomError, OSError, AttributeError, EOFError, ValueError):
            continue
    infos = []
    for uid, headers in by_series.items():
        images: list[pydicom.Dataset] = []
        others: list[pydicom.Dataset] = []
        for h in headers:
            (images if is_volume_image(str(h.get("SOPClassUID", ""))) else others).append(h)
        header = (images or headers)[0]
        infos.append(
            SeriesInfo(
                series_uid=uid,
                header=header,
                sop_instance_uids=tuple(str(h.SOPInstanceUID) for h in images),
                series_number=number(header, "SeriesNumber"),
                other_objects=tuple(str(h.get("SOPClassUID", "")) for h in others),
            )
        )
    if not infos:
        raise ExplainError("no DICOM file with a Series Instance UID there")
    return sorted(infos, key=lambda s: (s.series_number or 0, s.series_uid))


def series_from_database(config: Config, study_uid: str) -> tuple[list[SeriesInfo], str | None]:
    """A received study's series, and the destination its sender stands for (if any)."""
    try:
        db = Database(config.database_url, read_only=True)
    except DatabaseUnavailable as exc:
        raise ExplainError(str(exc)) from exc
    try:
        with db.session() as session:
            study = session.scalar(select(Study).where(Study.study_uid == study_uid))
            if study is None:
                raise ExplainError(f"study {study_uid}: not held by this node")
            series = study_series(session, study, Spool(config.spool_dir))
            sender = config.destination_for_ae(study.last_calling_ae)
    finally:
        db.dispose()
    return series, sender.name if sender else None


def _title(s: SeriesInfo) -> str:
    header = s.header
    others = f", {len(s.other_objects)} other object(s) left out" if s.other_objects else ""
    return (
        f"series {s.series_uid} (#{s.series_number if s.series_number is not None else '?'}, "
        f"{header.get('Modality', '?')}, {len(s.sop_instance_uids)} image(s){others}) "
        f"{str(header.get('SeriesDescription', '') or '(no description)')!r}"
    )


def explain(
    series: Sequence[SeriesInfo],
    config: Config,
    cards: Mapping[str, ModelCard],
    sender: str | None,
) -> list[str]:
    """The dry run's report, one line each."""
    lines = []
    for s in series:
        lines.append(_title(s))
        reason = why_not_image(s)
        if reason is not None:
            lines.append(f"  plays no role: {reason}")
            continue
        recognition = recognise(s.header, config.series_roles, config.series_exclusions)
        lines.extend(f"  {line}" for line in recognition.reasons())
    roles = study_roles(series, config.series_roles, config.series_exclusions)
    for role, candidates in roles.by_role.items():
        chosen = roles.best(role)
        others = len(candidates) - 1
        why = (
            f" (chosen over {others}: fewest roles, then no contrast agent, finest voxels, "
            "most images, lowest Series Number)"
            if others
            else ""
        )
        lines.append(f"{role}: series {chosen.series_uid}{why}")
    for d in decide(
        series, config.series_roles, config.routes, cards, sender, config.series_exclusions
    ):
        if d.plan is None:
            lines.append(f"route {d.model}: no job, {d.reason}")
        else:
            inputs = ", ".join(
                f"{role}={s.series_uid}"
                for role, s in zip(d.plan.card.input_roles, d.plan.inputs, strict=True)
            )
            lines.append(f"route {d.model}: job on {inputs}, to {', '.join(d.plan.send_to)}")
    return lines
