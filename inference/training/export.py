"""Export of any torch generator to the node's model contract.

The ONNX file gets a dynamic batch axis (and dynamic height and width, so that any slice
size runs), an IR version and opset that onnxruntime 1.31 loads (onnx ≥ 1.23 would
write IR 14, which it refuses), and the model card in its ``metadata_props``. The
exported graph is then run through onnxruntime beside the torch module on a real
example: the export fails when the two differ by more than 1e-3 of the output's range,
and when the node's own validation (``inference.registry.load_model``) refuses the file.
"""

from __future__ import annotations

import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from inference.card import CARD_KEY, ModelCard, Spatial3D
from inference.geometry import FloatArray
from inference.registry import ModelError, load_model

IR_VERSION = 10
"""IR version written: onnxruntime 1.31 loads up to 11."""

OPSET = 17

RELATIVE_TOLERANCE = 1e-3


class ExportError(RuntimeError):
    """The export does not reproduce the torch module, or the node would refuse it."""


@dataclass(frozen=True)
class ExportReport:
    path: Path
    max_abs_difference: float
    output_range: float
    ir_version: int
    opset: int

    @property
    def tolerance(self) -> float:
        return RELATIVE_TOLERANCE * self.output_range

    def __str__(self) -> str:
        return (
            f"{self.path.name}: IR {self.ir_version}, opset {self.opset}; "
            f"max |onnxruntime - torch| = {self.max_abs_difference:.3g} "
            f"(tolerance {self.tolerance:.3g} = 1e-3 of the output range {self.output_range:.3g})"
        )


def _check_sample(card: ModelCard, sample: FloatArray) -> None:
    rank = 5 if isinstance(card.spatial, Spatial3D) else 4
    if sample.ndim != rank or sample.shape[1] != card.channels:
        raise ExportError(
            f"{card.key}: sample shape {sample.shape}, the card needs (N, {card.channels}, "
            f"{'D, ' if rank == 5 else ''}H, W)"
        )
    if any(n % card.tile_multiple for n in sample.shape[-2:]):
        raise ExportError(
            f"{card.key}: sample H, W {sample.shape[-2:]} are not multiples of "
            f"tile_multiple {card.tile_multiple}"
        )


def _to_onnx(module: torch.nn.Module, sample: torch.Tensor, opset: int) -> onnx.ModelProto:
    spatial_axes = {0: "N", sample.ndim - 2: "H", sample.ndim - 1: "W"}
    if sample.ndim == 5:
        spatial_axes[2] = "D"
    with tempfile.TemporaryDirectory() as folder, warnings.catch_warnings():
        warnings.simplefilter("ignore", category=DeprecationWarning)
        traced = Path(folder) / "traced.onnx"
        torch.onnx.export(
            module,
            (sample,),
            traced,
            dynamo=False,
            opset_version=opset,
            input_names=["input"],
            output_names=["output"],
            dynamic_axes={"input": spatial_axes, "output": spatial_axes},
            do_constant_folding=True,
        )
        return onnx.load(traced)


def export_model(
    module: torch.nn.Module,
    card: ModelCard,
    path: Path,
    sample: FloatArray,
    *,
    metadata: dict[str, str] | None = None,
    opset: int = OPSET,
    ir_version: int = IR_VERSION,
) -> ExportReport:
    """Writes ``module`` with ``card`` to ``path`` and proves the file against torch.

    ``sample`` is a realistic input batch (N, C, H, W) or (N, C, D, H, W): the export
    is traced with it and checked on it.
    """
    _check_sample(card, sample)
    module = module.eval()
    tensor = torch.from_numpy(np.ascontiguousarray(sample, dtype=np.float32))
    with torch.inference_mode():
        expected = module(tensor).numpy()
    model = _to_onnx(module, tensor, opset)
    model.ir_version = ir_version
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, {CARD_KEY: card.to_json(), **(metadata or {})})
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {session.get_inputs()[0].name: tensor.numpy()})
    report = ExportReport(
        path,
        float(np.abs(np.asarray(got) - expected).max()),
        float(expected.max() - expected.min()),
        ir_version,
        opset,
    )
    if not report.max_abs_difference <= report.tolerance:
        raise ExportError(f"{card.key}: onnxruntime does not reproduce torch: {report}")
    try:
        load_model(path, ["CPUExecutionProvider"])
    except ModelError as exc:
        raise ExportError(f"{card.key}: the node refuses the export: {exc}") from exc
    return report


def set_card(path: Path, card: ModelCard) -> None:
    """Replaces the card inside an exported file (e.g. to add validation figures)."""
    model = onnx.load(path)
    props = {p.key: p.value for p in model.metadata_props}
    props[CARD_KEY] = card.to_json()
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, props)
    onnx.save(model, path)
