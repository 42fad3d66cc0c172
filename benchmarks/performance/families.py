"""``families``: images/s of the diffusion and GAN families at their default sampling settings,
same job, image size, batch and device (untrained weights: speed does not depend on them)."""

from __future__ import annotations

import argparse

import torch

from benchmarks.performance.common import condition_for, model_of, seconds_per_call, synchronize


def measure(args: argparse.Namespace, report: dict) -> dict:
    device, results = args.device, {}
    batch = 4 if args.quick else 16
    for job in ("denoise", "generate"):
        entry = {"batch": batch, "size": [64, 64]}
        for family in ("diffusion", "gan"):
            config, model = model_of(f"{job}_2d_{family}.yaml", device)
            condition = condition_for(config, batch, (64, 64), device)
            with torch.no_grad():  # a diffusion sample is 20-100 network calls: it warms itself up
                seconds = seconds_per_call(lambda m=model, c=condition: (m.sample(c, seed=0), synchronize(device)),
                                           1 if args.quick else 3, warmup=int(family == "gan"))
            entry[family] = {"images_per_second": batch / seconds, "network_evaluations": model.cost()}
        entry["gan_over_diffusion"] = entry["gan"]["images_per_second"] / entry["diffusion"]["images_per_second"]
        results[job] = entry
    return results
