"""Inference: model cards, model loading and refusal, normalisation, and exact numerics of
translate() for 2D, 2.5D and 3D models, padding, resampling and multi-input grids."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from inference.card import (
    CARD_KEY,
    ForegroundNorm,
    LinearNorm,
    ModelCard,
    ModelCardError,
    PercentileNorm,
    Spatial3D,
    Spatial25D,
    ZScoreNorm,
    parse_card,
)
from inference.foreground import foreground_mask, otsu_threshold
from inference.geometry import Geometry, Volume
from inference.normalize import denormalize, normalize
from inference.predict import InferenceError, translate
from inference.registry import LoadedModel, ModelError, load_model, load_registry
from onnx_models import IR_VERSION, OPSET, conv1x1_model, linear_card

CPU = ["CPUExecutionProvider"]
WIDE_MR = (-1.0e6, 1.0e6)


# --- building models and volumes ---------------------------------------------------------


def _save_model(
    path: Path,
    nodes: Sequence[onnx.NodeProto],
    x_dims: Sequence[int | str],
    y_dims: Sequence[int | str],
    initializers: Sequence[np.ndarray] = (),
    names: Sequence[str] = (),
    card_json: str | None = None,
    ir_version: int = IR_VERSION,
    extra_outputs: Sequence[str] = (),
) -> Path:
    graph = helper.make_graph(
        list(nodes),
        "test",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x_dims))],
        [
            helper.make_tensor_value_info(name, TensorProto.FLOAT, list(y_dims))
            for name in ("y", *extra_outputs)
        ],
        initializer=[
            numpy_helper.from_array(a, n) for a, n in zip(initializers, names, strict=True)
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = ir_version
    if card_json is not None:
        helper.set_model_props(model, {CARD_KEY: card_json})
    onnx.save(model, path)
    return path


def _conv_model(
    path: Path, card_json: str | None, in_channels: int = 1, out_channels: int = 1
) -> Path:
    """A 2D 1×1 convolution with free channel counts, whatever the card says."""
    w = np.ones((out_channels, in_channels, 1, 1), dtype=np.float32)
    b = np.zeros(out_channels, dtype=np.float32)
    return _save_model(
        path,
        [helper.make_node("Conv", ["x", "w", "b"], ["y"])],
        ["N", in_channels, "H", "W"],
        ["N", out_channels, "H", "W"],
        [w, b],
        ["w", "b"],
        card_json,
    )


def _tile_checking_model(path: Path, card: ModelCard, weight: float, bias: float) -> Path:
    """y = weight·x + bias + 0·upsample8(maxpool8(x)): fails unless H and W are multiples
    of 8, and is otherwise exactly the affine map."""
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"]),
        helper.make_node("MaxPool", ["x"], ["p"], kernel_shape=[8, 8], strides=[8, 8]),
        helper.make_node("Resize", ["p", "", "scales"], ["r"], mode="nearest"),
        helper.make_node("Mul", ["r", "zero"], ["z"]),
        helper.make_node("Add", ["c", "z"], ["y"]),
    ]
    initializers = [
        np.full((1, 1, 1, 1), weight, dtype=np.float32),
        np.asarray([bias], dtype=np.float32),
        np.asarray([1, 1, 8, 8], dtype=np.float32),
        np.asarray(0.0, dtype=np.float32),
    ]
    return _save_model(
        path,
        nodes,
        ["N", 1, "H", "W"],
        ["N", 1, "H", "W"],
        initializers,
        ["w", "b", "scales", "zero"],
        card.to_json(),
    )


def _geometry(
    shape: tuple[int, int, int],
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0),
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0),
    row: tuple[float, float, float] = (1.0, 0.0, 0.0),
    col: tuple[float, float, float] = (0.0, 1.0, 0.0),
) -> Geometry:
    normal = np.cross(row, col)
    return Geometry(
        origin=origin,
        row_direction=row,
        column_direction=col,
        slice_direction=(float(normal[0]), float(normal[1]), float(normal[2])),
        spacing=spacing,
        shape=shape,
    )


def _volume(array: np.ndarray, geometry: Geometry | None = None) -> Volume:
    array = np.asarray(array, dtype=np.float32)
    return Volume(array, geometry or _geometry(array.shape))


def _ramp(shape: tuple[int, int, int], start: float = 100.0) -> np.ndarray:
    k, j, i = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    return (start + 100 * k + 10 * j + i).astype(np.float32)


def _affine(x: np.ndarray, w: float, b: float, value_range: tuple[float, float]) -> np.ndarray:
    y = np.float32(w) * x.astype(np.float32) + np.float32(b)
    return np.clip(y, value_range[0], value_range[1]).astype(np.float32)


def _load(path: Path) -> LoadedModel:
    return load_model(path, CPU, intra_op_threads=1)


class _RecordingSession:
    """Passes runs through to the real session and records the input tensors' shapes."""

    def __init__(self, session: Any) -> None:
        self._session = session
        self.shapes: list[tuple[int, ...]] = []

    def run(self, outputs: Any, feeds: dict[str, np.ndarray]) -> Any:
        self.shapes.extend(tuple(v.shape) for v in feeds.values())
        return self._session.run(outputs, feeds)

    def get_inputs(self) -> Any:
        return self._session.get_inputs()


