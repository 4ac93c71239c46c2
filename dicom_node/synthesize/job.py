"""Infer and label: a job's input series → model → synthetic series in the spool, written.

A worker claims one job, decodes its inputs, judges them with the model's input guard
(as the route says: refuse, warn or off), runs the model (twice, input and mirrored
input, when the route asks for uncertainty), writes the output instances to the spool
(deterministic UIDs and file names, so a re-run overwrites) — and the uncertainty map
series when the route asks for it — and then commits in one transaction the output
rows (state ``written``, with the route's destinations), the audit records and the
job's end. A crash anywhere before that commit leaves the job to be claimed again;
nothing is half-delivered because the dispatch stage queues deliveries only for written
series (``dicom_node.dispatch.outbox``). The worker renews its lease while
it works (storage.heartbeat), and that commit — or the job's failure — is written only
while its claim still holds the job: a worker whose job was handed out again writes
nothing. A re-run whose series has fewer instances than the earlier version takes the
others out of the index (Q/R) in that commit, and removes their spool files after it.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from pydicom import dcmwrite
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from dicom_node import __version__
from dicom_node.config import Config
from dicom_node.dicom.attributes import number
from dicom_node.dicom.sop_classes import VOLUME_IMAGE_SOP_CLASSES
from dicom_node.dicom.uids import output_series_uid, uncertainty_series_uid
from dicom_node.evidence.keys import Signer
from dicom_node.evidence.marking import default_mark
from dicom_node.evidence.provenance import (
    GuardRecord,
    InputRecord,
    ProvenanceRecord,
    UncertaintyRecord,
)
from dicom_node.obs.logs import emit, get_logger
from dicom_node.obs.metrics import INFERENCE_SECONDS_PER_SLICE, JOB_DURATION
from dicom_node.synthesize.enhanced import CT_OUTPUT_SOP_CLASSES, build_output
from dicom_node.synthesize.input_guard import assess_inputs, enforce
from dicom_node.synthesize.label import Marking
from dicom_node.synthesize.progress import ProgressWriter
from dicom_node.synthesize.volume import SeriesVolume, VolumeError, load_series
from inference.card import ModelCard
from inference.geometry import Volume
from inference.predict import Augmentation, InferenceError
from inference.registry import LoadedModel, Registry
from inference.reorient import predict_in_plane
from inference.uncertainty import spread_figures
from storage.database import Database
from storage.heartbeat import Heartbeat
from storage.instances import SeriesAttributes, upsert_series
from storage.models import (
    AuditEvent,
    Instance,
    Job,
    JobState,
    OutputSeries,
    OutputState,
    Series,
)
from storage.queue import claim_job, finish, worker_name
from storage.spool import Spool, output_instance_key, output_series_key

log = get_logger("synthesize")


class JobError(ValueError):
    """The job cannot succeed as it stands (bad input, model gone); retrying won't help."""


@dataclass(frozen=True)
class ClaimedJob:
    id: int
    study_uid: str
    model_id: str
    model_version: str
    input_series: tuple[str, ...]
    send_to: tuple[str, ...]
    attempts: int
    claim: str


class _LeaseLost(Exception):
    """The job was handed out again while this worker ran it: its results are dropped."""


@dataclass(frozen=True)
class Output:
    series_uid: str
    sop_class_uid: str
    spool_key: str
    provenance: ProvenanceRecord
    description: str
    series_number: int | None
    members: tuple[tuple[str, int], ...]
    """(SOP Instance UID, size in bytes) of each instance, in slice order."""

    @property
    def instances(self) -> int:
        return len(self.members)


