"""The heartbeat of a claim: a living worker renews its row's lease while it works.

A lease only says how long a worker may be silent before its row is handed out again (a
worker on another host died). A job on a large study, or a delivery to a slow
destination, can take longer than any fixed lease; the heartbeat renews it every third of
the lease from a thread of its own, so the row of a worker that is alive is never handed
out again, and the row of one that died is, one lease after its last beat. A worker hung
inside its process keeps beating: the timeouts of what it waits on (network, model) end
that.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from types import TracebackType

from sqlalchemy.exc import OperationalError

from storage.database import Database
from storage.queue import Claimed, renew


class Heartbeat:
    """``with Heartbeat(...):`` renews the lease of row ``row_id`` of ``table`` while the
    block runs and this claim holds the row; :attr:`lost` is set once it no longer does
    (handed out again, or re-armed)."""

    def __init__(
        self,
        db: Database,
        table: Claimed,
        row_id: int,
        claim: str,
        lease: timedelta,
        clock: Callable[[], datetime],
    ) -> None:
        self.db = db
        self.table = table
        self.row_id = row_id
        self.claim = claim
        self.lease = lease
        self.clock = clock
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._beat, name=f"heartbeat-{table.__tablename__}-{row_id}", daemon=True
        )

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join()

    def _beat(self) -> None:
        interval = self.lease.total_seconds() / 3
        while not self._stop.wait(interval):
            try:
                with self.db.session() as session:
                    held = renew(
                        session, self.table, self.row_id, self.claim, self.clock() + self.lease
                    )
            except OperationalError:
                continue  # the database was locked or unreachable: the next beat tries again
            if not held:
                self.lost.set()
                return