def _recording(model: LoadedModel) -> tuple[LoadedModel, _RecordingSession]:
    spy = _RecordingSession(model.session)
    return replace(model, session=spy), spy


# --- model cards -------------------------------------------------------------------------


def _card_data(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(linear_card().to_json())
    for dotted, value in changes.items():
        *path, last = dotted.split("__")
        target: Any = data
        for part in path:
            target = target[int(part)] if part.isdigit() else target[part]
        target[last] = value
    return data


def _parse(data: dict[str, Any]) -> ModelCard:
    return parse_card({CARD_KEY: json.dumps(data)}, "model.onnx")


def test_card_round_trips_through_the_onnx_metadata_json() -> None:
    card = linear_card(
        roles=("T1", "T2"), spatial=Spatial25D(slices=5), pixel_spacing_mm=(1.0, 1.0)
    )
    assert parse_card({CARD_KEY: card.to_json()}, "m.onnx") == card
    assert card.channels == 10
    assert card.input_roles == ("T1", "T2")
    assert card.key == "mr-t1-to-ct@1.0.0"


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"inputs": [_card_data()["inputs"][0]] * 2}, "input roles ['T1', 'T1'] repeat"),
        ({"output__role": "T1"}, "output role T1 is also an input"),
        ({"spatial": {"mode": "2.5d", "slices": 4}}, "slices must be odd"),
        ({"spatial": {"mode": "2.5d", "slices": 1}}, "spatial.2.5d.slices"),
        ({"spatial": {"mode": "3d", "patch": [0, 8, 8]}}, "patch sizes must be positive"),
        ({"spatial": {"mode": "3d", "patch": [8, 8, 8], "overlap": 1.0}}, "overlap"),
        ({"spatial": {"mode": "4d"}}, "spatial"),
        ({"output__units": "arbitrary"}, "a CT output must be in HU"),
        ({"output__value_range": [-2000, 3000]}, "outside what CT can store in HU"),
        ({"output__value_range": [100, 100]}, "value_range (100.0, 100.0) is empty"),
        ({"output__modality": "PT"}, "output.modality"),
        ({"output__denormalization__scale": 0}, "scale must not be 0"),
        ({"inputs__0__normalization": {"method": "percentile", "low": 90, "high": 10}}, "low"),
        ({"inputs__0__normalization": {"method": "histogram"}}, "inputs.0.normalization"),
        ({"inputs__0__role": "T1 weighted"}, "is not a simple name"),
        ({"inputs": []}, "inputs"),
        ({"id": "MR-T1-to-CT"}, "must be lower-case"),
        ({"version": ""}, "version"),
        ({"pixel_spacing_mm": [1.0, 0.0]}, "pixel_spacing_mm must be positive"),
        ({"tile_multiple": 0}, "tile_multiple"),
        ({"max_obliquity_degrees": -1.0}, "max_obliquity_degrees"),
        ({"max_obliquity_degrees": 90.0}, "max_obliquity_degrees"),
        (
            {"plane": "any", "max_obliquity_degrees": 20.0},
            "max_obliquity_degrees needs a plane",
        ),
        ({"intended_use": ""}, "intended_use"),
        ({"card_schema": 2}, "card_schema"),
        ({"license": "MIT"}, "license: Extra inputs are not permitted"),
    ],
    ids=lambda v: None if isinstance(v, dict) else v[:40],
)
def test_invalid_card_is_refused_naming_the_file_and_the_problem(
    changes: dict[str, Any], words: str
) -> None:
    data = _card_data(**changes)
    with pytest.raises(ModelCardError) as err:
        _parse(data)
    message = str(err.value)
    assert message.startswith("model.onnx: invalid model card: ")
    assert words in message


