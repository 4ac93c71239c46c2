"""Training and export, end to end on a tiny scale, so that the code cannot rot: a few
steps on small simulated subjects, exported with its card, loaded by the node's registry
and run through the node's serving path."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from inference.card import CARD_KEY, Spatial2D
from inference.predict import translate
from inference.registry import load_model
from inference.training.dataset import CropSampler, build_slices
from inference.training.export import ExportError, export_model, set_card
from inference.training.recipes import FLAIR, SCT, Recipe, Schedule
from inference.training.simulate import Acquisition, simulate_subject
from inference.training.train import train
from inference.training.unet import UNet, UNetConfig

ROOT = Path(__file__).resolve().parents[1]
SMALL = Acquisition(pixel_spacing_mm=3.0, slice_thickness_mm=6.0, rows=96, columns=80)


def tiny(recipe: Recipe, steps: int = 3) -> Recipe:
    network = UNetConfig(recipe.network.in_channels, base=4, depth=2)
    card = recipe.card.model_copy(
        update={"pixel_spacing_mm": (3.0, 3.0), "tile_multiple": network.tile_multiple}
    )
    return replace(
        recipe,
        card=card,
        network=network,
        acquisition=SMALL,
        schedule=Schedule(steps=steps, batch=2, crop=32, learning_rate=1e-3, seed=3),
    )


def test_a_few_steps_train_export_and_run_through_the_node(tmp_path: Path) -> None:
    recipe = tiny(SCT)
    run = train(recipe, [1000], progress=lambda _: None)
    assert len(run.losses) == 3 and all(np.isfinite(run.losses))
    path = tmp_path / "tiny.onnx"
    report = export_model(run.network, recipe.card, path, run.sample)
    assert report.max_abs_difference <= report.tolerance
    assert report.ir_version == 10

    model = load_model(path, ["CPUExecutionProvider"])
    assert model.card == recipe.card
    held_out = simulate_subject(9000, SMALL)
    output = translate(model, [held_out.images["T1"]])
    assert output.geometry == held_out.images["T1"].geometry
    assert np.isfinite(output.array).all()
    assert output.array.min() >= -1024 and output.array.max() <= 3071


def test_a_multi_input_recipe_stacks_each_input_s_neighbours(tmp_path: Path) -> None:
    recipe = tiny(FLAIR, steps=1)
    data = build_slices(recipe, [1000])
    stack = data.stack(0, 5)
    assert stack.shape == (6, 96, 80)
    t1_only = build_slices(
        replace(recipe, card=recipe.card.model_copy(update={"inputs": recipe.card.inputs[:1]})),
        [1000],
    )
    assert np.array_equal(stack[:3], t1_only.stack(0, 5))
    assert data.subjects[0].target.shape == (len(data), 96, 80)


def test_training_is_deterministic_for_a_seed() -> None:
    recipe = tiny(SCT, steps=2)
    first = train(recipe, [1000], progress=lambda _: None)
    second = train(recipe, [1000], progress=lambda _: None)
    assert first.losses == second.losses
    for a, b in zip(
        first.network.state_dict().values(), second.network.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b)


def test_a_progress_bar_of_the_steps_goes_to_stderr_only_when_asked(
    capsys: pytest.CaptureFixture[str],
) -> None:
    recipe = tiny(SCT, steps=3)
    lines: list[str] = []
    train(recipe, [1000], progress=lines.append, bar=True)
    shown = capsys.readouterr()
    assert f"{recipe.name}: 100%|" in shown.err and "| 3/3 " in shown.err
    assert "L1=" in shown.err and shown.out == ""
    assert lines[-1].startswith(f"{recipe.name}: step 3/3, L1 ")
    train(recipe, [1000], progress=lines.append)
    assert capsys.readouterr().err == ""


def test_subjects_on_another_grid_are_brought_to_the_card_spacing_with_their_targets() -> None:
    recipe = replace(tiny(SCT), acquisition=Acquisition(pixel_spacing_mm=2.0, rows=96, columns=72))
    (examples,) = build_slices(recipe, [1000]).subjects
    assert examples.inputs.shape[2:] == (64, 48)
    assert examples.target.shape[1:] == examples.head.shape[1:] == (64, 48)
    assert (examples.target[examples.head] * 1000 > -900).mean() > 0.9


def test_crops_stay_inside_the_slices_and_centre_on_the_head() -> None:
    data = build_slices(tiny(SCT), [1000])
    sampler = CropSampler(data, 32, np.random.default_rng(0))
    x, y, w = sampler.batch(16)
    assert x.shape == (16, 3, 32, 32) and y.shape == w.shape == (16, 1, 32, 32)
    assert (w == 1).all(), "the sCT recipe weighs every voxel alike"
    assert (y * 1000 > -900).any(axis=(1, 2, 3)).all(), "every crop shows some head"
    with pytest.raises(ValueError, match="larger than the slices"):
        CropSampler(data, 128, np.random.default_rng(0))


def test_white_matter_lesions_count_as_the_recipe_says_in_the_loss() -> None:
    """A FLAIR is read for its lesions, a thousandth of a head: the FLAIR recipe makes
    a lesion voxel count ``lesion_weight`` times any other, in proportion to its share."""
    assert FLAIR.schedule.lesion_weight > 1
    recipe = tiny(FLAIR).with_schedule(lesion_weight=30.0, batch=16)
    data = build_slices(recipe, [1002])
    (examples,) = data.subjects
    subject = simulate_subject(1002, SMALL)
    lesion = subject.fractions["lesion"]
    weight = examples.weight.astype(np.float32)
    assert weight.shape == examples.target.shape
    assert weight[lesion == 0].max() == 1.0
    assert weight[lesion > 0.9].min() > 27
    np.testing.assert_allclose(weight, 1 + 29 * lesion, atol=0.02)
    _, _, w = CropSampler(data, 32, np.random.default_rng(0)).batch(64)
    assert w.max() > 20 and (w >= 1).all()
    assert (w.max(axis=(1, 2, 3)) == 1).mean() > 0.5, "most crops of the head miss the lesions"
    _, _, w = CropSampler(data, 32, np.random.default_rng(0), lesion_crops=1.0).batch(64)
    assert (w.max(axis=(1, 2, 3)) > 15).all(), "lesion_crops=1: every crop centred on one"
    weighted = train(recipe, [1002], progress=lambda _: None)
    plain = train(recipe.with_schedule(lesion_weight=1.0), [1002], progress=lambda _: None)
    assert weighted.losses != plain.losses, "the weights reach the loss"


def test_export_refuses_a_sample_that_does_not_fit_the_card(tmp_path: Path) -> None:
    recipe = tiny(SCT)
    net = UNet(recipe.network)
    with pytest.raises(ExportError, match="the card needs"):
        export_model(net, recipe.card, tmp_path / "x.onnx", np.zeros((1, 2, 32, 32), np.float32))
    with pytest.raises(ExportError, match="tile_multiple"):
        export_model(net, recipe.card, tmp_path / "x.onnx", np.zeros((1, 3, 30, 32), np.float32))


class _NoisyGenerator(torch.nn.Module):
    """Draws fresh noise at every call: ONNX Runtime cannot reproduce its output."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :1] + torch.rand_like(x[:, :1])


