"""``memory``: peak RSS (CPU) or peak allocated memory (CUDA) of 3D training and sampling at 32^3,
64^3, 128^3, and full-volume restoration of a 256x256x160 volume in overlapping windows with
Gaussian blending, with a seam check (error at window borders vs. window centres).

Each case runs in a fresh process (peak RSS is per process):
``python -m benchmarks.performance.memory --case train_32 --device cpu [--run RUN]`` prints its JSON.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.performance.common import CONFIGS, ROOT, condition_for, model_of, synchronize
from medsynth.models import SampleOptions
from medsynth.training import Trainer, load_experiment
from medsynth.training.trainer import peak_memory_mb


def measure(args: argparse.Namespace, report: dict) -> dict:
    sides = (32, 64) if args.quick else (32, 64, 128)
    cases = [f"{kind}_{side}" for side in sides for kind in ("train", "sample")]
    results = {}
    for case in [*cases, "latent_128"]:
        results[case] = run_case(case, args.device, [])
    with tempfile.TemporaryDirectory() as tmp:
        for family in ("gan",) if args.quick else ("gan", "diffusion"):
            steps = 40 if args.quick else 300
            config = load_experiment(CONFIGS / f"denoise_3d_{family}.yaml",
                                     [f"train.steps={steps}", f"train.sample_every={steps}"])
            Trainer(config, Path(tmp) / family, device=str(args.device), progress=False).fit()
            measured = run_case(f"volume_{family}", args.device, ["--run", f"{tmp}/{family}"])
            results[f"full_volume_{family}"] = {"trained_steps": steps, **measured}
    return results


def run_case(case: str, device: torch.device, extra: list[str]) -> dict:
    """:func:`memory_case` in a fresh process; its last line of output, or the error it ended with."""
    command = [sys.executable, "-m", "benchmarks.performance.memory", "--case", case, "--device", str(device), *extra]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def process_peak_mb(device: torch.device) -> float:
    """This process's peak memory: on Linux the high-water mark of its own address space (VmHWM;
    ``ru_maxrss`` would carry over the parent's peak through fork and exec), else ``peak_memory_mb``."""
    status = Path("/proc/self/status")
    if device.type == "cpu" and status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return peak_memory_mb(device)


def memory_case(case: str, device: str, run: str | None) -> dict:
    """One measurement, run in a fresh process (peak RSS is per process)."""
    from medsynth.models import StepContext

    device = torch.device(device)
    baseline = process_peak_mb(device)
    kind, size = case.split("_")
    if kind in ("train", "sample"):
        side = int(size)
        config, model = model_of("denoise_3d_diffusion.yaml", device)
        target = torch.rand(1, 1, side, side, side, device=device)
        if kind == "train":
            model.train()
            optimizer = torch.optim.AdamW(model.parameters())

            def optimize(group: str, loss: torch.Tensor) -> float:
                loss.backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                return 0.0

            context = StepContext(torch.Generator().manual_seed(0), device, lambda: torch.autocast(device.type,
                                                                                                     enabled=False),
                                  optimize)
            start = time.perf_counter()
            for _ in range(2):
                model.training_step({"target": target, "condition": target}, context)
        else:
            start = time.perf_counter()
            with torch.no_grad():
                model.sample(target, seed=0, options=SampleOptions(steps=2, ensemble=1))
        return {"peak_mb": process_peak_mb(device), "baseline_mb": baseline, "seconds": time.perf_counter() - start}
    if kind == "latent":  # one whole label-conditioned volume at the config's sampling defaults (untrained weights)
        side = int(size)
        config, model = model_of("generate_3d_latent_diffusion.yaml", device)
        condition = condition_for(config, 1, (side,) * 3, device)
        start = time.perf_counter()
        with torch.no_grad():
            model.sample(condition, seed=0)
        synchronize(device)
        return {"peak_mb": process_peak_mb(device), "baseline_mb": baseline, "seconds": time.perf_counter() - start}
    return full_volume(Path(run), size, device, baseline)