def test_card_missing_or_not_json_is_refused_naming_the_file() -> None:
    with pytest.raises(ModelCardError, match=r"^m\.onnx: no model card"):
        parse_card({}, "m.onnx")
    with pytest.raises(ModelCardError, match=r"^m\.onnx: model card is not JSON"):
        parse_card({CARD_KEY: "{not json"}, "m.onnx")


def test_mr_output_may_use_any_non_empty_range_and_unit() -> None:
    card = _parse(
        _card_data(
            output__modality="MR",
            output__units="arbitrary",
            output__value_range=[-5000, 90000],
        )
    )
    assert card.output.value_range == (-5000.0, 90000.0)


# --- loading and refusing models ---------------------------------------------------------


def test_valid_model_loads_and_reports_the_providers_it_really_got(tmp_path: Path) -> None:
    path = conv1x1_model(tmp_path / "ct.onnx", linear_card(), [2.0], -1000.0)
    model = load_model(path, ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert model.card == linear_card()
    assert model.providers == tuple(model.session.get_providers())
    assert model.providers[-1] == "CPUExecutionProvider"
    assert len(model.sha256) == 64
    assert model.input_name == "x"
    assert load_model(path, CPU).providers == ("CPUExecutionProvider",)


def _bad_card_json() -> str:
    return json.dumps(_card_data(tile_multiple=-2))


@pytest.mark.parametrize(
    ("build", "words"),
    [
        (lambda p: _conv_model(p, None), "no model card"),
        (lambda p: _conv_model(p, "{not json"), "model card is not JSON"),
        (lambda p: _conv_model(p, _bad_card_json()), "invalid model card: tile_multiple"),
        (
            lambda p: conv1x1_model(p, linear_card(), [2.0], -1000.0, ir_version=14),
            "onnxruntime cannot load it",
        ),
        (
            lambda p: _conv_model(p, linear_card().to_json(), in_channels=2),
            "input tensor has 2 channels, the card implies 1",
        ),
        (
            lambda p: _conv_model(p, linear_card().to_json(), out_channels=2),
            "output tensor has 2 channels, expected 1",
        ),
        (
            lambda p: _conv_model(p, linear_card(spatial=Spatial3D(patch=(4, 4, 4))).to_json()),
            "input tensor has rank 4, a 3d model needs 5",
        ),
        (
            lambda p: _save_model(
                p,
                [helper.make_node("Div", ["x", "zero"], ["y"])],
                ["N", 1, "H", "W"],
                ["N", 1, "H", "W"],
                [np.asarray(0.0, dtype=np.float32)],
                ["zero"],
                linear_card().to_json(),
            ),
            "trial run: output has NaN or infinite values",
        ),
        (lambda p: p.write_bytes(b"not a protobuf at all") and p, "onnxruntime cannot load it"),
        (
            lambda p: conv1x1_model(p, linear_card(out_scale=1000.0), [0.0], 50.0),
            "every output value (5e+04 to 5e+04 HU) lies outside value_range (-1024.0, 3071.0)",
        ),
    ],
    ids=[
        "no-card",
        "card-not-json",
        "card-bad-field",
        "ir-version-14",
        "input-channels",
        "output-channels",
        "rank",
        "nan-output",
        "not-onnx",
        "output-range",
    ],
)
def test_unusable_model_is_refused_naming_the_file_and_the_problem(
    tmp_path: Path, build: Any, words: str
) -> None:
    path = tmp_path / "broken-model.onnx"
    build(path)
    with pytest.raises(ModelError) as err:
        _load(path)
    message = str(err.value)
    assert message.startswith("broken-model.onnx")
    assert words in message


def test_a_bad_card_and_a_bad_graph_are_both_named(tmp_path: Path) -> None:
    path = _save_model(
        tmp_path / "twice-wrong.onnx",
        [helper.make_node("Identity", ["x"], ["y"]), helper.make_node("Identity", ["x"], ["z"])],
        ["N", 1, "H", "W"],
        ["N", 1, "H", "W"],
        [],
        [],
        _bad_card_json(),
        extra_outputs=["z"],
    )
    with pytest.raises(ModelError) as err:
        _load(path)
    assert "invalid model card: tile_multiple" in str(err.value)
    assert "needs exactly one input and one output tensor, has 1 and 2" in str(err.value)


def test_ir_version_refusal_says_which_version(tmp_path: Path) -> None:
    path = conv1x1_model(tmp_path / "new.onnx", linear_card(), [1.0], 0.0, ir_version=14)
    with pytest.raises(ModelError, match="IR version: 14"):
        _load(path)


def test_registry_serves_valid_models_and_lists_every_refusal(tmp_path: Path) -> None:
    folder = tmp_path / "models"
    folder.mkdir()
    conv1x1_model(folder / "a-ct.onnx", linear_card(), [2.0], -1000.0)
    conv1x1_model(folder / "b-ct-copy.onnx", linear_card(version="2.0.0"), [1.0], 0.0)
    flair = linear_card(
        model_id="mr-t1t2-to-flair",
        roles=("T1", "T2"),
        output_role="FLAIR",
        modality="MR",
        value_range=WIDE_MR,
    )
    conv1x1_model(folder / "c-flair.onnx", flair, [1.0, 1.0], 0.0)
    _conv_model(folder / "d-broken.onnx", None)
    (folder / "notes.txt").write_text("not a model")

    registry = load_registry(folder, CPU, intra_op_threads=1)

    assert sorted(registry.models) == ["mr-t1-to-ct", "mr-t1t2-to-flair"]
    assert registry.models["mr-t1-to-ct"].path.name == "a-ct.onnx"  # the first file wins
    assert registry.cards["mr-t1t2-to-flair"] == flair
    assert registry.get("absent") is None
    assert {m.card.id for m in registry} == {"mr-t1-to-ct", "mr-t1t2-to-flair"}
    assert len(registry.refused) == 2
    duplicate, broken = sorted(registry.refused)
    assert duplicate.startswith("b-ct-copy.onnx: model id mr-t1-to-ct already provided by a-ct")
    assert broken.startswith("d-broken.onnx: no model card")


def test_registry_of_a_missing_folder_is_empty_and_says_why(tmp_path: Path) -> None:
    registry = load_registry(tmp_path / "absent", CPU)
    assert registry.models == {}
    assert registry.refused == [f"{tmp_path / 'absent'}: models folder does not exist"]


# --- translate: 2D -----------------------------------------------------------------------


@pytest.mark.parametrize("batch_size", [1, 2, 8])
def test_2d_translation_is_exactly_the_affine_map_slice_by_slice(
    tmp_path: Path, batch_size: int
) -> None:
    card = linear_card()
    model = _load(conv1x1_model(tmp_path / "m.onnx", card, [2.0], -1000.0))
    x = _ramp((5, 6, 7))
    x[0, 0, 0], x[4, 5, 6] = -50.0, 4000.0  # below and above the output range once mapped
    geometry = _geometry(x.shape, spacing=(2.5, 0.9, 0.8), origin=(-10.0, 4.0, 7.5))

    out = translate(model, [_volume(x, geometry)], batch_size=batch_size)

    np.testing.assert_array_equal(out.array, _affine(x, 2.0, -1000.0, card.output.value_range))
    assert out.array[0, 0, 0] == -1024.0 and out.array[4, 5, 6] == 3071.0
    assert out.geometry == geometry
    assert out.array.dtype == np.float32
    assert out.meta == {"model": "mr-t1-to-ct@1.0.0"}


def test_output_denormalisation_follows_the_card(tmp_path: Path) -> None:
    card = linear_card(out_scale=1000.0, out_offset=-1000.0)
    model = _load(conv1x1_model(tmp_path / "m.onnx", card, [0.001], 0.0))
    x = np.full((2, 3, 4), 1500.0, dtype=np.float32)
    out = translate(model, [_volume(x)])
    # network: 1.5 → HU: 1.5·1000 − 1000 = 500
    np.testing.assert_allclose(out.array, 500.0, atol=1e-3)


def test_wrong_number_of_inputs_is_an_inference_error(tmp_path: Path) -> None:
    model = _load(conv1x1_model(tmp_path / "m.onnx", linear_card(), [1.0], 0.0))
    v = _volume(_ramp((2, 3, 3)))
    with pytest.raises(InferenceError, match=r"mr-t1-to-ct@1\.0\.0 takes 1 inputs, got 2"):
        translate(model, [v, v])


# --- translate: 2.5D ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("slices", "pick", "source"),
    [
        (3, 0, [0, 0, 1, 2, 3]),  # the slice below; the first slice replicates itself
        (3, 1, [0, 1, 2, 3, 4]),  # the centre slice
        (3, 2, [1, 2, 3, 4, 4]),  # the slice above; the last replicates itself
        (5, 0, [0, 0, 0, 1, 2]),  # two below, clamped twice at the start
        (5, 4, [2, 3, 4, 4, 4]),  # two above, clamped twice at the end
    ],
)
def test_2_5d_stacks_neighbours_as_channels_and_replicates_edge_slices(
    tmp_path: Path, slices: int, pick: int, source: list[int]
) -> None:
    card = linear_card(spatial=Spatial25D(slices=slices))
    weights = [0.0] * slices
    weights[pick] = 1.0
    model = _load(conv1x1_model(tmp_path / "m.onnx", card, weights, 0.0))
    x = _ramp((5, 3, 4))
    out = translate(model, [_volume(x)], batch_size=2)
    np.testing.assert_array_equal(out.array, x[source])


