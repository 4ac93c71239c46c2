"""Engine and sessions: SQLite (WAL) by default, PostgreSQL through the same code.

The schema is brought to the newest Alembic revision when the node starts, so an
upgraded node migrates an older database in place and never runs on a stale schema.
Read-only users (the CLI's listings, `roles explain`) open it with ``read_only=True``:
they never create, migrate or write it, and refuse a schema that is not the newest.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS_DIR = Path(__file__).with_name("migrations")


class DatabaseUnavailable(RuntimeError):
    """A read-only user found no database, or one whose schema is not the newest."""


def _sqlite_pragmas(engine: Engine, read_only: bool) -> None:
    """WAL for concurrent readers; every transaction takes the write lock up front.

    ``BEGIN IMMEDIATE`` avoids the deadlock SQLite answers with "database is locked"
    when two transactions both try to upgrade a read lock; NORMAL synchronous in WAL
    mode survives a process crash, and the spool (fsynced) is the source of truth that
    start-up reconciliation re-indexes after a power loss. A read-only engine sets
    neither the journal mode (that is a write) nor takes the write lock, and refuses
    every write (``query_only``).
    """

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        if read_only:
            cursor.execute("PRAGMA query_only=ON")
        else:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=60000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


def create_database_engine(url: str, *, read_only: bool = False) -> Engine:
    """An engine for ``url``; for SQLite the file's folder is created owner-only, unless
    ``read_only``, which refuses a missing file and every write.

    Statement parameters are kept out of error messages: they carry patient names and
    IDs, which must never reach a log.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            path = Path(parsed.database)
            if read_only and not path.is_file():
                raise DatabaseUnavailable(f"no database at {path}")
            if not read_only:
                path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                _create_private(path)
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 60},
            hide_parameters=True,
        )
        _sqlite_pragmas(engine, read_only)
        return engine
    return create_engine(
        url,
        pool_pre_ping=True,
        pool_size=10,
        max_overflow=20,
        hide_parameters=True,
        connect_args={"options": "-c default_transaction_read_only=on"} if read_only else {},
    )


def _create_private(path: Path) -> None:
    """Creates the SQLite file readable by its owner only, before SQLite opens it."""
    if not path.exists():
        fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)
        os.close(fd)


def _alembic_config() -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    return cfg


def migrate(engine: Engine) -> None:
    """Upgrades the schema to the newest revision (creates it on an empty database)."""
    cfg = _alembic_config()
    with engine.connect() as connection:
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, "head")


def _check_schema_current(engine: Engine) -> None:
    """Raises :class:`DatabaseUnavailable` unless the schema is at the newest revision."""
    heads = set(ScriptDirectory.from_config(_alembic_config()).get_heads())
    with engine.connect() as connection:
        current = set(MigrationContext.configure(connection).get_current_heads())
    if current != heads:
        raise DatabaseUnavailable(
            f"database schema at revision {', '.join(sorted(current)) or '(none)'}, this "
            f"dicom-node reads {', '.join(sorted(heads))}: `dicom-node serve` migrates it "
            "at start"
        )


class Database:
    """The engine plus a session factory; one per process.

    ``read_only``: for commands that only look (listings, dry runs): nothing is created,
    migrated or written, and a schema other than the newest is refused.
    """

    def __init__(self, url: str, *, run_migrations: bool = True, read_only: bool = False) -> None:
        self.url = url
        self.engine = create_database_engine(url, read_only=read_only)
        if read_only:
            try:
                _check_schema_current(self.engine)
            except DatabaseUnavailable:
                self.engine.dispose()
                raise
        elif run_migrations:
            migrate(self.engine)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A unit of work: committed when the block ends, rolled back if it raises."""
        with self._sessions() as session, session.begin():
            yield session

    @contextmanager
    def connection(self) -> Iterator[Connection]:
        """A Core transaction without the ORM: for the receive stage's hot path."""
        with self.engine.begin() as conn:
            yield conn

    def dispose(self) -> None:
        self.engine.dispose()
