"""What the HTTP side shares with the rest of the node."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from dicom_node.config import Config
from storage.database import Database
from storage.spool import Spool


@dataclass(frozen=True)
class WebContext:
    """The configuration, database, spool and clock the API and dashboard work on; the
    same the other stages of the process use (or, in a process of its own, the same
    database and spool)."""

    config: Config
    db: Database
    spool: Spool
    clock: Callable[[], datetime]