def test_2_5d_multi_input_channels_are_grouped_by_input_then_slice(tmp_path: Path) -> None:
    card = linear_card(
        model_id="mr-t1t2-to-flair",
        roles=("T1", "T2"),
        output_role="FLAIR",
        modality="MR",
        value_range=WIDE_MR,
        spatial=Spatial25D(slices=3),
    )
    # channels: T1[k-1], T1[k], T1[k+1], T2[k-1], T2[k], T2[k+1]
    weights = [0.0, 1.0, 0.0, 0.0, 0.0, 1000.0]
    model = _load(conv1x1_model(tmp_path / "m.onnx", card, weights, 0.0))
    t1, t2 = _ramp((4, 3, 3)), _ramp((4, 3, 3), start=1.0)
    out = translate(model, [_volume(t1), _volume(t2)])
    np.testing.assert_array_equal(out.array, t1 + 1000 * t2[[1, 2, 3, 3]])


# --- translate: 3D patches ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "patch", "overlap"),
    [
        ((7, 10, 9), (4, 4, 4), 0.5),  # not a multiple of the patch: last patch shifted back
        ((8, 8, 8), (4, 4, 4), 0.0),  # exact tiling, no blending
        ((9, 11, 6), (4, 5, 3), 0.25),
        ((2, 3, 3), (4, 4, 4), 0.5),  # smaller than one patch: padded, then cropped
        ((5, 2, 13), (4, 4, 4), 0.5),  # smaller in one axis only
    ],
)
def test_3d_patches_reassemble_to_the_affine_map_everywhere(
    tmp_path: Path,
    shape: tuple[int, int, int],
    patch: tuple[int, int, int],
    overlap: float,
) -> None:
    card = linear_card(spatial=Spatial3D(patch=patch, overlap=overlap))
    model = _load(conv1x1_model(tmp_path / "m.onnx", card, [2.0], -1000.0))
    x = _ramp(shape)
    out = translate(model, [_volume(x)], batch_size=3)
    expected = _affine(x, 2.0, -1000.0, card.output.value_range)
    assert out.array.shape == shape
    # Patches are blended (value·w / w): equal up to float32 rounding, and exactly equal
    # once rounded to the integers the synthetic series stores.
    np.testing.assert_allclose(out.array, expected, rtol=0, atol=1e-3)
    np.testing.assert_array_equal(np.rint(out.array), expected)


