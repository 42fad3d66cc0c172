"""Restoration evidence under the train / validation / test protocol (docs/results.md is generated from it).

For each shipped CPU config ``configs/<job>_<dims>d_<family>.yaml`` (family: diffusion, gan, and
``l1``: the GAN's generator trained with plain L1, the non-generative ablation) and each training
seed, it trains the model (or reuses a finished run whose resolved config hash matches) and scores
it on one part of the bundled MNI152 template, beside the baselines a user would pick instead:

- denoise: Rician noise, sigma = 5% of the range, a new draw per seed; NLM and BM3D, both with
  the Rician bias correction; the noisy input.
- super_resolve: thick axial slices (box average of 2 or 4 slices); the cubic spline between
  thick-slice centres.

``--part validation`` is for choices: it sweeps the baselines' parameters (NLM's h, BM3D's
noise level) and the models' sampling settings (sampler, steps, ensemble, flips) and records them
all. ``--part test`` scores each config's own defaults and the baselines with the parameters chosen
on validation, once per shipped config; nothing is tuned after it. The part is scored on its
axial slab with up to ``CONTEXT`` slices of degraded input on either side (never reaching into the
other evaluation slab), as a model meets a whole scan; only the slab is scored, per slice
(:func:`medsynth.validation.fidelity.slice_scores`).

Each run writes one record per (method, part, seed, condition) under
``benchmarks/results/restoration/``, with per-slice scores and provenance. Then
``python benchmarks/results_doc.py`` regenerates docs/results.md.

Usage:
    python benchmarks/restoration.py --dims 2 --jobs denoise --part validation [--families diffusion gan l1]
    python benchmarks/restoration.py --dims 2 --jobs denoise --part test --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from medsynth.data.degradations import interpolate_slabs, rician_noise, thick_slices
from medsynth.synthesis.apply import TrainedModel, run_on_volume
from medsynth.training import RunDirectory, Trainer, load_experiment
from medsynth.training.dataset import load_volumes, slab_bounds
from medsynth.training.experiment import experiment_to_dict
from medsynth.training.run_dir import checkpoint_name
from medsynth.validation.fidelity import bm3d_rician, nlm_rician, slice_scores
from medsynth.validation.provenance import config_hash, provenance

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "configs"
RESULTS = ROOT / "benchmarks" / "results" / "restoration"
SIGMA = 0.05
FACTORS = (2, 4)
CONTEXT = 16
#: parameter grids of the baselines, searched on validation only
NLM_H = (0.6, 0.8, 1.0, 1.2, 1.5)
BM3D_STRENGTH = (0.8, 1.0, 1.2)
#: sampling settings compared on validation: (name, options); the first is the config's own default
#: (every option given: what a setting leaves out, the config decides, e.g. its ``model.ensemble``)
DIFFUSION_SWEEP = [("default", {})] + [
    (f"ddim-{steps}x{ensemble}", {"sampler": "ddim", "num_inference_steps": steps, "ensemble": ensemble})
    for steps, ensemble in ((2, 1), (5, 1), (10, 1), (2, 4), (5, 4), (10, 4))]
ONE_PASS_SWEEP = [("default", {}), ("flips-on", {"flips": True}), ("flips-off", {"flips": False})]


def evaluation_stack(config, part: str) -> tuple[np.ndarray, slice]:
    """The clean volume of ``part``'s slab with up to ``CONTEXT`` slices on either side, and where the
    slab lies in it. The context stops at the other evaluation slab: test voxels never feed a
    validation score, nor validation voxels a test score."""
    volume = load_volumes(config.data, config.spatial_dims)[0]  # scaled with the training part's statistics
    depth = volume.image.shape[-1]
    start, stop = slab_bounds(depth, getattr(config.data, part))
    other = slab_bounds(depth, config.data.test if part == "validation" else config.data.validation)
    low, high = max(0, start - CONTEXT), min(depth, stop + CONTEXT)
    if other[1] <= start:
        low = max(low, other[1])
    if other[0] >= stop:
        high = min(high, other[0])
    return volume.image[0, ..., low:high].numpy(), slice(start - low, stop - low)


def train_or_reuse(config_path: Path, seed: int, runs: Path, overrides: list[str]) -> tuple[Path, dict, float]:
    """The finished run of ``config_path`` with ``train.seed = seed``: reused only when its resolved
    config is the same (hash), resumed when unfinished, trained otherwise."""
    config = load_experiment(config_path, [*overrides, f"train.seed={seed}"])
    resolved = _trained_by(config)
    run = runs / f"{config_path.stem}_seed{seed}"
    directory = RunDirectory(run)
    if directory.exists():
        if config_hash(_trained_by(directory.read_config())) != config_hash(resolved):
            raise SystemExit(f"{run}: holds a run of another config; remove it or use another --runs")
        done = directory.latest_checkpoint()
        if done is None or done.name != checkpoint_name(config.train.steps):
            config.description = directory.read_config().description  # free text: may have been reworded
            Trainer(config, run, device="cpu", resume=True).fit()
    else:
        Trainer(config, run, device="cpu").fit()
    summary = json.loads((run / "summary.json").read_text())
    return run, resolved, float(summary["seconds_total"])


def _trained_by(config) -> dict:
    """The resolved config that decides what a run learns: every value but the free-text description."""
    resolved = experiment_to_dict(config)
    resolved.pop("description", None)
    return resolved


def conditions(job: str, config, clean: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    """The degraded inputs of ``clean``, by condition name: one noise draw per seed, or each thick-slice factor."""
    if job == "denoise":
        rng = np.random.default_rng(10_000 + seed)
        return {f"sigma_{SIGMA}": rician_noise(clean[None], SIGMA, rng)[0].astype(np.float32)}
    out = {}
    for factor in FACTORS:
        condition = thick_slices(clean[None], factor, axis=-1, interpolation=config.job.interpolation)
        out[f"x{factor}"] = np.asarray(condition[0], dtype=np.float32)
    return out


def baselines(job: str, clean: np.ndarray, degraded: np.ndarray, condition: str, part: str,
              chosen: dict) -> dict[str, tuple[np.ndarray, dict]]:
    """Baseline outputs by name, with their parameters: every grid point on validation, the chosen one on test."""
    if job == "super_resolve":
        factor = int(condition[1:])
        _, low = thick_slices(clean[None], factor, axis=-1, return_low_res=True)
        return {"cubic": (interpolate_slabs(low[0], factor, clean.shape[-1], kind="cubic"), {})}
    grid = {"nlm": [{"h": h} for h in NLM_H], "bm3d": [{"strength": s} for s in BM3D_STRENGTH]}
    if part == "test":
        grid = {name: [chosen[name]] for name in grid if name in chosen}
    out = {"noisy": (degraded, {})}
    for name, settings in grid.items():
        for params in settings:
            output = nlm_rician(degraded, SIGMA, **params) if name == "nlm" else bm3d_rician(degraded, SIGMA, **params)
            if output is None:  # bm3d not installed
                break
            label = name if part == "test" else f"{name}[{','.join(f'{k}={v}' for k, v in params.items())}]"
            out[label] = (output, params)
    return out


def write_record(record: dict, results: Path) -> Path:
    name = f"{record['job']}_{record['dims']}d_{record['method']}_{record['condition']}_seed{record['seed']}.json"
    path = results / record["part"] / name.replace("/", "-")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1) + "\n")
    return path


def choices(job: str, dims: int, results: Path) -> dict:
    """Baseline parameters chosen on validation: the grid point with the best mean PSNR over every seed."""
    path = results / "validation" / f"{job}_{dims}d_baseline_choices.json"
    return json.loads(path.read_text()) if path.exists() else {}


def choose_baselines(job: str, dims: int, results: Path) -> dict:
    """Pick each baseline's parameters from the validation records and save them."""
    means: dict[str, dict[str, list]] = {}
    for path in (results / "validation").glob(f"{job}_{dims}d_*_seed*.json"):
        record = json.loads(path.read_text())
        if record.get("kind") == "baseline" and "[" in record["method"]:
            name = record["method"].split("[")[0]
            means.setdefault(name, {}).setdefault(json.dumps(record["params"]), []).extend(record["scores"]["psnr"])
    chosen = {name: json.loads(max(grid, key=lambda k: float(np.mean(grid[k])))) for name, grid in means.items()}
    if chosen:
        path = results / "validation" / f"{job}_{dims}d_baseline_choices.json"
        path.write_text(json.dumps({**chosen, "rule": "best mean PSNR over every validation seed"}, indent=1) + "\n")
    return chosen


