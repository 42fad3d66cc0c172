"""Restoration evidence under the train / validation / test protocol (docs/results.md is generated from it).

For each shipped CPU config ``configs/<job>_<dims>d_<family>.yaml`` (family: diffusion, gan, and
``l1``: the GAN's generator trained with plain L1, the non-generative ablation) and each training
seed, it trains the model (or reuses a finished run whose resolved config hash matches) and scores
it on one part of the bundled MNI152 template, beside the baselines a user would pick instead:

- denoise: Rician noise, sigma = 5% of the range, a new draw per seed; NLM and BM3D per slice,
  and their volume forms over the whole stack (``nlm3d``: 3D patches; ``bm4d``), each with the
  Rician bias correction; the noisy input.
- super_resolve: thick axial slices (box average of 2 or 4 slices); the cubic spline between
  thick-slice centres.

``--part validation`` is for choices: it sweeps the baselines' parameters (NLM's h, BM3D's
noise level) and the models' sampling settings (sampler, steps, ensemble, flips), records them all
and picks, by the best mean PSNR over every validation seed and slice, each baseline's parameters
and each family's sampling settings (``validation/<job>_<dims>d_{baseline,sampling}_choices.json``).
The chosen sampling settings go into the config by hand (a reviewed change); ``--part test``
refuses a config that runs anything else, then scores each config's own defaults and the chosen
baselines, once: a record already there for the same config hash is kept, never re-scored. Runs
are reused across parts and across sampling settings (they do not change what a run learns). The
part is scored on its axial slab with up to ``CONTEXT`` slices of degraded input on either side
(never reaching into the other evaluation slab), as a model meets a whole scan; only the slab is
scored, per slice (:func:`medsynth.validation.fidelity.slice_scores`).

Each run writes one record per (method, part, seed, condition) under
``benchmarks/results/restoration/``, with per-slice scores and provenance. Then
``python -m benchmarks.results_doc`` regenerates docs/results.md.

Usage:
    python -m benchmarks.restoration --dims 2 --jobs denoise --part validation [--families diffusion gan l1]
    python -m benchmarks.restoration --dims 2 --jobs denoise --part test --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import functools
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from medsynth.data.degradations import interpolate_slabs, rician_noise, thick_slices
from medsynth.errors import MedsynthError
from medsynth.models import SampleOptions
from medsynth.synthesis.apply import TrainedModel, run_on_volume
from medsynth.training import RunDirectory, Trainer, load_experiment
from medsynth.training.dataset import load_volumes, slab_bounds
from medsynth.training.experiment import experiment_to_dict
from medsynth.validation.fidelity import bm3d_rician, bm4d_rician, nlm_rician, slice_scores
from medsynth.validation.provenance import provenance

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "configs"
RESULTS = ROOT / "benchmarks" / "results" / "restoration"
SIGMA = 0.05
FACTORS = (2, 4)
CONTEXT = 16
#: parameter grids of the baselines, searched on validation only
NLM_H = (0.6, 0.8, 1.0, 1.2, 1.5)
#: ``nlm3d``: NLM over the whole stack (3D patches), what a user would run on a 3D scan; its
#: neighbourhood takes in the adjacent slices, so a smaller h and search distance suit it
NLM3D_GRID = [{"h": h, "patch_distance": d} for h in (0.5, 0.6, 0.7, 0.8) for d in (4, 6)]
BM3D_STRENGTH = (0.8, 1.0, 1.2)
#: sampling settings compared on validation, by name (every option given: what a setting leaves
#: out, the config decides); a diffusion config's own setting joins them. 3D windows cost more per
#: call, so 3D compares fewer.
DIFFUSION_GRID = {2: ((2, 1), (5, 1), (10, 1), (2, 4), (5, 4), (10, 4)), 3: ((2, 1), (2, 4), (5, 4))}
ONE_PASS_SWEEP = [("flips-on", {"flips": True}), ("flips-off", {"flips": False})]
#: config fields that do not change what a run learns: the free-text description, and the sampling
#: settings, chosen on validation after training
NOT_LEARNT = ("description", "model.sampler", "model.num_inference_steps", "model.ensemble", "model.guidance_scale",
              "job.flip_ensemble")


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
    """The finished run of ``config_path`` with ``train.seed = seed``: reused only when what it
    learns is the same (``RunDirectory.continued_config`` up to ``NOT_LEARNT``), resumed when
    unfinished, trained otherwise. Returns the run, the resolved config (sampling settings
    included: what a record's ``config_hash`` names) and the training seconds."""
    config = load_experiment(config_path, [*overrides, f"train.seed={seed}"])
    run = runs / f"{config_path.stem}_seed{seed}"
    directory = RunDirectory(run)
    if directory.exists():
        try:
            trained = directory.continued_config(config, may_differ=NOT_LEARNT)
        except MedsynthError as error:
            raise SystemExit(f"{error}; remove the run or use another --runs") from None
        if not directory.is_finished(config.train.steps):
            Trainer(trained, run, device="cpu", resume=True).fit()
    else:
        Trainer(config, run, device="cpu").fit()
    summary = json.loads((run / "summary.json").read_text())
    return run, _resolved(config), float(summary["seconds_total"])


def _resolved(config) -> dict:
    """The resolved config, every value but the free-text description."""
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
              chosen: dict) -> dict[str, tuple[dict, Callable[[], np.ndarray | None]]]:
    """Baselines by name, with their parameters and a function computing their output (``None``:
    not installed): every grid point on validation, the chosen one on test."""
    if job == "super_resolve":
        factor = int(condition[1:])
        _, low = thick_slices(clean[None], factor, axis=-1, return_low_res=True)
        return {"cubic": ({}, lambda: interpolate_slabs(low[0], factor, clean.shape[-1], kind="cubic"))}
    strengths = [{"strength": s} for s in BM3D_STRENGTH]
    grid = {"nlm": [{"h": h} for h in NLM_H], "nlm3d": NLM3D_GRID, "bm3d": strengths, "bm4d": strengths}
    if part == "test":
        grid = {name: [chosen[name]] for name in grid if name in chosen}
    out: dict = {"noisy": ({}, lambda: degraded)}
    methods = {"nlm": nlm_rician, "nlm3d": functools.partial(nlm_rician, volume=True), "bm3d": bm3d_rician,
               "bm4d": bm4d_rician}
    for name, settings in grid.items():
        method = methods[name]
        for params in settings:
            label = name if part == "test" else f"{name}[{','.join(f'{k}={v}' for k, v in params.items())}]"
            out[label] = (params, functools.partial(method, degraded, SIGMA, **params))
    return out


