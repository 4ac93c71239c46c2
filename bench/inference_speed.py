"""Inference benchmark: a shipped model through ONNX Runtime against the same weights in
PyTorch eager, same threads, same batch, alternating, in one run.

The PyTorch model is the reference U-Net (``inference/training/unet.py``) rebuilt from
the architecture the export recorded, with the ONNX file's weights (batch norm folded
into the convolutions, as in the graph): both run exactly the same weights, and the
largest difference between their outputs is printed as a check. With a GPU, both are
also measured on it (CUDAExecutionProvider and torch on cuda).

    python bench/inference_speed.py --model models/mr-t1-to-ct.onnx --batch 8 --threads 2
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from inference.card import CARD_KEY, ModelCard
from inference.training.unet import from_onnx


def _card(model: onnx.ModelProto) -> ModelCard:
    props = {p.key: p.value for p in model.metadata_props}
    return ModelCard.model_validate_json(props[CARD_KEY])


def _timed(run: Callable[[], object], iterations: int) -> list[float]:
    times = []
    for _ in range(iterations):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return times


def _compare(
    name: str,
    ort_run: Callable[[], object],
    torch_run: Callable[[], object],
    batch: int,
    iterations: int,
) -> None:
    for _ in range(3):
        ort_run()
        torch_run()
    ort_times, torch_times = [], []
    for _ in range(iterations):
        ort_times += _timed(ort_run, 1)
        torch_times += _timed(torch_run, 1)
    ort_rate = batch / statistics.median(ort_times)
    torch_rate = batch / statistics.median(torch_times)
    print(
        f"{name}: onnxruntime {ort_rate:7.1f} slices/s | torch eager {torch_rate:7.1f} "
        f"slices/s | ratio {ort_rate / torch_rate:.2f}x"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=Path("models/mr-t1-to-ct.onnx"))
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=15)
    parser.add_argument("--rows", type=int, default=176)
    parser.add_argument("--columns", type=int, default=160)
    args = parser.parse_args()

    model = onnx.load(args.model)
    card = _card(model)
    m = card.tile_multiple
    shape = (args.batch, card.channels, -(-args.rows // m) * m, -(-args.columns // m) * m)
    x = np.random.default_rng(0).random(shape, dtype=np.float32)
    torch.set_num_threads(args.threads)
    net = from_onnx(model).eval()
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    cpu = ort.InferenceSession(str(args.model), options, providers=["CPUExecutionProvider"])
    name = cpu.get_inputs()[0].name
    with torch.inference_mode():
        reference = net(torch.from_numpy(x)).numpy()
    difference = float(np.abs(cpu.run(None, {name: x})[0] - reference).max())
    print(
        f"{card.key}, input {shape}, {args.threads} threads; "
        f"max |onnxruntime - torch| = {difference:.2e}"
    )

    def torch_cpu() -> object:
        with torch.inference_mode():
            return net(torch.from_numpy(x))

    _compare("CPU", lambda: cpu.run(None, {name: x}), torch_cpu, args.batch, args.iterations)

    if torch.cuda.is_available() and "CUDAExecutionProvider" in ort.get_available_providers():
        gpu = ort.InferenceSession(str(args.model), options, providers=["CUDAExecutionProvider"])
        print(f"GPU: {torch.cuda.get_device_name(0)}; onnxruntime providers {gpu.get_providers()}")
        net_gpu = net.to("cuda")
        x_gpu = torch.from_numpy(x).to("cuda")

        def torch_gpu() -> object:
            with torch.inference_mode():
                out = net_gpu(x_gpu)
                torch.cuda.synchronize()
                return out

        _compare("GPU", lambda: gpu.run(None, {name: x}), torch_gpu, args.batch, args.iterations)


if __name__ == "__main__":
    main()