def test_3d_model_sees_only_whole_patches(tmp_path: Path) -> None:
    card = linear_card(spatial=Spatial3D(patch=(4, 4, 4), overlap=0.5))
    model, spy = _recording(_load(conv1x1_model(tmp_path / "m.onnx", card, [1.0], 0.0)))
    translate(model, [_volume(_ramp((7, 10, 9)))], batch_size=4)
    assert {s[1:] for s in spy.shapes} == {(1, 4, 4, 4)}
    # 3 starts per axis (0, 2, 3 / 0, 2, 4, 6 / 0, 2, 4, 5): 3·4·4 = 48 patches.
    assert sum(s[0] for s in spy.shapes) == 48


# --- translate: padding and spacing ------------------------------------------------------


def test_tile_multiple_pads_height_and_width_and_crops_back(tmp_path: Path) -> None:
    card = linear_card(tile_multiple=8)
    model, spy = _recording(_load(_tile_checking_model(tmp_path / "m.onnx", card, 2.0, -1000.0)))
    x = _ramp((3, 5, 13))
    out = translate(model, [_volume(x)])
    assert {s[2:] for s in spy.shapes} == {(8, 16)}
    np.testing.assert_array_equal(out.array, _affine(x, 2.0, -1000.0, card.output.value_range))


