"""The package builds quietly: a first-time user reads a setuptools warning as a failure."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_wheel_builds_without_warnings_and_carries_the_migrations_and_dashboard(
    tmp_path: Path,
) -> None:
    source = tmp_path / "src"
    shutil.copytree(
        REPO,
        source,
        ignore=shutil.ignore_patterns(".git", "var", "build", "*.egg-info", "__pycache__", ".*"),
    )
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w",
         str(tmp_path / "out"), "."],
        cwd=source, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Warning" not in output, output
    (wheel,) = (tmp_path / "out").glob("dicom_node-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {
        "storage/migrations/env.py",
        "storage/migrations/script.py.mako",
        "storage/migrations/versions/0001_initial_schema.py",
        "dicom_node/api/templates/base.html",
        "dicom_node/api/templates/study.html",
        "dicom_node/api/static/dashboard.css",
        "dicom_node/api/static/dashboard.js",
    } <= names
