"""ONNX Runtime sessions, and the providers they really run on.

onnxruntime-gpu lists CUDAExecutionProvider as available whether or not CUDA can be
loaded, and a session that asks for it on a machine without CUDA prints ONNX Runtime's
own errors on stderr (twice per model) before it falls back to the CPU. So each requested
provider is probed once per process, on a one-node model with ONNX Runtime's log
silenced, and sessions ask only for those that work; why the others do not is kept for
the node's log (:class:`ProviderChoice`). The providers a session actually got are still
read back and reported, never assumed from the configuration.
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import onnxruntime as ort

CPU = "CPUExecutionProvider"

_PROBE_MODEL = bytes.fromhex(
    "080812003a3b0a100a017812017922084964656e74697479120570726f62655a0f0a0178120a0a0808"
    "0112040a020801620f0a0179120a0a08080112040a02080142040a00100d"
)
"""y = Identity(x) on float[1], IR version 8, opset 13 (``onnx.helper``, serialised)."""

_LIBRARIES = {"CUDAExecutionProvider": "cuda", "TensorrtExecutionProvider": "tensorrt"}
"""Providers that live in a library of their own, loaded when a session asks for them."""

_SILENT, _ORT_DEFAULT_SEVERITY = 4, 2
"""ONNX Runtime's default logger: fatal errors only while probing, then its default."""

_probed: dict[str, str | None] = {}
_probe_lock = threading.Lock()


@dataclass(frozen=True)
class ProviderChoice:
    """The configured providers, those that work here (in preference order, the CPU
    last) and, for each that does not, why."""

    requested: tuple[str, ...]
    in_use: tuple[str, ...]
    unusable: dict[str, str] = field(default_factory=dict)


def choose_providers(requested: Sequence[str]) -> ProviderChoice:
    """The usable subset of ``requested``; the CPU is always usable and always last."""
    available = set(ort.get_available_providers())
    in_use: list[str] = []
    unusable: dict[str, str] = {}
    for provider in requested:
        if provider == CPU:
            continue
        reason = _probe(provider) if provider in available else "not in this onnxruntime build"
        if reason is None:
            in_use.append(provider)
        else:
            unusable[provider] = reason
    return ProviderChoice(tuple(requested), (*in_use, CPU), unusable)


def _probe(provider: str) -> str | None:
    """None when a session on ``provider`` can be made here, else why not; once per
    process and provider."""
    with _probe_lock:
        if provider not in _probed:
            ort.set_default_logger_severity(_SILENT)
            try:
                session = ort.InferenceSession(_PROBE_MODEL, providers=[provider, CPU])
                works = provider in session.get_providers()
            except Exception:  # onnxruntime's errors have no common base class
                works = False
            finally:
                ort.set_default_logger_severity(_ORT_DEFAULT_SEVERITY)
            _probed[provider] = None if works else _why_unusable(provider)
        return _probed[provider]


def _why_unusable(provider: str) -> str:
    """The loader's reason when the provider's library cannot load (a CUDA or cuDNN
    library missing, say), else ONNX Runtime's general one."""
    name = _LIBRARIES.get(provider)
    if name is not None:
        library = Path(ort.__file__).parent / "capi" / f"libonnxruntime_providers_{name}.so"
        try:
            ctypes.CDLL(str(library))
        except OSError as exc:
            return f"its library cannot be loaded: {exc}"
    return "onnxruntime cannot create it here (no usable device or driver)"


def open_session(
    path: Path, providers: Sequence[str], intra_op_threads: int = 0
) -> ort.InferenceSession:
    """Loads ``path`` on the first usable provider of ``providers`` (in order)."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    if intra_op_threads:
        options.intra_op_num_threads = intra_op_threads
    wanted = choose_providers(providers).in_use
    return ort.InferenceSession(str(path), sess_options=options, providers=list(wanted))


def providers_in_use(session: ort.InferenceSession) -> tuple[str, ...]:
    return tuple(session.get_providers())