def save_example(output: np.ndarray, slab: slice, job: str, dims: int, condition: str, method: str,
                 results: Path) -> Path:
    """A picture of one output on test (seed 0) for docs/results.md: the slab's middle axial slice
    (denoise), or a coronal section through the slab, z stretched 3x (super-resolution: the
    through-plane axis is where thick slices show)."""
    import matplotlib.pyplot as plt

    view = np.clip(output[..., slab], 0.0, 1.0)
    if job == "denoise":
        image = view[..., view.shape[-1] // 2].T
    else:
        image = np.repeat(view[:, view.shape[1] // 2, :].T, 3, axis=0)
    path = results / "test" / "examples" / f"{job}_{dims}d_{condition}_{method}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    plt.imsave(path, image, cmap="gray", vmin=0.0, vmax=1.0, origin="lower")
    return path


def record_path(job: str, dims: int, part: str, method: str, condition: str, seed: int, results: Path) -> Path:
    return results / part / f"{job}_{dims}d_{method}_{condition}_seed{seed}.json".replace("/", "-")


def write_record(record: dict, results: Path) -> Path:
    path = record_path(record["job"], record["dims"], record["part"], record["method"], record["condition"],
                       record["seed"], results)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1) + "\n")
    return path


def scored(path: Path, config_hash_: str | None = None) -> bool:
    """Whether ``path`` already holds the score (of the config with this hash): never scored twice."""
    if not path.exists():
        return False
    return config_hash_ is None or json.loads(path.read_text())["provenance"].get("config_hash") == config_hash_


def choices(job: str, dims: int, results: Path, kind: str = "baseline") -> dict:
    """What validation chose (``kind``: baseline parameters, or each family's sampling settings)."""
    path = results / "validation" / f"{job}_{dims}d_{kind}_choices.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _best(grid: dict[str, dict[str, dict[int, list]]]) -> dict[str, str]:
    """For each name, the setting with the best mean PSNR among those scored on every (seed, condition) of that name."""
    best = {}
    for name, settings in grid.items():
        seeds = set().union(*(set(by_seed) for by_seed in settings.values()))
        complete = {k: v for k, v in settings.items() if set(v) == seeds}
        if complete:
            best[name] = max(complete, key=lambda k: float(np.mean([x for s in complete[k].values() for x in s])))
    return best


def choose(job: str, dims: int, results: Path) -> tuple[dict, dict]:
    """Pick the baselines' parameters and each family's sampling settings from the validation
    records (best mean PSNR over every validation seed and slice) and save them."""
    baseline_grid: dict = {}
    sampling_grid: dict = {}
    options: dict[str, dict] = {}
    for path in (results / "validation").glob(f"{job}_{dims}d_*_seed*.json"):
        record = json.loads(path.read_text())
        if "[" not in record["method"]:
            continue
        name, label = record["method"].rstrip("]").split("[", 1)
        scored_on, psnr = (record["seed"], record["condition"]), record["scores"]["psnr"]
        if record["kind"] == "baseline":
            key = json.dumps(record["params"])
            baseline_grid.setdefault(name, {}).setdefault(key, {})[scored_on] = psnr
        else:
            sampling_grid.setdefault(name, {}).setdefault(label, {})[scored_on] = psnr
            options[f"{name}[{label}]"] = record["options"]
    rule = "best mean PSNR over every validation seed, condition and slice"
    baseline = {name: json.loads(key) for name, key in _best(baseline_grid).items()}
    sampling = {name: {"setting": label, "options": options[f"{name}[{label}]"]}
                for name, label in _best(sampling_grid).items()}
    for kind, chosen in (("baseline", baseline), ("sampling", sampling)):
        if chosen:
            path = results / "validation" / f"{job}_{dims}d_{kind}_choices.json"
            path.write_text(json.dumps({**chosen, "rule": rule}, indent=1, sort_keys=True) + "\n")
    return baseline, sampling


def sample_options(record: dict) -> SampleOptions:
    """The options of a record's ``options`` (config key names: ``num_inference_steps``, ...)."""
    return SampleOptions(flips=record.get("flips", False), sampler=record.get("sampler"),
                         steps=record.get("num_inference_steps"), ensemble=record.get("ensemble"))


def shipped_options(config) -> dict:
    """The sampling settings a shipped config runs with, as a record's ``options``."""
    options = {"flips": bool(config.job.flip_ensemble)}
    if config.family == "diffusion":
        model = _resolved(config)["model"]
        options.update({key: model[key] for key in ("sampler", "num_inference_steps", "ensemble")})
    return options


def check_chosen(config, family: str, chosen: dict, config_file: str) -> None:
    """Refuse to score test with sampling settings other than those chosen on validation."""
    if family not in chosen:
        raise SystemExit(f"{config_file}: no sampling settings chosen on validation; run --part validation first")
    shipped = shipped_options(config)
    differ = {k: v for k, v in chosen[family]["options"].items() if shipped.get(k) != v}
    if differ:
        raise SystemExit(f"{config_file}: validation chose {chosen[family]['setting']} ({differ}); "
                         f"the config runs {shipped}: set it in the config before scoring test")


def sweep_settings(family: str, dims: int, default: dict) -> list[tuple[str, dict]]:
    """The named sampling settings validation compares for ``family``, the config's own included."""
    if family != "diffusion":
        return list(ONE_PASS_SWEEP)
    settings = {f"ddim-{steps}x{ensemble}": {"sampler": "ddim", "num_inference_steps": steps, "ensemble": ensemble}
                for steps, ensemble in DIFFUSION_GRID[dims]}
    own = {key: default[key] for key in ("sampler", "num_inference_steps", "ensemble")}
    settings.setdefault(f"{own['sampler']}-{own['num_inference_steps']}x{own['ensemble']}", own)
    return list(settings.items())


def evaluate(job: str, dims: int, family: str, seed: int, part: str, runs: Path, sweep: bool,
             overrides: list[str], results: Path) -> None:
    config_path = CONFIGS / f"{job}_{dims}d_{family}.yaml"
    shipped = load_experiment(config_path, overrides)
    if part == "test":  # before training: a config that does not run validation's choice is refused at once
        check_chosen(shipped, family, choices(job, dims, results, "sampling"), config_path.name)
    run, resolved, train_seconds = train_or_reuse(config_path, seed, runs, overrides)
    trained = TrainedModel.load(run, "cpu")
    clean, slab = evaluation_stack(trained.config, part)
    default = shipped_options(shipped)
    # validation scores named settings only (the config's own among them): a record of "the
    # default" would go stale as soon as validation's choice changes the config
    settings = sweep_settings(family, dims, default) if sweep else [("default", default)]
    common = {"job": job, "dims": dims, "part": part, "seed": seed, "slices": slab.stop - slab.start,
              "context": [int(slab.start), int(clean.shape[-1] - slab.stop)]}
    block = provenance(config=resolved, seeds=[seed], config_file=config_path.name)
    for condition, degraded in conditions(job, trained.config, clean, seed).items():
        for label, options in settings:
            method = family if label == "default" else f"{family}[{label}]"
            path = record_path(job, dims, part, method, condition, seed, results)
            if scored(path, block["config_hash"]):
                print(f"{path.name}: already scored, kept")
                continue
            began = time.perf_counter()
            with torch.no_grad():
                estimate = run_on_volume(trained, degraded[None], seed=seed, options=sample_options(options))
            seconds = time.perf_counter() - began
            scores = slice_scores(estimate[..., slab], clean[..., slab])
            if part == "test" and seed == 0 and label == "default":
                save_example(estimate, slab, job, dims, condition, family, results)
            write_record({**common, "kind": "model", "method": method, "condition": condition, "options": options,
                          "scores": scores, "seconds": {"train": train_seconds, "inference": round(seconds, 2)},
                          "provenance": block}, results)
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
        for name, (params, compute) in baselines(job, clean, degraded, condition, part, chosen).items():
            path = record_path(job, dims, part, name, condition, seed, results)
            if scored(path):
                print(f"{path.name}: already scored, kept")
                continue
            output = compute()
            if output is None:  # bm3d / bm4d not installed
                print(f"{name}: not installed (pip install medsynth[bench]), skipped")
                continue
            scores = slice_scores(output[..., slab], clean[..., slab])
            if part == "test" and seed == 0:
                save_example(output, slab, job, dims, condition, name, results)
                save_example(clean, slab, job, dims, condition, "clean", results)
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
    parser.add_argument("--skip-baselines", action="store_true",
                        help="score the models only (another process scores the baselines of this part)")
    parser.add_argument("--skip-models", action="store_true",
                        help="score the baselines only (a baseline added later; the models' records are kept)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        help="config override for a smoke test, e.g. train.steps=2 (records say so: config hash)")
    args = parser.parse_args()
    for job in args.jobs:
        if args.part == "test" and not choices(job, args.dims, args.results, "sampling"):
            raise SystemExit(f"{job} {args.dims}D: nothing chosen on validation; run --part validation first")
        for seed in [] if args.skip_baselines else args.seeds:
            evaluate_baselines(job, args.dims, seed, args.part, CONFIGS / f"{job}_{args.dims}d_{args.families[0]}.yaml",
                               args.results)
        for family in [] if args.skip_models else args.families:
            for seed in args.seeds:
                evaluate(job, args.dims, family, seed, args.part, args.runs, args.part == "validation", args.overrides,
                         args.results)
        if args.part == "validation":
            baseline, sampling = choose(job, args.dims, args.results)
            print(f"{job} {args.dims}D chosen on validation: baselines {baseline}, sampling {sampling}")


if __name__ == "__main__":
    main()