def full_volume(run: Path, family: str, device: torch.device, baseline: float) -> dict:
    """Denoise a 256x256x160 volume (MNI152 padded) in overlapping windows (two training patches a side); seam check."""
    from medsynth.data.degradations import rician_noise
    from medsynth.data.samples import mni152
    from medsynth.synthesis.apply import TrainedModel, run_on_volume
    from medsynth.synthesis.inferers import WINDOW_OVERLAP, restoration_window

    trained = TrainedModel.load(run, str(device))
    image = mni152()[0].array
    image = image / np.percentile(image, 99.5)
    clean = np.zeros((256, 256, 160), np.float32)
    shape = [min(a, b) for a, b in zip(image.shape, clean.shape, strict=True)]
    offsets = [(image.shape[i] - shape[i]) // 2 for i in range(3)]
    region = tuple(slice(o, o + s) for o, s in zip(offsets, shape, strict=True))
    clean[tuple(slice(0, s) for s in shape)] = np.clip(image[region], 0, 1)
    noisy = rician_noise(clean[None], 0.05, np.random.default_rng(0))[0].astype(np.float32)
    options = SampleOptions(steps=2, ensemble=1) if family == "diffusion" else SampleOptions()
    start = time.perf_counter()
    with torch.no_grad():
        out = run_on_volume(trained, noisy[None], seed=0, batch_size=1, patch_wise=True, options=options)
    seconds = time.perf_counter() - start
    # window edges of MONAI's sliding window inside the volume
    roi = restoration_window(trained.config, clean.shape)
    error = np.abs(out - clean)
    near, far = np.zeros(clean.shape, bool), np.ones(clean.shape, bool)
    for axis, (length, window) in enumerate(zip(clean.shape, roi, strict=True)):
        edges = window_edges(length, window, WINDOW_OVERLAP)
        coords = np.arange(length)
        distance = np.min([np.abs(coords - e) for e in edges], axis=0) if edges else np.full(length, length)
        shape_axis = [1, 1, 1]
        shape_axis[axis] = length
        near |= (distance <= 1).reshape(shape_axis)
        far &= (distance >= 16).reshape(shape_axis)
    brain = clean > 0.05
    # a seam is a jump: the output's step between neighbours across a window edge vs. far from edges
    jumps_at_edges, jumps_elsewhere = [], []
    for axis, (length, window) in enumerate(zip(clean.shape, roi, strict=True)):
        step = np.abs(np.diff(out, axis=axis))
        between = sorted({e - 1 for e in window_edges(length, window, WINDOW_OVERLAP)})
        inside = np.moveaxis(brain[tuple(slice(0, -1) if a == axis else slice(None) for a in range(3))], axis, 0)
        moved = np.moveaxis(step, axis, 0)
        far_rows = [i for i in range(length - 1) if all(abs(i - e) >= 16 for e in between)]
        jumps_at_edges.append(moved[between][inside[between]])
        jumps_elsewhere.append(moved[far_rows][inside[far_rows]])
    return {"peak_mb": process_peak_mb(device), "baseline_mb": baseline, "seconds": seconds,
            "shape": list(clean.shape), "window": list(roi),
            "mae_at_window_edges": float(error[near & brain].mean()),
            "mae_at_window_centres": float(error[far & brain].mean()),
            "mae_noisy_input": float(np.abs(noisy - clean)[brain].mean()),
            "jump_at_window_edges": float(np.concatenate(jumps_at_edges).mean()),
            "jump_away_from_edges": float(np.concatenate(jumps_elsewhere).mean())}


def window_edges(length: int, window: int, overlap: float) -> list[int]:
    """Positions of the window borders inside ``[1, length)`` of MONAI's sliding window along one axis."""
    stride = max(1, int(window * (1 - overlap)))
    starts = sorted({min(s, length - window) for s in range(0, length, stride)})
    return sorted({e for s in starts for e in (s, s + window)} - {0, length})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="one memory case of the performance suite, in this process")
    parser.add_argument("--case", required=True, help="train_<side>, sample_<side>, latent_<side> or volume_<family>")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--run", help="volume_<family>: the trained run directory")
    args = parser.parse_args(argv)
    print(json.dumps(memory_case(args.case, args.device, args.run)))


if __name__ == "__main__":
    main()

