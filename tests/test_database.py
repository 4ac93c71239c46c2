"""The schema comes from the Alembic migrations, and they match the models exactly."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config as AlembicConfig
from alembic.migration import MigrationContext
from conftest import write_config
from sqlalchemy import create_engine

from dicom_node.cli.main import main as cli
from storage.database import MIGRATIONS_DIR, Database
from storage.models import Base, Job, JobState
from storage.queue import release_abandoned


def test_migrations_build_exactly_the_models_schema(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'node.db'}")
    with db.engine.connect() as conn:
        differences = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert differences == []


def test_start_up_migrates_an_empty_database_once_and_records_the_revision(tmp_path: Path) -> None:
    path = tmp_path / "node.db"
    Database(f"sqlite:///{path}").dispose()
    Database(f"sqlite:///{path}").dispose()
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT version_num FROM alembic_version").fetchall() == [("0005",)]
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def _exit_status(argv: list[str]) -> int:
    try:
        return cli(argv)
    except SystemExit as exc:
        return int(exc.code or 0)


def _tables(path: Path) -> set[str]:
    with sqlite3.connect(path) as conn:
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}


@pytest.mark.parametrize(
    "command",
    [["jobs", "list"], ["outbox", "list"], ["studies", "list"], ["review", "list", "--json"]],
)
def test_read_only_commands_never_migrate_or_create_the_database(
    tmp_path: Path, command: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    config = str(write_config(tmp_path, {}))
    database = tmp_path / "var" / "node.db"

    assert _exit_status(["--config", config, *command]) == 2
    assert not database.exists(), "a listing created the database"
    assert "no database" in capsys.readouterr().err

    database.parent.mkdir(parents=True)
    with sqlite3.connect(database) as conn:  # a database the node has not migrated
        conn.execute("CREATE TABLE unrelated (x INTEGER)")
    before = database.read_bytes()
    assert _exit_status(["--config", config, *command]) == 2
    assert "dicom-node serve" in capsys.readouterr().err  # says how to migrate it
    assert _tables(database) == {"unrelated"}
    assert database.read_bytes() == before

    Database(f"sqlite:///{database}").dispose()  # what `serve` does at start
    before = database.read_bytes()
    assert _exit_status(["--config", config, *command]) == 0
    assert database.read_bytes() == before


def test_a_database_of_revision_0001_is_upgraded_keeping_its_running_work(tmp_path: Path) -> None:
    """A node from before claim tokens stopped with a job running: the upgraded node adds
    the column, keeps the row, and hands it out again once its lease has run out."""
    path = tmp_path / "node.db"
    alembic = AlembicConfig()
    alembic.set_main_option("script_location", str(MIGRATIONS_DIR))
    engine = create_engine(f"sqlite:///{path}")
    with engine.begin() as conn:
        alembic.attributes["connection"] = conn
        command.upgrade(alembic, "0001")
        conn.exec_driver_sql(
            "INSERT INTO study (id, study_uid, state, first_received_at, last_received_at, "
            "last_calling_ae, patient_name, patient_id, patient_birth_date, patient_sex, "
            "study_date, study_time, accession_number, study_id, study_description, "
            "referring_physician_name) VALUES (1, '1.2.3', 'routed', '2026-01-01 12:00:00', "
            "'2026-01-01 12:00:00', 'X', '', '', '', '', '', '', '', '', '', '')"
        )
        conn.exec_driver_sql(
            "INSERT INTO job (id, study_id, model_id, model_version, input_series, "
            "fingerprint, send_to, state, attempts, created_at, updated_at, lease_until, "
            "worker) VALUES (1, 1, 'm', '1', '[]', 'f', '[]', 'running', 1, "
            "'2026-01-01 12:00:00', '2026-01-01 12:00:00', '2026-01-01 12:15:00', "
            "'another-host:1:1:synthesize')"
        )
    engine.dispose()

    db = Database(f"sqlite:///{path}")
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT version_num FROM alembic_version").fetchall() == [("0005",)]
    with db.session() as session:
        assert release_abandoned(session, datetime(2026, 1, 1, 12, 16, tzinfo=UTC), 3, 10) == (
            1,
            0,
        )
        job = session.get_one(Job, 1)
        assert (job.state, job.claim) == (JobState.PENDING, None)
