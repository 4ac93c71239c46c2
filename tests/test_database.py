"""The schema comes from the Alembic migrations, and they match the models exactly."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from conftest import write_config

from dicom_node.cli.main import main as cli
from storage.database import Database
from storage.models import Base


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
        assert conn.execute("SELECT version_num FROM alembic_version").fetchall() == [("0001",)]
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def _exit_status(argv: list[str]) -> int:
    try:
        return cli(argv)
    except SystemExit as exc:
        return int(exc.code or 0)


def _tables(path: Path) -> set[str]:
    with sqlite3.connect(path) as conn:
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}


@pytest.mark.parametrize("command", [["jobs", "list"], ["outbox", "list"]])
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