def test_export_fails_when_onnxruntime_does_not_reproduce_torch(tmp_path: Path) -> None:
    recipe = tiny(SCT)
    sample = np.random.default_rng(0).random((2, 3, 32, 32), dtype=np.float32)
    with pytest.raises(ExportError, match="does not reproduce torch"):
        export_model(_NoisyGenerator(), recipe.card, tmp_path / "noisy.onnx", sample)


def test_set_card_replaces_the_card_and_keeps_other_metadata(tmp_path: Path) -> None:
    import onnx

    recipe = tiny(SCT)
    path = tmp_path / "m.onnx"
    sample = np.random.default_rng(0).random((1, 3, 32, 32), dtype=np.float32)
    export_model(UNet(recipe.network), recipe.card, path, sample, metadata={"extra": "kept"})
    card = recipe.card.model_copy(update={"validation": {"mae_hu_head": 12.5}})
    set_card(path, card)
    props = {p.key: p.value for p in onnx.load(path).metadata_props}
    assert props["extra"] == "kept"
    assert json.loads(props[CARD_KEY])["validation"] == {"mae_hu_head": 12.5}
    assert load_model(path, ["CPUExecutionProvider"]).card == card


def tiny_generator() -> torch.nn.Module:
    """A user's own generator, for the export command line (``module:function``)."""
    torch.manual_seed(0)
    return UNet(UNetConfig(in_channels=1, base=4, depth=2))


