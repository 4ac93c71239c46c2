"""The models the node can run: every ``*.onnx`` in ``models_dir``, validated at start.

A model is refused, with a message naming the file and every problem, when its card is
missing or invalid, when ONNX Runtime cannot load it (IR version or opset too new), when
its tensors do not fit its card, or when a trial run gives no sensible output. Refused
models are reported and skipped; the others serve.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort

from inference.card import ModelCard, ModelCardError, Spatial3D, parse_card
from inference.session import ProviderChoice, choose_providers, open_session, providers_in_use


class ModelError(ValueError):
    """A model cannot be used; the message names the file and the problems."""


@dataclass(frozen=True)
class LoadedModel:
    card: ModelCard
    path: Path
    sha256: str
    session: ort.InferenceSession
    providers: tuple[str, ...]

    @property
    def input_name(self) -> str:
        return str(self.session.get_inputs()[0].name)


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _graph_problems(session: ort.InferenceSession) -> list[str]:
    """What is wrong with the graph's tensors whatever its card says."""
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1 or len(outputs) != 1:
        return [
            f"needs exactly one input and one output tensor, has {len(inputs)} and {len(outputs)}"
        ]
    if inputs[0].type != "tensor(float)":
        return [f"input tensor type is {inputs[0].type}, expected tensor(float)"]
    return []


def _tensor_problems(session: ort.InferenceSession, card: ModelCard) -> list[str]:
    problems: list[str] = []
    inputs, outputs = session.get_inputs(), session.get_outputs()
    rank = 5 if isinstance(card.spatial, Spatial3D) else 4
    shape_in, shape_out = inputs[0].shape, outputs[0].shape
    if len(shape_in) != rank:
        problems.append(
            f"input tensor has rank {len(shape_in)}, a {card.spatial.mode} model "
            f"needs {rank} (N, C, {'D, ' if rank == 5 else ''}H, W)"
        )
    elif isinstance(shape_in[1], int) and shape_in[1] != card.channels:
        problems.append(
            f"input tensor has {shape_in[1]} channels, the card implies {card.channels}"
        )
    if len(shape_out) != rank:
        problems.append(f"output tensor has rank {len(shape_out)}, expected {rank}")
    elif isinstance(shape_out[1], int) and shape_out[1] != 1:
        problems.append(f"output tensor has {shape_out[1]} channels, expected 1")
    return problems


def _trial_problems(session: ort.InferenceSession, card: ModelCard) -> list[str]:
    """Runs one small input through the model and checks the output's shape and values."""
    m = card.tile_multiple
    spatial: tuple[int, ...]
    if isinstance(card.spatial, Spatial3D):
        spatial = card.spatial.patch
    else:
        side = max(m, ((64 + m - 1) // m) * m)
        spatial = (side, side)
    shape = (1, card.channels, *spatial)
    ramp = np.linspace(0, 1, int(np.prod(shape)), dtype=np.float32).reshape(shape)
    try:
        (out,) = session.run(None, {session.get_inputs()[0].name: ramp})
    except Exception as exc:  # onnxruntime raises its own exception types
        return [f"trial run on a {shape} input failed: {exc}"]
    expected = (1, 1, *spatial)
    if tuple(out.shape) != expected:
        return [f"trial run: output shape {tuple(out.shape)}, expected {expected}"]
    if not np.all(np.isfinite(out)):
        return ["trial run: output has NaN or infinite values"]
    return _range_problems(np.asarray(out, dtype=np.float64), card)


def _range_problems(out: np.ndarray, card: ModelCard) -> list[str]:
    """The trial output, denormalised, must land at least partly inside the card's value
    range: entirely outside, every output would be clipped to a constant."""
    spec = card.output
    values = out * spec.denormalization.scale + spec.denormalization.offset
    lo, hi = spec.value_range
    if np.any((values >= lo) & (values <= hi)):
        return []
    return [
        f"trial run: every output value ({values.min():.4g} to {values.max():.4g} "
        f"{spec.units}) lies outside value_range {spec.value_range} once denormalised "
        f"(scale {spec.denormalization.scale:g}, offset {spec.denormalization.offset:g}): "
        "the denormalisation or the range is wrong"
    ]


def load_model(path: Path, providers: Sequence[str], intra_op_threads: int = 0) -> LoadedModel:
    """Loads and validates one model file; raises ModelError listing every problem."""
    name = path.name
    try:
        session = open_session(path, providers, intra_op_threads)
    except Exception as exc:  # onnxruntime's load errors have no common base class
        raise ModelError(f"{name}: onnxruntime cannot load it: {exc}") from exc
    problems = _graph_problems(session)
    try:
        card = parse_card(dict(session.get_modelmeta().custom_metadata_map), name)
    except ModelCardError as exc:
        raise ModelError("; ".join([str(exc), *problems])) from exc
    problems = problems or _tensor_problems(session, card) or _trial_problems(session, card)
    if problems:
        raise ModelError(f"{name} ({card.key}): " + "; ".join(problems))
    return LoadedModel(card, path, file_sha256(path), session, providers_in_use(session))


@dataclass
class Registry:
    """Valid models by id, what was refused, and the providers chosen for them."""

    models: dict[str, LoadedModel] = field(default_factory=dict)
    refused: list[str] = field(default_factory=list)
    providers: ProviderChoice | None = None

    def __iter__(self) -> Iterator[LoadedModel]:
        return iter(self.models.values())

    def get(self, model_id: str) -> LoadedModel | None:
        return self.models.get(model_id)

    @property
    def cards(self) -> dict[str, ModelCard]:
        return {k: m.card for k, m in self.models.items()}


def load_registry(
    models_dir: Path, providers: Sequence[str], intra_op_threads: int = 0
) -> Registry:
    """Every valid model in ``models_dir``; two files with one model id: the first wins."""
    registry = Registry(providers=choose_providers(providers))
    if not models_dir.is_dir():
        registry.refused.append(f"{models_dir}: models folder does not exist")
        return registry
    for path in sorted(models_dir.glob("*.onnx")):
        try:
            model = load_model(path, providers, intra_op_threads)
        except ModelError as exc:
            registry.refused.append(str(exc))
            continue
        known = registry.models.get(model.card.id)
        if known is not None:
            registry.refused.append(
                f"{path.name}: model id {model.card.id} already provided by {known.path.name}"
            )
            continue
        registry.models[model.card.id] = model
    return registry
