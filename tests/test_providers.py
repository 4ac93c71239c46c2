"""Execution providers: on a machine without a GPU (onnxruntime-gpu installed), loading
the models says once, in the node's own log, which providers run and why the others do
not — and ONNX Runtime prints nothing of its own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import write_config

REPO = Path(__file__).resolve().parents[1]
REQUESTED = ["CUDAExecutionProvider", "CPUExecutionProvider"]

LOADER = """
import sys
from dicom_node.config import load_config
from dicom_node.obs.logs import configure
from dicom_node.runtime.stages import load_models
configure("INFO")
load_models(load_config(sys.argv[1]))
"""


def test_loading_the_models_writes_only_json_lines_and_one_providers_line(
    tmp_path: Path,
) -> None:
    config = write_config(
        tmp_path, {"inference": {"providers": REQUESTED, "models_dir": str(REPO / "models")}}
    )
    result = subprocess.run(
        [sys.executable, "-c", LOADER, str(config)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=300,
        check=True,
    )
    events = []
    for line in result.stderr.splitlines():
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            raise AssertionError(f"not a JSON log line on stderr: {line!r}") from None
    (providers,) = [e for e in events if e["event"] == "inference.providers"]
    assert providers["providers_requested"] == REQUESTED
    in_use, unusable = providers["providers_in_use"], providers["unusable"]
    assert in_use[-1] == "CPUExecutionProvider"
    assert set(in_use) | set(unusable) == set(REQUESTED)
    assert all(reason for reason in unusable.values())
    loaded = [e for e in events if e["event"] == "model.loaded"]
    assert len(loaded) == 2
    assert all(e["providers_in_use"] == in_use for e in loaded)