def test_model_spacing_resamples_in_plane_and_back_exactly_for_a_constant_image(
    tmp_path: Path,
) -> None:
    card = linear_card(pixel_spacing_mm=(0.5, 0.75))
    model, spy = _recording(_load(conv1x1_model(tmp_path / "m.onnx", card, [2.0], -1000.0)))
    x = np.full((3, 10, 12), 321.0, dtype=np.float32)
    geometry = _geometry(x.shape, spacing=(3.0, 1.0, 1.5))
    out = translate(model, [_volume(x, geometry)])
    assert {s[2:] for s in spy.shapes} == {(20, 24)}  # 10·1.0/0.5, 12·1.5/0.75
    assert out.array.shape == (3, 10, 12)
    assert out.geometry == geometry
    np.testing.assert_array_equal(out.array, np.full(x.shape, 2 * 321.0 - 1000, np.float32))


def test_model_spacing_round_trip_keeps_a_ramp_inside_and_near_at_the_border(
    tmp_path: Path,
) -> None:
    card = linear_card(pixel_spacing_mm=(0.5, 0.5))
    model = _load(conv1x1_model(tmp_path / "m.onnx", card, [2.0], -1000.0))
    x = _ramp((2, 12, 16))
    out = translate(model, [_volume(x)])
    expected = _affine(x, 2.0, -1000.0, card.output.value_range)
    np.testing.assert_allclose(out.array[:, 1:-1, 1:-1], expected[:, 1:-1, 1:-1], atol=1e-2)
    # At the border linear resampling cannot extrapolate: within 1/4 pixel of the slope.
    np.testing.assert_allclose(out.array, expected, atol=2 * 10 / 4 + 1e-2)


def test_coarser_model_spacing_downsamples_and_comes_back_to_the_native_grid(
    tmp_path: Path,
) -> None:
    card = linear_card(pixel_spacing_mm=(2.0, 2.0))
    model, spy = _recording(_load(conv1x1_model(tmp_path / "m.onnx", card, [1.0], 0.0)))
    x = np.full((2, 9, 7), 55.0, dtype=np.float32)
    out = translate(model, [_volume(x)])
    assert {s[2:] for s in spy.shapes} == {(4, 4)}  # round(4.5), round(3.5)
    np.testing.assert_array_equal(out.array, x)


# --- translate: multi-input on different grids -------------------------------------------


def _flair_card() -> ModelCard:
    return linear_card(
        model_id="mr-t1t2-to-flair",
        roles=("T1", "T2"),
        output_role="FLAIR",
        modality="MR",
        value_range=WIDE_MR,
    )


def _patient_points(geometry: Geometry) -> np.ndarray:
    k, j, i = np.meshgrid(*[np.arange(n) for n in geometry.shape], indexing="ij")
    voxels = np.stack([k, j, i, np.ones_like(k)]).reshape(4, -1).astype(float)
    return (geometry.affine @ voxels)[:3].reshape(3, *geometry.shape)


