"""``sampling``: the diffusion family's speed/quality curve on the validation slab for denoise and
super-resolve: DDPM-1000, DDIM-50/20/10, DPM-Solver++(2M)-10/5, the configs' default (DDIM-5,
mean of 4), against the NLM / cubic baselines; a PNG of the curve."""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.performance.common import CONFIGS, RESULTS, synchronize
from benchmarks.restoration import train_or_reuse
from medsynth.models import SampleOptions
from medsynth.validation.fidelity import slice_scores

#: (sampler, steps, ensemble) of each point of the curve
SAMPLING = [("ddpm", 1000, 1), ("ddim", 50, 1), ("ddim", 20, 1), ("ddim", 10, 1), ("dpm_solver", 10, 1),
            ("dpm_solver", 5, 1), ("ddim", 5, 4)]


def measure(args: argparse.Namespace, report: dict) -> dict:
    from medsynth.data.degradations import interpolate_slabs, rician_noise, thick_slices
    from medsynth.training import RunDirectory
    from medsynth.training.dataset import load_volumes, split_volumes
    from medsynth.training.inference import load_synthesizer
    from medsynth.validation.fidelity import nlm_rician

    overrides = ["train.steps=40", "train.batch_size=8", "train.sample_every=1000"] if args.quick else []
    runs = Path(tempfile.mkdtemp(prefix="medsynth-quick-")) if args.quick else args.runs  # quick: always fresh
    results = {}
    for job in args.sampling_jobs:
        run, _, train_seconds = train_or_reuse(CONFIGS / f"{job}_2d_diffusion.yaml", 0, runs, overrides)
        config = RunDirectory(run).read_config()
        held = split_volumes(load_volumes(config.data, 2), config.data)["validation"]  # a choice: validation only
        clean_volume, mask_volume = held[0].image[0].numpy(), held[0].label[0].numpy() > 0
        model = load_synthesizer(run, args.device)
        if job == "denoise":  # whole axial slices of the held-out slab
            count = 1 if args.quick else 6
            picks = np.linspace(0, clean_volume.shape[2] - 1, count + 2).round().astype(int)[1:-1]
            clean = np.stack([clean_volume[:, :, k] for k in picks])
            condition_np = rician_noise(clean, 0.05, np.random.default_rng(123)).astype(np.float32)
            baseline_name, baseline = "nlm", np.moveaxis(nlm_rician(np.moveaxis(condition_np, 0, -1), 0.05), -1, 0)
        else:  # coronal planes (x, z) of the slab, thick in z (factor 2)
            count = 2 if args.quick else 12
            brain = np.flatnonzero(mask_volume.any(axis=(0, 2)))
            picks = np.linspace(brain[0], brain[-1], count + 2).round().astype(int)[1:-1]
            clean = np.stack([clean_volume[:, j, :] for j in picks])
            thick, low = thick_slices(clean, 2, axis=-1, return_low_res=True, interpolation=config.job.interpolation)
            condition_np = thick.astype(np.float32)
            baseline_name = "cubic"
            baseline = interpolate_slabs(low, 2, clean.shape[-1], kind="cubic")
        condition = torch.from_numpy(condition_np)[:, None].to(args.device)
        entry = {"train_seconds": train_seconds, "images": count, "size": list(clean.shape[1:]),
                 "input": scores(condition_np, clean), baseline_name: scores(baseline, clean)}
        for sampler, steps, ensemble in SAMPLING:
            label = f"{sampler}-{steps}" + (f"x{ensemble}" if ensemble > 1 else "")
            options = SampleOptions(sampler=sampler, steps=steps, ensemble=ensemble)
            with torch.no_grad():
                start = time.perf_counter()
                out = model.sample(condition, seed=0, options=options)
                synchronize(args.device)
                seconds = time.perf_counter() - start
            estimate = out[:, 0].cpu().numpy()
            entry[label] = {"network_evaluations": model.cost(options),
                            "seconds": seconds,
                            "images_per_second": count / seconds, **scores(estimate, clean)}
        reference = entry["ddpm-1000"]
        for value in entry.values():
            if isinstance(value, dict) and "network_evaluations" in value:
                value["speedup_over_ddpm"] = reference["seconds"] / value["seconds"]
                value["psnr_minus_ddpm"] = value["psnr"] - reference["psnr"]
        results[job] = entry
    plot_sampling(results, RESULTS / f"sampling_curve_{'quick' if args.quick else 'full'}.png")
    return results


def scores(estimate: np.ndarray, clean: np.ndarray) -> dict:
    """Mean PSNR and SSIM of ``(N, H, W)`` images over the regions that every medsynth table uses
    (:data:`medsynth.validation.fidelity.REGIONS`: head mask, head bounding box)."""
    per_image = slice_scores(np.moveaxis(estimate, 0, -1), np.moveaxis(clean, 0, -1))
    return {metric: float(np.mean(values)) for metric, values in per_image.items()}


def plot_sampling(results: dict, path: Path) -> None:
    """PSNR and SSIM against images/s, one column per job: the speed/quality curve."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(2, len(results), figsize=(5.5 * len(results), 7), squeeze=False)
    for column, (job, entry) in enumerate(results.items()):
        points = {k: v for k, v in entry.items() if isinstance(v, dict) and "network_evaluations" in v}
        for row, metric in enumerate(("psnr", "ssim")):
            ax = axes[row, column]
            for label, value in points.items():
                ax.scatter(value["images_per_second"], value[metric],
                           color="C1" if label.startswith("dpm_solver") else "C0")
                ax.annotate(label, (value["images_per_second"], value[metric]), fontsize=8, xytext=(3, 3),
                            textcoords="offset points")
            for name, style in (("input", ":"), ("nlm", "--"), ("cubic", "--")):
                if name in entry:
                    ax.axhline(entry[name][metric], color="grey", linestyle=style,
                               label=f"{name} {entry[name][metric]:.3f}")
            ax.set_xscale("log")
            ax.set(xlabel="images / s (log)", ylabel="PSNR (dB, head)" if metric == "psnr" else "SSIM",
                   title=f"{job}: speed vs {metric.upper()}")
            ax.legend(fontsize=8)
    figure.tight_layout()
    path.parent.mkdir(exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
