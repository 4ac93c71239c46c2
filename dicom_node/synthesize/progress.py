"""A running job's progress, written to its row for the API and the dashboard.

Inference reports ``(done, total)`` after every batch; this writer keeps only the latest
figure and a thread of its own writes it to the job row in a short transaction of its
own, at most once per ``interval_s``, and the last figure once more when the job's model
run ends. Inference never waits for the database: a locked or unreachable database
costs a progress update, never a batch.
"""

from __future__ import annotations

import threading
from types import TracebackType

from sqlalchemy import update
from sqlalchemy.exc import SQLAlchemyError

from dicom_node.obs.logs import emit, get_logger
from storage.database import Database
from storage.models import Job

log = get_logger("synthesize")


class ProgressWriter:
    """``with ProgressWriter(db, job_id, claim) as progress:`` pass ``progress`` as
    inference's callback; only the claim holding the job writes."""

    def __init__(self, db: Database, job_id: int, claim: str, interval_s: float = 1.0) -> None:
        self.db = db
        self.job_id = job_id
        self.claim = claim
        self.interval_s = interval_s
        self._latest: tuple[int, int] | None = None
        self._written: tuple[int, int] | None = None
        self._changed = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name=f"progress-{job_id}", daemon=True)

    def __call__(self, done: int, total: int) -> None:
        with self._changed:
            self._latest = (done, total)
            self._changed.notify()

    def __enter__(self) -> ProgressWriter:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        with self._changed:
            self._stop = True
            self._changed.notify()
        self._thread.join()
        self._write()

    def _run(self) -> None:
        while True:
            with self._changed:
                while not self._stop and self._latest == self._written:
                    self._changed.wait()
                if self._stop:
                    return
            self._write()
            with self._changed:
                self._changed.wait_for(lambda: self._stop, timeout=self.interval_s)

    def _write(self) -> None:
        with self._changed:
            figure = self._latest
        if figure is None or figure == self._written:
            return
        try:
            with self.db.session() as session:
                session.execute(
                    update(Job)
                    .where(Job.id == self.job_id, Job.claim == self.claim)
                    .values(slices_done=figure[0], slices_total=figure[1])
                )
        except SQLAlchemyError as exc:
            emit(log, "job.progress_not_written", 30, job_id=self.job_id, error=str(exc))
            return
        self._written = figure