def _linear_field(points: np.ndarray) -> np.ndarray:
    x, y, z = points
    return (5.0 + 0.5 * x - 0.25 * y + 0.75 * z).astype(np.float32)


@pytest.mark.parametrize("tilted", [False, True], ids=["axial", "oblique"])
def test_second_input_on_another_grid_is_resampled_by_patient_position(
    tmp_path: Path, tilted: bool
) -> None:
    card = _flair_card()
    model = _load(conv1x1_model(tmp_path / "m.onnx", card, [1.0, 10.0], 0.0))
    t1_geometry = _geometry((6, 8, 9), spacing=(2.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0))
    if tilted:
        c, s = float(np.cos(np.radians(20))), float(np.sin(np.radians(20)))
        row, col = (c, s, 0.0), (-s * c, c * c, s)  # orthonormal: tilted 20° about x
        t2_geometry = _geometry(
            (12, 20, 20), spacing=(1.5, 1.25, 1.25), origin=(-4.0, -8.0, -6.0), row=row, col=col
        )
    else:
        t2_geometry = _geometry((5, 8, 9), spacing=(3.5, 1.5, 1.25), origin=(-2.0, -3.0, -1.5))
    t1_points = _patient_points(t1_geometry)
    # Precondition: every T1 voxel lies inside the T2 grid, so nothing is filled.
    inverse = np.linalg.inv(t2_geometry.affine)
    idx = inverse @ np.vstack([t1_points.reshape(3, -1), np.ones(t1_points[0].size)])
    upper = np.asarray(t2_geometry.shape)[:, None] - 1
    assert np.all(idx[:3] >= 0) and np.all(idx[:3] <= upper)

    t1 = _ramp(t1_geometry.shape)
    t2 = _linear_field(_patient_points(t2_geometry))
    out = translate(model, [_volume(t1, t1_geometry), _volume(t2, t2_geometry)])

    assert out.geometry == t1_geometry
    expected = t1 + 10.0 * _linear_field(t1_points)
    np.testing.assert_allclose(out.array, expected, rtol=0, atol=1e-3)


def test_second_input_on_the_same_grid_is_used_voxel_for_voxel(tmp_path: Path) -> None:
    model = _load(conv1x1_model(tmp_path / "m.onnx", _flair_card(), [1.0, -1.0], 7.0))
    geometry = _geometry((3, 4, 5), spacing=(3.0, 0.5, 0.5), origin=(1.0, 2.0, 3.0))
    t1, t2 = _ramp(geometry.shape), _ramp(geometry.shape, start=-40.0) * 3
    out = translate(model, [_volume(t1, geometry), _volume(t2, geometry)])
    np.testing.assert_array_equal(out.array, t1 - t2 + 7.0)


# --- normalisation -----------------------------------------------------------------------


def test_linear_normalisation_scales_offsets_and_clips() -> None:
    x = np.asarray([[[-1000.0, 0.0, 500.0, 3000.0]]], dtype=np.float32)
    y = normalize(x, LinearNorm(scale=1 / 1000, offset=1.0, clip=(0.0, 2.0)))
    np.testing.assert_allclose(y, [[[0.0, 1.0, 1.5, 2.0]]], rtol=1e-6)
    assert x[0, 0, 3] == 3000.0  # the input is not modified


def test_percentile_normalisation_maps_the_volume_percentiles_to_0_and_1() -> None:
    x = np.arange(1000, dtype=np.float32).reshape(10, 10, 10)
    norm = PercentileNorm(low=10, high=90, clip=None)
    lo, hi = np.percentile(x, [10, 90])
    np.testing.assert_allclose(normalize(x, norm), (x - lo) / (hi - lo), rtol=1e-5, atol=1e-6)
    clipped = normalize(x, PercentileNorm(low=10, high=50))  # default clip (0, 1.5)
    assert clipped.min() == 0.0 and clipped.max() == 1.5
    assert clipped[0, 0, 0] == 0.0 and clipped[9, 9, 9] == 1.5


