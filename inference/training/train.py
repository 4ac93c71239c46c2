"""Training of a recipe's network on simulated subjects (CPU is enough).

L1 loss on random head-centred crops (white-matter lesions weighted as the recipe
says), Adam with a cosine learning-rate decay; seeded throughout, so the same recipe,
seeds and thread count give the same weights.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm import tqdm

from inference.geometry import FloatArray
from inference.training.dataset import CropSampler, SliceSet, build_slices
from inference.training.recipes import Recipe
from inference.training.unet import UNet

log = logging.getLogger("inference.training")


@dataclass
class TrainingRun:
    network: UNet
    data: SliceSet
    sample: FloatArray
    """A batch of training crops, for the export's check of ONNX Runtime against torch."""
    losses: list[float] = field(default_factory=list)
    simulate_seconds: float = 0.0
    train_seconds: float = 0.0


def train(
    recipe: Recipe,
    seeds: Sequence[int],
    *,
    workers: int = 1,
    progress: Callable[[str], None] = log.info,
    bar: bool = False,
    initial: UNet | None = None,
) -> TrainingRun:
    """Simulates the subjects of ``seeds`` (``workers`` processes) and trains the
    recipe's network on them; ``bar``: a progress bar of the steps on stderr, beside
    the ``progress`` lines every 100 steps. ``initial``: a trained network of the
    recipe's architecture to continue from (an exported model, batch norms folded)
    instead of a new one."""
    if initial is not None and initial.config != recipe.network:
        raise ValueError(
            f"{recipe.name}: the network to continue from is {initial.config}, "
            f"the recipe's {recipe.network}"
        )
    schedule = recipe.schedule
    torch.manual_seed(schedule.seed)
    started = time.monotonic()
    data = build_slices(recipe, seeds, workers)
    simulated = time.monotonic() - started
    progress(
        f"{recipe.name}: {len(seeds)} subjects, {len(data)} slices simulated in {simulated:.0f} s"
    )
    network = initial if initial is not None else UNet(recipe.network)
    sampler = CropSampler(
        data, schedule.crop, np.random.default_rng(schedule.seed), schedule.lesion_crops
    )
    optimiser = torch.optim.Adam(network.parameters(), lr=schedule.learning_rate)
    decay = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda step: 0.5 * (1 + math.cos(math.pi * step / max(1, schedule.steps)))
    )
    run = TrainingRun(network, data, sampler.batch(4)[0], simulate_seconds=simulated)
    network.train()
    started = time.monotonic()
    window: list[float] = []
    steps = tqdm(
        range(1, schedule.steps + 1),
        desc=recipe.name,
        unit="step",
        file=sys.stderr,
        disable=not bar,
    )
    for step in steps:
        x, y, w = (torch.from_numpy(a) for a in sampler.batch(schedule.batch))
        loss = ((network(x) - y).abs() * w).sum() / w.sum()
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        decay.step()
        run.losses.append(loss.item())
        window.append(run.losses[-1])
        steps.set_postfix(L1=f"{run.losses[-1]:.4f}", refresh=False)
        if step % 100 == 0 or step == schedule.steps:
            progress(
                f"{recipe.name}: step {step}/{schedule.steps}, L1 {np.mean(window):.4f}, "
                f"{time.monotonic() - started:.0f} s"
            )
            window = []
    run.train_seconds = time.monotonic() - started
    network.eval()
    return run
