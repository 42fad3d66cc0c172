"""Load a trained model from its run directory, ready to sample (EMA weights, eval mode)."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from medsynth.errors import MedsynthError
from medsynth.models import Synthesizer, build_synthesizer
from medsynth.training.experiment import ExperimentConfig
from medsynth.training.run_dir import RunDirectory


def load_synthesizer(run_dir: str | os.PathLike, device: str | torch.device = "cpu", ema: bool = True) -> Synthesizer:
    """The model of ``run_dir``'s latest checkpoint, with its EMA weights unless ``ema=False``.

    Raises:
        MedsynthError: not a run directory, no checkpoint, or weights that do not fit the config.
    """
    return load_trained(run_dir, device, ema)[0]


def load_trained(run_dir: str | os.PathLike, device: str | torch.device = "cpu",
                 ema: bool = True) -> tuple[Synthesizer, ExperimentConfig, Path]:
    """:func:`load_synthesizer`, with the config it was trained with and the run's path (the
    config read once)."""
    run = RunDirectory(run_dir)
    config = run.read_config()
    model = build_synthesizer(config.family, config.spatial_dims, config.job.condition_channels, config.model)
    weights, averaged, _ = run.load_checkpoint()
    try:
        model.load_state_dict(weights)
        if ema:
            for name, module in model.ema_modules().items():
                prefix = f"{name}."
                module.load_state_dict({k[len(prefix):]: v for k, v in averaged.items() if k.startswith(prefix)})
    except RuntimeError as err:
        raise MedsynthError(f"{run.path}: checkpoint does not fit its config ({str(err).splitlines()[0]})") from None
    return model.to(device).eval(), config, run.path
