"""Quality of the CPU-sized configs of each model family on held-out real data, side by side with
classical baselines.

For each family and job it trains the ready-made config ``configs/<job>_<dims>d_<family>.yaml``
(or reuses a finished run in --runs), then evaluates on the axial slab of the MNI152 template
that the config holds out (``data.holdout``: never seen in training). The configs of both
families are sized to the same CPU wall time; ``train_seconds`` records what each took.

- denoise: Rician noise, sigma = 5% of the range (fixed seed). PSNR/SSIM of the noisy input,
  of non-local means (scikit-image, h = 0.8 sigma, fast mode) and of the model (diffusion at
  several samplers: DDIM-k; the mean of 4 DDIM-5 samples, an estimate of the posterior mean;
  DDPM-1000 with --ddpm. GAN: one forward pass). Targets: +4 dB over the input; beat NLM in
  PSNR or SSIM.
- super_resolve: thick axial slices (box average of `factor` slices) of the slab, reconstructed
  on the isotropic grid. Baseline: cubic (2D) / linear-in-z = trilinear (3D) interpolation from
  the thick-slice centres. Target: PSNR and SSIM above the baseline.
- generate: an image for each held-out tissue label map. Targets: mean intensity per tissue
  within 10% of the real one; ordering background < grey matter < white matter (T1).

Restoration (denoise, super_resolve) runs on the held-out slab with 16 slices of degraded input
on either side, as on a whole patient volume, and is scored on the slab only: a slab thinner than
a network's receptive field, run alone, would be judged on its replicate-padded edges. Models run
as ``medsynth denoise``/``super-resolve``/``augment`` run them (``run_on_volume``: 2D slice by
slice; 3D restoration in overlapping windows of two training patches a side).
PSNR is over the head (label > 0) with data range 1 (images normalised to [0, 1]); SSIM (MONAI,
Gaussian window 11) over the whole slab, slice by slice where it is thinner than the window
(``medsynth.validation.fidelity``). Everything is computed in this run; results are merged into
benchmarks/results/quality_<dims>d.json (``{family: {job: ...}}``, an entry replaced when re-run)
and a side-by-side table of every family's default setting is printed.

Usage: python benchmarks/quality.py [--dims 2|3] [--families diffusion gan]
       [--jobs denoise super_resolve generate] [--runs runs/bench] [--ddpm] [--default-only] [--flips]
       [--set train.steps=100 ...]
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
from medsynth.training.dataset import holdout_bounds, load_volumes, split_holdout
from medsynth.validation.fidelity import non_local_means, psnr, ssim

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
RESULTS = Path(__file__).resolve().parent / "results"
SIGMA = 0.05
CONTEXT = 16  # slices of (degraded) input kept on either side of the held-out slab for restoration jobs
#: diffusion (sampler, steps, ensemble): ensemble > 1 averages that many samples (posterior-mean estimate)
DIFFUSION_SETTINGS = [("ddim", 1, 1), ("ddim", 2, 1), ("ddim", 5, 1), ("ddim", 10, 1), ("ddim", 20, 1), ("ddim", 2, 4),
                      ("ddim", 5, 4)]


def settings(family: str, ddpm: bool, default_only: bool = False, flips: bool = False) -> dict[str, dict]:
    """Sampling settings to evaluate, by name: the family's default first (named ``default``);
    with ``flips``, also the default with the flip ensemble (``job.flip_ensemble``) switched on
    (``flips-on``) and off (``flips-off``), restoration jobs only."""
    named = {"default": {}}
    if flips:
        named.update({"flips-on": {"flips": True}, "flips-off": {"flips": False}})
    if family != "diffusion" or default_only:
        return named  # one network evaluation; nothing to choose
    for sampler, steps, ensemble in DIFFUSION_SETTINGS + ([("ddpm", 1000, 1)] if ddpm else []):
        label = f"{sampler}-{steps}" + (f"x{ensemble}-mean" if ensemble > 1 else "")
        named[label] = {"sampler": sampler, "num_inference_steps": steps, "ensemble": ensemble}
    return named


def train_or_reuse(family: str, job: str, dims: int, runs: Path, overrides: list[str]) -> tuple[Path, float]:
    config = load_experiment(CONFIGS / f"{job}_{dims}d_{family}.yaml", overrides)
    run = runs / f"{job}_{dims}d_{family}"
    done = RunDirectory(run).latest_checkpoint()
    if done is not None and done.name == f"step_{config.train.steps:07d}":
        summary = json.loads((run / "summary.json").read_text())
        return run, float(summary["seconds_total"])
    summary = Trainer(config, run, device="cpu", resume=RunDirectory(run).exists()).fit()
    return run, float(summary["seconds_total"])


def heldout_slab(run: Path):
    config = RunDirectory(run).read_config()
    volumes = load_volumes(config.data, config.spatial_dims)
    _, held = split_holdout(volumes, config.data.holdout)
    return config, held[0]


def heldout_with_context(run: Path) -> tuple[object, np.ndarray, np.ndarray, slice]:
    """Config, image and label of the held-out slab with ``CONTEXT`` slices of input on either side
    (along Z), and where the slab lies in them.

    Restoration runs on the whole stack, as it would on a patient's volume, and is scored on the
    slab only: the context slices are inputs (degraded), never scored.
    """
    config = RunDirectory(run).read_config()
    volume = load_volumes(config.data, config.spatial_dims)[0]
    depth = volume.image.shape[-1]
    start, stop = holdout_bounds(depth, config.data.holdout)
    low, high = max(0, start - CONTEXT), min(depth, stop + CONTEXT)
    image, label = volume.image[0, ..., low:high].numpy(), volume.label[0, ..., low:high].numpy()
    return config, image, label, slice(start - low, stop - low)


def timed_run(trained: TrainedModel, condition: np.ndarray, **options) -> tuple[np.ndarray, float]:
    """The model over a volume ``condition`` ``(C, X, Y, Z)`` as ``medsynth denoise``/``augment`` run it
    (2D slice by slice, 3D restoration in windows: :func:`medsynth.synthesis.apply.run_on_volume`)."""
    start = time.perf_counter()
    with torch.no_grad():
        out = run_on_volume(trained, condition, seed=0, **options)
    return out, time.perf_counter() - start


def scores(estimate: np.ndarray, clean: np.ndarray, mask: np.ndarray, slab: slice) -> dict[str, float]:
    """PSNR (over the head) and SSIM of ``estimate`` on the held-out ``slab`` of the last axis."""
    return {"psnr": psnr(estimate[..., slab], clean[..., slab], mask[..., slab]),
            "ssim": ssim(estimate[..., slab], clean[..., slab])}


def eval_denoise(run: Path, named: dict[str, dict]) -> dict:
    _, clean, labels, slab = heldout_with_context(run)  # (X, Y, Z)
    trained = TrainedModel.load(run, "cpu")
    mask = labels > 0
    noisy = rician_noise(clean[None], SIGMA, np.random.default_rng(123))[0].astype(np.float32)
    results = {"sigma": SIGMA, "slices": slab.stop - slab.start, "context": CONTEXT}
    results["noisy"] = scores(noisy, clean, mask, slab)
    start = time.perf_counter()
    nlm = non_local_means(noisy, SIGMA)
    results["nlm"] = {**scores(nlm, clean, mask, slab), "seconds": time.perf_counter() - start}
    for label, options in named.items():
        estimate, seconds = timed_run(trained, noisy[None], **options)
        results[label] = {**scores(estimate, clean, mask, slab), "seconds": seconds}
    return results


def eval_super_resolve(run: Path, named: dict[str, dict]) -> dict:
    config, clean, labels, slab = heldout_with_context(run)
    trained = TrainedModel.load(run, "cpu")
    mask = labels > 0
    results = {"slices": slab.stop - slab.start, "context": CONTEXT}
    for factor in (2, 4):
        condition, low = thick_slices(clean[None], factor, axis=-1, return_low_res=True,
                                      interpolation=config.job.interpolation)
        condition, low = condition[0].astype(np.float32), low[0]
        kind = "cubic" if config.spatial_dims == 2 else "linear"
        baseline = interpolate_slabs(low, factor, clean.shape[-1], kind=kind)
        entry = {kind: scores(baseline, clean, mask, slab)}
        for label, options in named.items():  # 2D models: coronal planes (x, z), z the degraded axis
            estimate, seconds = timed_run(trained, condition[None], **options)
            entry[label] = {**scores(estimate, clean, mask, slab), "seconds": seconds}
        results[f"factor_{factor}"] = entry
    return results


def eval_generate(run: Path, named: dict[str, dict]) -> dict:
    config, slab = heldout_slab(run)
    trained = TrainedModel.load(run, "cpu")
    real = slab.image[0].numpy()
    labels = slab.label[0].numpy()
    one_hot = np.moveaxis(np.eye(config.job.num_classes, dtype=np.float32)[labels.astype(int)], -1, 0)
    fake, seconds = timed_run(trained, one_hot)
    names = ["background", "grey_matter", "white_matter"]
    results = {"seconds": seconds, "tissues": {}}
    for k, name in enumerate(names):
        region = labels == k
        real_mean, fake_mean = float(real[region].mean()), float(fake[region].mean())
        results["tissues"][name] = {"real_mean": real_mean, "generated_mean": fake_mean,
                                    "relative_error": abs(fake_mean - real_mean) / max(real_mean, 1e-6)}
    means = [results["tissues"][n]["generated_mean"] for n in names]
    results["ordering_ok"] = bool(means[0] < means[1] < means[2])
    results["within_10_percent"] = bool(all(results["tissues"][n]["relative_error"] <= 0.10 for n in names[1:]))
    return results


EVALUATORS = {"denoise": eval_denoise, "super_resolve": eval_super_resolve, "generate": eval_generate}


def table(report: dict) -> str:
    """Markdown table: each family's default setting next to the baseline, per job and metric."""
    families = list(report)
    rows = ["| job | metric | baseline | " + " | ".join(families) + " |", "|---" * (3 + len(families)) + "|"]

    def add(job: str, metric: str, baseline: str, value) -> None:
        cells = [f"{value(report[f][job]):.3f}" if job in report[f] else "" for f in families]
        rows.append(f"| {job} | {metric} | {baseline} | " + " | ".join(cells) + " |")

    for job in EVALUATORS:
        done = [report[f][job] for f in families if job in report[f]]
        if not done:
            continue
        if job == "denoise":
            for metric in ("psnr", "ssim"):
                add(job, metric, f"NLM {done[0]['nlm'][metric]:.3f}", lambda e, m=metric: e["default"][m])
        elif job == "super_resolve":
            for factor in ("factor_2", "factor_4"):
                kind = "cubic" if "cubic" in done[0][factor] else "linear"
                for metric in ("psnr", "ssim"):
                    add(job, f"{factor} {metric}", f"{kind} {done[0][factor][kind][metric]:.3f}",
                        lambda e, f=factor, m=metric: e[f]["default"][m])
        else:
            for tissue in ("grey_matter", "white_matter"):
                add(job, f"mean in {tissue}", f"real {done[0]['tissues'][tissue]['real_mean']:.3f}",
                    lambda e, t=tissue: e["tissues"][t]["generated_mean"])
        add(job, "train seconds", "", lambda e: e["train_seconds"])
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dims", type=int, default=2, choices=(2, 3))
    parser.add_argument("--families", nargs="+", default=["diffusion", "gan"], choices=["diffusion", "gan"])
    parser.add_argument("--jobs", nargs="+", default=list(EVALUATORS), choices=list(EVALUATORS))
    parser.add_argument("--runs", type=Path, default=Path("runs/bench"))
    parser.add_argument("--ddpm", action="store_true", help="also sample with DDPM-1000 (slow: minutes per job)")
    parser.add_argument("--default-only", action="store_true",
                        help="evaluate each family's default sampling setting only (not the DDIM step sweep)")
    parser.add_argument("--flips", action="store_true",
                        help="restoration: also evaluate with the flip ensemble on and off (job.flip_ensemble)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="config override key=value")
    args = parser.parse_args()
    out = RESULTS / f"quality_{args.dims}d.json"
    report = json.loads(out.read_text()) if out.exists() else {}  # entries run earlier are kept
    for family in args.families:
        for job in args.jobs:
            run, train_seconds = train_or_reuse(family, job, args.dims, args.runs, args.overrides)
            with torch.no_grad():
                named = settings(family, args.ddpm, args.default_only, args.flips and job != "generate")
                result = EVALUATORS[job](run, named)
            report.setdefault(family, {})[job] = {"train_seconds": train_seconds, **result}
            print(json.dumps({family: {job: report[family][job]}}, indent=1))
            out.parent.mkdir(exist_ok=True)
            out.write_text(json.dumps(report, indent=2) + "\n")  # after every job: a stopped run keeps its results
    print(table(report))


if __name__ == "__main__":
    main()
