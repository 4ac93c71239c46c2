"""Shared fixtures: real Orthanc servers, a running node, and models with known output."""

from __future__ import annotations

import logging
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
import yaml
from sqlalchemy import delete

from dicom_node.config import Config, load_config
from dicom_node.evidence.keys import create_self_signed
from dicom_node.runtime.node import Node
from inference.card import RoleGuard
from inference.training.guard_cases import t1_cases
from inference.training.guard_fit import fit_role_guard
from onnx_models import conv1x1_model, linear_card
from peers import Orthanc, PostgresServer, free_port
from storage.database import Database
from storage.models import Base

pydicom.config.settings.writing_validation_mode = pydicom.config.RAISE


@pytest.fixture(autouse=True)
def _logging_restored() -> Iterator[None]:
    """A CLI command run in process sets up the node's logging (root handlers, level,
    ``warnings.showwarning``); the next test gets pytest's back."""
    root = logging.getLogger()
    handlers, level, show = list(root.handlers), root.level, warnings.showwarning
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    warnings.showwarning = show


@pytest.fixture(scope="session")
def signing_keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """One key pair for every test node: making an RSA key per node would be slow."""
    folder = tmp_path_factory.mktemp("signing")
    key, cert = folder / "signing.key", folder / "signing.crt"
    create_self_signed(key, cert, common_name="dicom-node tests")
    return key, cert


@pytest.fixture(scope="session")
def t1_guard() -> RoleGuard:
    """A T1 input guard fitted on six small simulated heads, each at its own acquisition
    and in every variant the guard must accept (36 volumes, about half a minute)."""
    seeds = list(range(300, 306))
    return fit_role_guard(
        (case.volume for case in t1_cases(seeds, fast=True)),
        fitted_on="tests: simulated T1w, seeds 300-305, fast acquisitions",
    )


@pytest.fixture
def orthanc_factory(tmp_path: Path) -> Iterator[Callable[..., Orthanc]]:
    started: list[Orthanc] = []

    def make(name: str = "orthanc", **kwargs: Any) -> Orthanc:
        server = Orthanc(folder=tmp_path / name, **kwargs).start()
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


@pytest.fixture
def models_dir(tmp_path: Path) -> Path:
    """A models folder with `mr-t1-to-ct`: HU = 2·T1 − 1000, exactly."""
    folder = tmp_path / "models"
    folder.mkdir()
    conv1x1_model(folder / "mr-t1-to-ct.onnx", linear_card(), weights=[2.0], bias=-1000.0)
    return folder


def write_config(
    folder: Path, overrides: dict[str, Any], keys: tuple[Path, Path] | None = None
) -> Path:
    """A config.yaml for a test node on a free port, with fast stability and polling."""
    base: dict[str, Any] = {
        "node": {
            "ae_title": "DICOMNODE",
            "host": "127.0.0.1",
            "port": free_port(),
            "stable_seconds": 1.0,
        },
        "storage": {
            "database_url": "sqlite:///var/node.db",
            "spool_dir": "var/spool",
            "min_free_bytes": 0,
        },
        "inference": {"providers": ["CPUExecutionProvider"], "models_dir": "models"},
        "scheduler": {"poll_seconds": 0.1},
        "dispatch": {"backoff_initial_s": 0.5, "backoff_max_s": 2.0},
        "api": {"host": "127.0.0.1", "port": free_port()},
    }
    if keys is not None:
        base["signing"] = {"key_file": str(keys[0]), "certificate_file": str(keys[1])}
    for section, values in overrides.items():
        if isinstance(values, dict) and isinstance(base.get(section), dict):
            base[section] = {**base[section], **values}
        else:
            base[section] = values
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(base))
    return path


@pytest.fixture
def node_factory(tmp_path: Path, signing_keys: tuple[Path, Path]) -> Iterator[Callable[..., Node]]:
    """Starts in-process nodes from config overrides; stops them at the end."""
    running: list[Node] = []

    def make(overrides: dict[str, Any] | None = None, folder: Path | None = None) -> Node:
        config: Config = load_config(
            write_config(folder or tmp_path, overrides or {}, signing_keys)
        )
        node = Node(config)
        node.start()
        running.append(node)
        return node

    yield make
    for node in running:
        node.stop(drain_s=5)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One PostgreSQL server for the session, in a folder the postgres user can reach
    (pytest's own temporary folders are private to the user running the tests)."""
    folder = Path(tempfile.mkdtemp(prefix="dicom-node-pg-"))
    server = PostgresServer(folder).start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def postgres_database(postgres: PostgresServer) -> Iterator[Database]:
    """The session's PostgreSQL, migrated; emptied after the test."""
    db = Database(postgres.url)
    yield db
    with db.session() as session:
        for table in reversed(Base.metadata.sorted_tables):
            session.execute(delete(table))
    db.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A migrated database of each kind the node runs on: a test taking it runs twice."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'var' / 'node.db'}"
    database: Database = request.getfixturevalue("postgres_database")
    return database.url


def sends_to(port: int, ae_title: str = "ORTHANC", model: str = "mr-t1-to-ct") -> dict[str, Any]:
    """Config overrides: one destination "pacs" on loopback, and the route that feeds it."""
    return {
        "destinations": [{"name": "pacs", "ae_title": ae_title, "host": "127.0.0.1", "port": port}],
        "routes": [{"model": model, "send_to": ["pacs"]}],
    }