def test_percentile_statistics_ignore_voxels_at_or_below_the_floor() -> None:
    x = np.zeros((2, 10, 10), dtype=np.float32)
    x[1] = np.arange(100, dtype=np.float32).reshape(10, 10) + 1  # 1..100, background 0
    y = normalize(x, PercentileNorm(low=0, high=100, floor=0.0, clip=None))
    np.testing.assert_allclose(y[1], (x[1] - 1) / 99, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(y[0], -1 / 99, rtol=1e-6)


def test_percentile_statistics_are_per_volume_not_per_slice() -> None:
    x = np.stack([np.full((4, 4), 10.0), np.full((4, 4), 20.0)]).astype(np.float32)
    y = normalize(x, PercentileNorm(low=0, high=100, clip=None))
    np.testing.assert_allclose(y[0], 0.0)
    np.testing.assert_allclose(y[1], 1.0)


def test_constant_volume_normalises_without_dividing_by_zero() -> None:
    x = np.full((2, 3, 3), 42.0, dtype=np.float32)
    assert np.all(normalize(x, PercentileNorm()) == 0.0)
    assert np.all(normalize(x, ZScoreNorm()) == 0.0)


def test_zscore_uses_mean_and_std_of_the_foreground() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(300, 40, size=(4, 16, 16)).astype(np.float32)
    x[0] = 0.0  # background slice
    fg = x[x > 50]
    y = normalize(x, ZScoreNorm(floor=50.0))
    np.testing.assert_allclose(y, (x - fg.mean()) / fg.std(), rtol=1e-4, atol=1e-4)
    whole = normalize(x, ZScoreNorm(clip=(-1.0, 1.0)))
    assert whole.min() == -1.0 and whole.max() == 1.0


def _noisy_head(background_rows: int) -> np.ndarray:
    """A bright disc in a noisy 64² field of view, surrounded by ``background_rows`` more
    rows and columns of background noise on every side."""
    rng = np.random.default_rng(5)
    jj, ii = np.mgrid[:64, :64] - 31.5
    head = np.where(np.hypot(jj, ii) < 28, 800.0 + 200.0 * (ii > 0), 0.0)
    x = np.abs(head + rng.normal(0, 15, size=(6, 64, 64)))
    margin = np.abs(rng.normal(0, 15, size=(6, 64 + 2 * background_rows, 64 + 2 * background_rows)))
    margin[:, background_rows : background_rows + 64, background_rows : background_rows + 64] = x
    return margin.astype(np.float32)


def test_foreground_normalisation_does_not_depend_on_the_background_in_the_field_of_view() -> None:
    tight, wide = _noisy_head(0), _noisy_head(96)
    for x in (tight, wide):
        assert foreground_mask(x).mean() < 0.9
    a = normalize(tight, ForegroundNorm(clip=None))
    b = normalize(wide, ForegroundNorm(clip=None))
    centre = (slice(None), slice(96 + 10, 96 + 54), slice(96 + 10, 96 + 54))
    np.testing.assert_allclose(a[:, 10:54, 10:54], b[centre], rtol=0.01, atol=1e-3)
    assert abs(float(np.percentile(b[foreground_mask(wide)], 99)) - 1.0) < 1e-3


def test_otsu_splits_background_from_tissue_and_a_constant_volume_keeps_every_voxel() -> None:
    x = _noisy_head(32)
    threshold = otsu_threshold(x)
    assert 60 < threshold < 750
    assert foreground_mask(np.full((2, 4, 4), 7.0, dtype=np.float32)).all()


def test_denormalisation_inverts_the_linear_map_and_clips_to_the_value_range() -> None:
    y = np.asarray([[[-2.0, -1.0, 0.0, 1.0, 4.0]]], dtype=np.float32)
    hu = denormalize(y, LinearNorm(scale=1000.0, offset=0.0), (-1024.0, 3071.0))
    np.testing.assert_array_equal(hu, [[[-1024.0, -1000.0, 0.0, 1000.0, 3071.0]]])
    clipped = denormalize(y, LinearNorm(scale=1.0, clip=(-1.0, 1.0)), (-10.0, 10.0))
    np.testing.assert_array_equal(clipped, [[[-1.0, -1.0, 0.0, 1.0, 1.0]]])
    assert y[0, 0, 4] == 4.0