def test_a_users_generator_exports_from_the_command_line_and_validates(tmp_path: Path) -> None:
    card = SCT.card.model_copy(
        update={
            "id": "my-t1-to-ct",
            "spatial": Spatial2D(),
            "tile_multiple": 4,
            "pixel_spacing_mm": None,
        }
    )
    (tmp_path / "card.json").write_text(card.to_json())
    weights = tmp_path / "weights.pt"
    torch.save(tiny_generator().state_dict(), weights)
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'tests'}"}
    out = tmp_path / "mine.onnx"
    exported = subprocess.run(
        [
            sys.executable,
            "-m",
            "inference.training",
            "export",
            "--factory",
            "test_training:tiny_generator",
            "--weights",
            str(weights),
            "--card",
            str(tmp_path / "card.json"),
            "--sample-shape",
            "2,1,64,64",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        check=False,
    )
    assert exported.returncode == 0, exported.stderr
    assert "max |onnxruntime - torch|" in exported.stdout
    validated = subprocess.run(
        [sys.executable, "-m", "dicom_node", "models", "validate", str(out)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        check=False,
    )
    assert validated.returncode == 0, validated.stdout + validated.stderr
    assert validated.stdout.startswith(f"OK mine.onnx: my-t1-to-ct@{SCT.card.version}")


def test_subjects_simulated_in_parallel_are_the_same_as_one_by_one() -> None:
    recipe = tiny(SCT)
    serial = build_slices(recipe, [1000, 1001])
    parallel = build_slices(recipe, [1000, 1001], workers=2)
    for a, b in zip(serial.subjects, parallel.subjects, strict=True):
        assert np.array_equal(a.inputs, b.inputs)
        assert np.array_equal(a.target, b.target)


def test_an_exported_unet_comes_back_to_torch_with_the_same_weights(tmp_path: Path) -> None:
    import onnx
    import onnxruntime as ort

    from inference.training.unet import ARCHITECTURE_KEY, from_onnx

    recipe = tiny(SCT, steps=2)
    run = train(recipe, [1000], progress=lambda _: None)
    path = tmp_path / "m.onnx"
    sample = run.sample
    metadata = {ARCHITECTURE_KEY: recipe.network.to_json()}
    export_model(run.network, recipe.card, path, sample, metadata=metadata)
    back = from_onnx(onnx.load(path))
    with torch.inference_mode():
        original = run.network(torch.from_numpy(sample)).numpy()
        rebuilt = back(torch.from_numpy(sample)).numpy()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (exported,) = session.run(None, {"input": sample})
    assert np.abs(rebuilt - original).max() < 1e-4
    assert np.abs(rebuilt - exported).max() < 1e-4
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in back.modules())


def test_a_graph_without_the_architecture_is_not_taken_for_a_unet(tmp_path: Path) -> None:
    import onnx

    from inference.training.unet import from_onnx

    recipe = tiny(SCT)
    path = tmp_path / "m.onnx"
    export_model(UNet(recipe.network), recipe.card, path, np.zeros((1, 3, 32, 32), np.float32))
    with pytest.raises(ValueError, match=r"no dicom_node\.architecture"):
        from_onnx(onnx.load(path))


def test_training_continues_from_an_exported_model_and_its_card_says_so(tmp_path: Path) -> None:
    """``train --init``: the exported network (batch norms folded) is where the steps
    start, and the new card tells what the parent was trained on before them."""
    import onnx

    from inference.training.__main__ import _continued
    from inference.training.unet import ARCHITECTURE_KEY, from_onnx

    recipe = tiny(SCT, steps=2)
    first = train(recipe, [1000], progress=lambda _: None)
    path = tmp_path / "parent.onnx"
    parent_card = recipe.card.model_copy(update={"version": "0.9.0"})
    metadata = {ARCHITECTURE_KEY: recipe.network.to_json()}
    export_model(first.network, parent_card, path, first.sample, metadata=metadata)
    sampler = CropSampler(first.data, recipe.schedule.crop, np.random.default_rng(3))
    sampler.batch(4)  # the export sample train() draws first
    x, y, _ = sampler.batch(2)
    with torch.inference_mode():
        parent_loss = torch.nn.functional.l1_loss(
            from_onnx(onnx.load(path))(torch.from_numpy(x)), torch.from_numpy(y)
        ).item()
    initial, continued = _continued(path, recipe, [1000])
    second = train(continued, [1000], progress=lambda _: None, initial=initial)
    assert second.losses[0] == pytest.approx(parent_loss, rel=1e-4)
    assert second.network is initial
    assert continued.card.training_data.startswith(parent_card.training_data)
    assert f"continued from {SCT.card.id} 0.9.0: 2 steps" in continued.card.training_data
    assert "subjects 1000-1000" in continued.card.training_data
    assert continued.card.training_data.endswith(f"of the {SCT.card.version} recipe: as above")
    same = replace(recipe, card=recipe.card.model_copy(update={"version": "0.9.0"}))
    with pytest.raises(SystemExit, match="needs a later version than that"):
        _continued(path, same, [1000])
    with pytest.raises(ValueError, match="the network to continue from"):
        train(tiny(FLAIR), [1000], progress=lambda _: None, initial=initial)