def _encode(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


class Synthesizer:
    """The infer + label stage; one instance per worker thread."""

    def __init__(
        self,
        config: Config,
        db: Database,
        spool: Spool,
        registry: Registry,
        clock: Callable[[], datetime],
        signer: Signer | None,
    ) -> None:
        self.config = config
        self.db = db
        self.spool = spool
        self.registry = registry
        self.clock = clock
        self.signer = signer
        self.name = worker_name("synthesize")

    def run_once(self) -> bool:
        """Claims and runs one job; False when there was none. The run's duration is
        observed by outcome (``dicomnode_job_duration_seconds``)."""
        job = self._claim()
        if job is None:
            return False
        started = time.monotonic()
        emit(
            log,
            "job.started",
            job_id=job.id,
            study_uid=job.study_uid,
            model=job.model_id,
            attempt=job.attempts,
        )
        with Heartbeat(self.db, Job, job.id, job.claim, self.lease, self.clock):
            try:
                outputs = self._synthesize(job)
            except (JobError, VolumeError, InferenceError, ValueError) as exc:  # InputRefused
                outcome = self._fail(job, str(exc), retry=False)
            except Exception as exc:  # the stage's outer loop: record, maybe retry, go on
                outcome = self._fail(job, f"{type(exc).__name__}: {exc}", retry=True)
            else:
                outcome = self._complete(job, outputs)
        JOB_DURATION.labels(outcome).observe(time.monotonic() - started)
        return True

    @property
    def lease(self) -> timedelta:
        return timedelta(seconds=self.config.scheduler.job_lease_seconds)

    def _claim(self) -> ClaimedJob | None:
        with self.db.session() as session:
            job = claim_job(session, self.name, self.clock(), self.lease)
            if job is None:
                return None
            return ClaimedJob(
                job.id,
                job.study.study_uid,
                job.model_id,
                job.model_version,
                tuple(job.input_series),
                tuple(job.send_to),
                job.attempts,
                str(job.claim),
            )

    def _model(self, job: ClaimedJob) -> LoadedModel:
        model = self.registry.get(job.model_id)
        if model is None:
            raise JobError(f"model {job.model_id} is not loaded on this node")
        if model.card.version != job.model_version:
            raise JobError(
                f"job was routed for {job.model_id} version {job.model_version}, "
                f"this node has version {model.card.version}"
            )
        return model

    def _inputs(self, job: ClaimedJob) -> list[SeriesVolume]:
        with self.db.session() as session:
            keys = {uid: _instance_keys(session, uid) for uid in job.input_series}
        volumes = []
        for uid in job.input_series:
            if not keys[uid]:
                raise JobError(f"series {uid}: no instances indexed")
            volumes.append(load_series([self.spool.path(k) for k in keys[uid]], uid))
        return volumes

    def _marking(self, card: ModelCard) -> Marking:
        route = self.config.route(card.id)
        mark = route.visible_mark if route and route.visible_mark else None
        return Marking(
            **self.config.synthetic.model_dump(),
            visible_mark=mark or default_mark(card.output.modality),
            signer=self.signer,
        )

    def _judge(
        self, job: ClaimedJob, card: ModelCard, sources: list[SeriesVolume]
    ) -> GuardRecord | None:
        """The route's input guard on the decoded inputs; raises ``InputRefused`` (the
        job fails, not retried) when a ``refuse`` route's input is out of distribution."""
        route = self.config.route(card.id)
        record = assess_inputs(card, sources, route.input_guard if route else "refuse")
        if record is not None:
            for verdict in record.refused:
                emit(
                    log,
                    "job.input_refused"
                    if record.mode == "refuse"
                    else "job.input_out_of_distribution",
                    40 if record.mode == "refuse" else 30,
                    job_id=job.id,
                    study_uid=job.study_uid,
                    model=card.key,
                    series_uid=verdict.series_uid,
                    role=verdict.role,
                    score=verdict.score,
                    threshold=verdict.threshold,
                    feature=verdict.feature,
                )
        enforce(card, record)
        return record

    def _predict(
        self, job: ClaimedJob, model: LoadedModel, sources: list[SeriesVolume]
    ) -> tuple[Volume, Volume | None, UncertaintyRecord | None]:
        """The output; its per-voxel spread when the route asks for the map; its
        uncertainty figures when the route asks for them. The job row follows the run's
        progress in slices (:mod:`dicom_node.synthesize.progress`)."""
        card = model.card
        volumes = [s.volume for s in sources]
        batch = self.config.inference.batch_size
        route = self.config.route(card.id)
        with ProgressWriter(self.db, job.id, job.claim) as progress:
            if route is not None and not route.uncertainty:
                return predict_in_plane(model, volumes, batch, progress=progress).output, None, None
            prediction = predict_in_plane(model, volumes, batch, Augmentation(), progress)
        figures = spread_figures(prediction.output.array, prediction.spread, card)
        record = UncertaintyRecord(
            method="test-time augmentation: per-voxel standard deviation across passes",
            passes=prediction.passes,
            units=card.output.units,
            region=figures.region,
            mean=round(figures.mean, 3),
            p95=round(figures.p95, 3),
        )
        spread = None
        if route is not None and route.uncertainty_map:
            spread = Volume(prediction.spread, prediction.output.geometry)
        return prediction.output, spread, record

    def _write(self, datasets: list[Dataset], provenance: ProvenanceRecord) -> Output:
        """Writes one series' instances to the spool (deterministic keys: a re-run
        overwrites) and describes what was written."""
        key = output_series_key(provenance.output_series_uid)
        members = []
        for index, ds in enumerate(datasets):
            size = self.spool.write(output_instance_key(key, index), _encode(ds))
            members.append((str(ds.SOPInstanceUID), size))
        first = datasets[0]
        return Output(
            provenance.output_series_uid,
            str(first.SOPClassUID),
            key,
            provenance,
            str(first.SeriesDescription),
            number(first, "SeriesNumber"),
            tuple(members),
        )

    def _synthesize(self, job: ClaimedJob) -> list[Output]:
        """The output series, then its uncertainty map series when the route asks."""
        model = self._model(job)
        card = model.card
        sources = self._inputs(job)
        guard = self._judge(job, card, sources)
        started = time.monotonic()
        result, spread, uncertainty = self._predict(job, model, sources)
        INFERENCE_SECONDS_PER_SLICE.labels(card.key).observe(
            (time.monotonic() - started) / max(1, result.array.shape[0])
        )
        now = self.clock()
        series_uid = output_series_uid(job.input_series, card.id, card.version)
        provenance = ProvenanceRecord(
            node_name=self.config.node.ae_title,
            node_version=__version__,
            ae_title=self.config.node.ae_title,
            model_id=card.id,
            model_version=card.version,
            model_sha256=model.sha256,
            providers=model.providers,
            inputs=tuple(
                InputRecord(role, s.series_uid, len(s.headers), s.pixel_sha256)
                for role, s in zip(card.input_roles, sources, strict=True)
            ),
            study_uid=job.study_uid,
            output_series_uid=series_uid,
            output_role=card.output.role,
            route_destinations=job.send_to,
            created_at=now.isoformat(),
            input_guard=guard,
            uncertainty=uncertainty,
        )
        marking = self._marking(card)
        route = self.config.route(card.id)
        form = route.output_format if route else "classic"
        outputs = [
            self._write(
                build_output(form, result, sources, card, provenance, marking, now), provenance
            )
        ]
        if spread is not None:
            of_map = replace(provenance, output_series_uid=uncertainty_series_uid(series_uid))
            datasets = build_output(
                form, spread, sources, card, of_map, marking, now, uncertainty_map=True
            )
            outputs.append(self._write(datasets, of_map))
        return outputs

    def _complete(self, job: ClaimedJob, outputs: list[Output]) -> str:
        """Commits every output series of the job (the synthetic image first, then its
        uncertainty map) and the job's end in one transaction; returns the outcome
        (``done``, or ``lease_lost`` when the claim no longer held the job)."""
        now = self.clock()
        try:
            with self.db.session() as session:
                if not finish(
                    session,
                    Job,
                    job.id,
                    job.claim,
                    state=JobState.DONE,
                    error=None,
                    output_series_uid=outputs[0].series_uid,
                    updated_at=now,
                ):
                    raise _LeaseLost
                before = [
                    _record_output(session, job, output, self.config.node.ae_title, now)
                    for output in outputs
                ]
        except _LeaseLost:
            self._lease_lost(job)
            return "lease_lost"
        for output, previous in zip(outputs, before, strict=True):
            self._remove_stale(output, previous)
        emit(
            log,
            "job.done",
            job_id=job.id,
            study_uid=job.study_uid,
            series_uid=outputs[0].series_uid,
            instances=outputs[0].instances,
            uncertainty_map=outputs[1].series_uid if len(outputs) > 1 else None,
            providers=list(outputs[0].provenance.providers),
            send_to=list(job.send_to),
        )
        return "done"

    def _fail(self, job: ClaimedJob, reason: str, retry: bool) -> str:
        """Records the job's failure, to be retried unless final; returns the outcome
        (``retry``, ``failed``, or ``lease_lost`` when the claim no longer held the job)."""
        now = self.clock()
        final = not retry or job.attempts >= self.config.scheduler.job_max_attempts
        with self.db.session() as session:
            held = finish(
                session,
                Job,
                job.id,
                job.claim,
                state=JobState.FAILED if final else JobState.PENDING,
                error=reason[:4000],
                updated_at=now,
            )
            if held:
                session.add(
                    AuditEvent(
                        at=now,
                        kind="job.failed" if final else "job.retry",
                        study_uid=job.study_uid,
                        job_id=job.id,
                        detail={"reason": reason[:4000], "attempt": job.attempts},
                    )
                )
        if not held:
            self._lease_lost(job)
            return "lease_lost"
        emit(
            log,
            "job.failed" if final else "job.retry",
            40,
            job_id=job.id,
            study_uid=job.study_uid,
            model=job.model_id,
            reason=reason[:500],
        )
        return "failed" if final else "retry"

    def _remove_stale(self, output: Output, previous: int) -> None:
        """Removes the spool files an earlier, longer version of ``output`` left past its
        end. Their rows went in the commit, so Q/R no longer serves them; the series is
        written again, so no delivery of it is claimed until the outbox re-arms them all. Done under
        the output row's lock and only while this version is still the committed one: a
        later run's files are its own."""
        if previous <= output.instances:
            return
        with self.db.session() as session:
            current = session.scalar(
                select(OutputSeries.instance_count)
                .where(OutputSeries.series_uid == output.series_uid)
                .with_for_update()
            )
            if current != output.instances:
                return
            removed = sum(
                self.spool.remove(output_instance_key(output.spool_key, index))
                for index in range(output.instances, previous)
            )
        emit(
            log,
            "series.stale_removed",
            series_uid=output.series_uid,
            instances=output.instances,
            previous_instances=previous,
            files_removed=removed,
        )

    def _lease_lost(self, job: ClaimedJob) -> None:
        emit(
            log,
            "job.lease_lost",
            30,
            job_id=job.id,
            study_uid=job.study_uid,
            model=job.model_id,
            attempt=job.attempts,
            note="the job was handed out again; this run's result is dropped",
        )


def _record_output(
    session: Session, job: ClaimedJob, output: Output, ae_title: str, now: datetime
) -> int:
    """One output series' row (written: the dispatch stage releases it and queues its
    deliveries), its index entries and its audit event;
    returns how many instances the version it replaces had (0 for a new series)."""
    row = session.scalar(select(OutputSeries).where(OutputSeries.series_uid == output.series_uid))
    previous = 0 if row is None else row.instance_count
    if row is None:
        row = OutputSeries(series_uid=output.series_uid, created_at=now)
        session.add(row)
    row.job_id = job.id
    row.study_uid = job.study_uid
    row.sop_class_uid = output.sop_class_uid
    row.spool_key = output.spool_key
    row.instance_count = output.instances
    row.model_key = f"{job.model_id}@{job.model_version}"
    row.provenance = output.provenance.to_dict()
    row.state = OutputState.WRITTEN
    row.send_to = list(job.send_to)
    session.flush()
    _index_output(session, job, output, ae_title, now)
    session.add(
        AuditEvent(
            at=now,
            kind="series.synthesized",
            study_uid=job.study_uid,
            series_uid=output.series_uid,
            job_id=job.id,
            detail=output.provenance.to_dict(),
        )
    )
    return previous


def _instance_keys(session: Session, series_uid: str) -> list[str]:
    """The series' image instances; other objects in it (raw data, presentation states,
    private objects) are no part of its volume (:mod:`dicom_node.dicom.sop_classes`)."""
    return list(
        session.scalars(
            select(Instance.spool_key)
            .join(Series, Series.id == Instance.series_id)
            .where(
                Series.series_uid == series_uid,
                Instance.sop_class_uid.in_(VOLUME_IMAGE_SOP_CLASSES),
            )
            .order_by(Instance.id)
        )
    )


def _index_output(
    session: Session, job: ClaimedJob, output: Output, ae_title: str, now: datetime
) -> None:
    """Makes the output queryable and retrievable like a received series (Q/R SCP),
    without re-opening its study: nothing new arrived from outside. Instances of an
    earlier version that this one lacks are taken out of the index."""
    study_id = session.get_one(Job, job.id).study_id
    series_id = upsert_series(
        session,
        study_id,
        output.series_uid,
        "CT" if output.sop_class_uid in CT_OUTPUT_SOP_CLASSES else "MR",
        output.sop_class_uid,
        SeriesAttributes(output.series_number, output.description[:64]),
    )
    session.execute(
        delete(Instance).where(
            Instance.series_id == series_id,
            Instance.sop_instance_uid.not_in([sop_uid for sop_uid, _ in output.members]),
        )
    )
    for index, (sop_uid, size) in enumerate(output.members):
        values = {
            "sop_class_uid": output.sop_class_uid,
            "transfer_syntax_uid": ExplicitVRLittleEndian,
            "spool_key": output_instance_key(output.spool_key, index),
            "size_bytes": size,
            "received_at": now,
            "calling_ae": ae_title,
            "instance_number": index + 1,
        }
        row = session.scalar(
            select(Instance).where(
                Instance.series_id == series_id, Instance.sop_instance_uid == sop_uid
            )
        )
        if row is None:
            session.add(Instance(series_id=series_id, sop_instance_uid=sop_uid, **values))
        else:
            for name, value in values.items():
                setattr(row, name, value)
