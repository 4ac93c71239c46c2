"""ONNX Runtime sessions, and the providers they really run on.

onnxruntime-gpu falls back to the CPU when CUDA cannot be used, with only a warning on
stderr; the providers a session actually got are therefore read back and reported,
never assumed from the configuration.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import onnxruntime as ort

log = logging.getLogger("inference.session")


def open_session(
    path: Path, providers: Sequence[str], intra_op_threads: int = 0
) -> ort.InferenceSession:
    """Loads ``path`` on the first usable provider of ``providers`` (in order)."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    if intra_op_threads:
        options.intra_op_num_threads = intra_op_threads
    available = set(ort.get_available_providers())
    wanted = [p for p in providers if p in available] or ["CPUExecutionProvider"]
    return ort.InferenceSession(str(path), sess_options=options, providers=wanted)


def providers_in_use(session: ort.InferenceSession) -> tuple[str, ...]:
    return tuple(session.get_providers())
