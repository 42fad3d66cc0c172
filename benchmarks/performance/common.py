"""What the performance sections share: paths, timing, the default models and their conditions,
and the one place they call a model's sampling API."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from medsynth.models import build_synthesizer, label_condition
from medsynth.training import load_experiment

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "configs"
RESULTS = ROOT / "benchmarks" / "results"

#: a section: the CLI's arguments and the report so far (sections run earlier, in this run or a
#: previous one) -> its entry of ``performance_{quick,full}.json``
Section = Callable[[argparse.Namespace, dict], dict]


def seconds_per_call(fn: Callable[[], object], repeat: int, warmup: int = 1) -> float:
    """Median wall time of ``fn`` over ``repeat`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def synchronize(device: torch.device) -> None:
    """Wait for ``device``'s queued work (CUDA runs asynchronously), so that a timer stops after it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def model_of(config_name: str, device: torch.device):
    """The config ``configs/<config_name>`` and a new, untrained model of it on ``device``, in eval mode."""
    config = load_experiment(CONFIGS / config_name)
    model = build_synthesizer(config.family, config.spatial_dims, config.job.condition_channels, config.model)
    return config, model.to(device).eval()


def condition_for(config, batch: int, spatial: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """A seeded random condition of the config's job: one-hot label maps (generate) or images."""
    generator = torch.Generator().manual_seed(0)
    if config.job.name == "generate":
        labels = torch.randint(0, config.job.num_classes, (batch, *spatial), generator=generator)
        return label_condition(labels, config.job.num_classes).to(device)
    return torch.rand((batch, 1, *spatial), generator=generator).to(device)
