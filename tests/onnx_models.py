"""Small ONNX models whose output is exactly predictable, for end-to-end numerics."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from inference.card import (
    CARD_KEY,
    InputSpec,
    LinearNorm,
    ModelCard,
    OutputSpec,
    Spatial2D,
    Spatial3D,
    Spatial25D,
)

IR_VERSION = 10
OPSET = 17


def linear_card(
    model_id: str = "mr-t1-to-ct",
    roles: Sequence[str] = ("T1",),
    output_role: str = "CT",
    modality: str = "CT",
    out_scale: float = 1.0,
    out_offset: float = 0.0,
    value_range: tuple[float, float] = (-1024.0, 3071.0),
    spatial: Spatial2D | Spatial25D | Spatial3D | None = None,
    version: str = "1.0.0",
    pixel_spacing_mm: tuple[float, float] | None = None,
    tile_multiple: int = 1,
) -> ModelCard:
    """Identity input normalisation; output = network · out_scale + out_offset."""
    return ModelCard(
        id=model_id,
        version=version,
        inputs=tuple(InputSpec(role=r, normalization=LinearNorm(scale=1.0)) for r in roles),
        output=OutputSpec(
            role=output_role,
            modality=modality,
            units="HU" if modality == "CT" else "arbitrary",
            denormalization=LinearNorm(scale=out_scale, offset=out_offset),
            value_range=value_range,
        ),
        spatial=spatial or Spatial2D(),
        pixel_spacing_mm=pixel_spacing_mm,
        tile_multiple=tile_multiple,
        intended_use="tests: exactly predictable affine map",
        training_data="none: weights set by hand",
    )


def conv1x1_model(
    path: Path, card: ModelCard, weights: Sequence[float], bias: float, ir_version: int = IR_VERSION
) -> Path:
    """y = Σ_c weights[c]·x[c] + bias, per voxel: a 1×1(×1) convolution."""
    three_d = isinstance(card.spatial, Spatial3D)
    channels = card.channels
    if len(weights) != channels:
        raise ValueError(f"{len(weights)} weights for {channels} channels")
    kernel = np.asarray(weights, dtype=np.float32).reshape(
        1, channels, *([1] * (3 if three_d else 2))
    )
    dims = ["N", channels, "D", "H", "W"] if three_d else ["N", channels, "H", "W"]
    out_dims = ["N", 1, *dims[2:]]
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w", "b"], ["y"])],
        "affine",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_dims)],
        initializer=[
            numpy_helper.from_array(kernel, "w"),
            numpy_helper.from_array(np.asarray([bias], dtype=np.float32), "b"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = ir_version
    helper.set_model_props(model, {CARD_KEY: card.to_json()})
    onnx.save(model, path)
    return path


def neighbour_model(path: Path, card: ModelCard, a: float, b: float) -> Path:
    """y[i] = a·x[i] + b·x[i+1] along columns (0 beyond the last column): a single-input
    2D model that does not commute with a left-right mirror, so test-time augmentation
    sees a spread of exactly |b|·|x[i+1] − x[i−1]| / 2 (before denormalisation)."""
    kernel = np.asarray([a, b], dtype=np.float32).reshape(1, 1, 1, 2)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], pads=[0, 0, 0, 1])],
        "neighbour",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, "H", "W"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1, "H", "W"])],
        initializer=[numpy_helper.from_array(kernel, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION
    helper.set_model_props(model, {CARD_KEY: card.to_json()})
    onnx.save(model, path)
    return path