def evaluate(job: str, dims: int, family: str, seed: int, part: str, runs: Path, sweep: bool,
             overrides: list[str], results: Path) -> None:
    config_path = CONFIGS / f"{job}_{dims}d_{family}.yaml"
    run, resolved, train_seconds = train_or_reuse(config_path, seed, runs, overrides)
    trained = TrainedModel.load(run, "cpu")
    config = trained.config
    clean, slab = evaluation_stack(config, part)
    settings = DIFFUSION_SWEEP if family == "diffusion" else ONE_PASS_SWEEP
    settings = settings if sweep else settings[:1]
    common = {"job": job, "dims": dims, "part": part, "seed": seed, "slices": slab.stop - slab.start,
              "context": [int(slab.start), int(clean.shape[-1] - slab.stop)]}
    for condition, degraded in conditions(job, config, clean, seed).items():
        for label, options in settings:
            began = time.perf_counter()
            with torch.no_grad():
                estimate = run_on_volume(trained, degraded[None], seed=seed, **options)
            seconds = time.perf_counter() - began
            method = family if label == "default" else f"{family}[{label}]"
            scores = slice_scores(estimate[..., slab], clean[..., slab])
            write_record({**common, "kind": "model", "method": method, "condition": condition, "options": options,
                          "scores": scores, "seconds": {"train": train_seconds, "inference": round(seconds, 2)},
                          "provenance": provenance(config=resolved, seeds=[seed], config_file=config_path.name)},
                         results)
            print(f"{part} {job} {dims}d {condition} seed {seed} {method}: {np.mean(scores['psnr']):.2f} dB, "
                  f"SSIM {np.mean(scores['ssim']):.4f} ({seconds:.0f} s)")


