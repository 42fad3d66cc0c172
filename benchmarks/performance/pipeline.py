"""``pipeline``: ``augment`` end to end (read, orient, normalise, sample, denormalise, write NIfTI,
manifest) vs. the same network calls alone, for a GAN and a diffusion model."""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.performance.common import CONFIGS, synchronize
from medsynth.models import Synthesizer
from medsynth.training import Trainer, load_experiment


class TimedSampling:
    """``model`` with the wall time of each ``sample`` call recorded in ``seconds`` (synchronised
    on ``device``); every other attribute is the model's own."""

    def __init__(self, model: Synthesizer, device: torch.device) -> None:
        self.model, self.device, self.seconds = model, device, []

    def sample(self, *args, **kwargs) -> torch.Tensor:
        start = time.perf_counter()
        out = self.model.sample(*args, **kwargs)
        synchronize(self.device)
        self.seconds.append(time.perf_counter() - start)
        return out

    def __getattr__(self, name: str):
        return getattr(self.model, name)


def measure(args: argparse.Namespace, report: dict) -> dict:
    """``augment`` runs a :class:`TimedSampling` of the trained model, so its network calls are
    timed inside the same run and the two figures share every condition of the machine."""
    from medsynth.data.samples import mni152
    from medsynth.io import write_nifti
    from medsynth.synthesis import augment
    from medsynth.synthesis.apply import TrainedModel

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        image, label = mni152()
        write_nifti(image, tmp / "in" / "images" / "mni.nii.gz")
        write_nifti(label, tmp / "in" / "labels" / "mni.nii.gz")
        for family, steps in (("gan", None), ("diffusion", 2)):
            config = load_experiment(CONFIGS / f"generate_2d_{family}.yaml",
                                     ["train.steps=1", "train.sample_every=1", "train.sample_steps=1"])
            Trainer(config, tmp / family, device=str(args.device), progress=False).fit()
            trained = TrainedModel.load(tmp / family, str(args.device))
            timed = TimedSampling(trained.model, args.device)
            count = (1 if family == "diffusion" else 2) if args.quick else 4
            start = time.perf_counter()
            augment(tmp / "in" / "images", tmp / f"out_{family}", dataclasses.replace(trained, model=timed),
                    labels=tmp / "in" / "labels", per_image=count, steps=steps, batch_size=8, progress=False)
            end_to_end = time.perf_counter() - start
            network_only = sum(timed.seconds)
            results[family] = {"volumes": count, "volume_shape": list(label.array.shape), "batch": 8,
                               "diffusion_steps": steps, "network_only_volumes_per_second": count / network_only,
                               "augment_volumes_per_second": count / end_to_end,
                               "augment_over_network_only": network_only / end_to_end}
    return results