def evaluate_baselines(job: str, dims: int, seed: int, part: str, config_path: Path, results: Path) -> None:
    """The baselines on the same slab, context and degradation (same noise draw per seed) as the models."""
    config = load_experiment(config_path)
    clean, slab = evaluation_stack(config, part)
    common = {"job": job, "dims": dims, "part": part, "seed": seed, "slices": slab.stop - slab.start,
              "context": [int(slab.start), int(clean.shape[-1] - slab.stop)], "kind": "baseline"}
    for condition, degraded in conditions(job, config, clean, seed).items():
        chosen = choices(job, dims, results)
        for name, (output, params) in baselines(job, clean, degraded, condition, part, chosen).items():
            scores = slice_scores(output[..., slab], clean[..., slab])
            write_record({**common, "method": name, "condition": condition, "params": params, "scores": scores,
                          "provenance": provenance(seeds=[seed])}, results)
            print(f"{part} {job} {dims}d {condition} seed {seed} {name}: {np.mean(scores['psnr']):.2f} dB, "
                  f"SSIM {np.mean(scores['ssim']):.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dims", type=int, default=2, choices=(2, 3))
    parser.add_argument("--jobs", nargs="+", default=["denoise", "super_resolve"], choices=["denoise", "super_resolve"])
    parser.add_argument("--families", nargs="+", default=["diffusion", "gan", "l1"], choices=["diffusion", "gan", "l1"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--part", choices=["validation", "test"], required=True)
    parser.add_argument("--runs", type=Path, default=Path("runs/bench"))
    parser.add_argument("--results", type=Path, default=RESULTS, help="where records go (a smoke test: elsewhere)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        help="config override for a smoke test, e.g. train.steps=2 (records say so: config hash)")
    args = parser.parse_args()
    for job in args.jobs:
        if args.part == "test" and not choices(job, args.dims, args.results):
            raise SystemExit(f"{job} {args.dims}D: no baseline choices; run --part validation first")
        for seed in args.seeds:
            evaluate_baselines(job, args.dims, seed, args.part, CONFIGS / f"{job}_{args.dims}d_{args.families[0]}.yaml",
                               args.results)
        for family in args.families:
            for seed in args.seeds:
                evaluate(job, args.dims, family, seed, args.part, args.runs, args.part == "validation", args.overrides,
                         args.results)
        if args.part == "validation":
            chosen = choose_baselines(job, args.dims, args.results)
            print(f"{job} {args.dims}D baselines chosen on validation: {chosen}")


if __name__ == "__main__":
    main()
