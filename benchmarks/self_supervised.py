"""Self-supervised restoration (``--self``) under the restoration protocol (docs/results.md is generated from it).

Each family (``l1``, ``gan``, ``diffusion``) trains on the degraded scan alone and restores it,
exactly as ``medsynth denoise/super-resolve --self`` does (the same function, the shipped defaults).
The scan is ``benchmarks/restoration.py``'s evaluation stack of the bundled MNI152 template (the
part's axial slab with up to 16 slices of context) with the same degradation and noise draw per
seed, so every method of the restoration tables saw the same degraded voxels and the scores pair
slice by slice with the baselines (cubic B-spline; NLM and BM3D with the Rician bias correction)
and with the template-trained models. The model never sees a clean voxel, so scoring it on the
template is fair; it trains on the stack only (45 slices: a scan of partial coverage).

- super_resolve: thick axial slices, 4 fine slices each (8 mm slices from the 2 mm template).
- denoise: Rician noise, sigma = 5% of the range.

``--part validation`` (seeds 0 1) picks each job's default family by the best mean PSNR
(``validation/<job>_2d_self_choices.json``; the CLI default must match it); ``--part test`` scores
every family once per seed. ``--timing`` times the default family end to end from the command line
on a 256x256x40 thick-slice (or noisy) scan, as a user would run it.

``--diffusion-settings`` (validation only) trains the diffusion family once per seed and restores
with each sampling setting of :data:`DIFFUSION_SETTINGS` (records ``self_diffusion_s<steps>e<ensemble>``):
inference over both planes dominates the time to result, so the setting is chosen among those whose
estimated time fits the 10-minute target (:func:`fits_time`).

Usage:
    python -m benchmarks.self_supervised --part validation --seeds 0 1
    python -m benchmarks.self_supervised --part test --seeds 0 1 2
    python -m benchmarks.self_supervised --timing
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np

from benchmarks.restoration import (
    CONFIGS,
    RESULTS,
    conditions,
    evaluation_stack,
    record_path,
    save_example,
    scored,
    write_record,
)
from medsynth.data.degradations import thick_slices
from medsynth.synthesis import restore
from medsynth.synthesis.self_supervised import SELF_DEFAULT_FAMILY, SELF_FAMILIES, SELF_MODELS, SelfTraining
from medsynth.training import RunDirectory, load_experiment
from medsynth.training.experiment import experiment_to_dict
from medsynth.validation.fidelity import slice_scores
from medsynth.validation.provenance import provenance

FACTOR = 4
SPACING = 2.0
CONDITION = {"super_resolve": f"x{FACTOR}", "denoise": "sigma_0.05"}
TIMING = Path(__file__).resolve().parent / "results" / "self_supervised_timing.json"
#: (DDIM steps, ensemble) of the self-trained diffusion model compared on validation
DIFFUSION_SETTINGS = ((1, 1), (2, 1), (2, 2), (2, 4))
#: time to result target (s) of ``--self`` on the timing scan, 2 CPU cores
TARGET_SECONDS = 600
#: the training time in the log of ``--self``
TRAINED = r"trained an? \w+ model for \d+ steps in (\d+) s"


def fits_time(job: str, steps: int, ensemble: int) -> bool:
    """Whether a diffusion setting of ``steps * ensemble`` network evaluations per slice is expected
    within :data:`TARGET_SECONDS` on the timing scan: the timing record's training time plus its
    inference time scaled by the evaluations (inference is network calls over every slice of both planes)."""
    record = json.loads(TIMING.read_text())[job]
    # records made before they saved their settings ran the diffusion default of then: 2 steps, mean of 4
    settings = record.get("settings", {"num_inference_steps": 2, "ensemble": 4})
    measured = settings["num_inference_steps"] * settings["ensemble"]
    train = record.get("train_seconds") or float(re.search(TRAINED, "\n".join(record["log"]))[1])
    return train + (record["seconds"] - train) * steps * ensemble / measured <= TARGET_SECONDS


def evaluate_settings(job: str, seed: int, results: Path, steps: int | None) -> None:
    """Validation records of the diffusion family at every :data:`DIFFUSION_SETTINGS`, trained once
    (the first setting trains through ``--self`` and keeps the model, the others apply it as ``--model``)."""
    condition = CONDITION[job]
    clean, slab = evaluation_stack(load_experiment(CONFIGS / f"{job}_2d_l1.yaml"), "validation")
    with tempfile.TemporaryDirectory(prefix="medsynth-self-bench-") as folder:
        folder = Path(folder)
        scan = degraded_scan(job, clean, seed, folder)
        run = folder / "run"
        for setting, ensemble in DIFFUSION_SETTINGS:
            method = f"self_diffusion_s{setting}e{ensemble}"
            path = record_path(job, 2, "validation", method, condition, seed, results)
            if scored(path):
                print(f"{path.name}: already scored, kept")
                continue
            training = None if run.exists() else SelfTraining(family="diffusion", seed=seed, steps=steps,
                                                              keep_model=run, minutes=24 * 60)
            began = time.perf_counter()
            restore(scan, folder / "out.nii.gz", run if training is None else None, job, self_training=training,
                    steps=setting, ensemble=ensemble, seed=seed, progress=False, device="cpu")
            seconds = time.perf_counter() - began
            estimate = np.asarray(nib.load(folder / "out.nii.gz").dataobj, dtype=np.float32)[..., :clean.shape[-1]]
            (folder / "out.nii.gz").unlink()
            summary = json.loads((run / "summary.json").read_text())
            resolved = experiment_to_dict(RunDirectory(run).read_config())
            resolved.pop("description", None)
            resolved["data"].pop("images", None)  # a temporary path
            scores = slice_scores(estimate[..., slab], clean[..., slab])
            train_seconds = float(summary["seconds_total"]) if training is not None else 0.0
            write_record({"job": job, "dims": 2, "part": "validation", "seed": seed, "slices": slab.stop - slab.start,
                          "context": [int(slab.start), int(clean.shape[-1] - slab.stop)], "kind": "model",
                          "method": method, "condition": condition,
                          "options": {"self_supervised": True, "family": "diffusion", "num_inference_steps": setting,
                                      "ensemble": ensemble},
                          "steps_trained": summary["steps"], "stopped_at_time_limit": summary["stopped_at_time_limit"],
                          "scores": scores,
                          "seconds": {"train": train_seconds, "inference": round(seconds - train_seconds, 2)},
                          "provenance": provenance(config=resolved, seeds=[seed],
                                                   config_file="--self --family diffusion")}, results)
            print(f"validation {job} {condition} seed {seed} {method}: {np.mean(scores['psnr']):.2f} dB, "
                  f"SSIM {np.mean(scores['ssim']):.4f} ({seconds:.0f} s)")


def choose_setting(job: str, results: Path) -> dict | None:
    """The diffusion setting with the best mean PSNR over every validation seed and slice among those
    expected to fit the time target; saved beside the family choice."""
    by_setting: dict[tuple[int, int], dict[int, list[float]]] = {}
    for steps, ensemble in DIFFUSION_SETTINGS:
        pattern = f"{job}_2d_self_diffusion_s{steps}e{ensemble}_{CONDITION[job]}_seed*.json"
        for path in (results / "validation").glob(pattern):
            record = json.loads(path.read_text())
            by_setting.setdefault((steps, ensemble), {})[record["seed"]] = record["scores"]["psnr"]
    seeds = set().union(*(set(v) for v in by_setting.values())) if by_setting else set()
    means = {k: float(np.mean([x for s in v.values() for x in s])) for k, v in by_setting.items() if set(v) == seeds}
    fitting = {k: m for k, m in means.items() if fits_time(job, *k)}
    if not fitting:
        return None
    steps, ensemble = max(fitting, key=fitting.get)
    chosen = {"num_inference_steps": steps, "ensemble": ensemble, "seeds": sorted(seeds),
              "mean_psnr": {f"s{k[0]}e{k[1]}": round(m, 3) for k, m in means.items()},
              "fits_time": {f"s{k[0]}e{k[1]}": fits_time(job, *k) for k in means},
              "rule": f"best mean PSNR over every validation seed and slice among the settings expected within "
                      f"{TARGET_SECONDS} s on the timing scan"}
    path = results / "validation" / f"{job}_2d_self_diffusion_settings.json"
    path.write_text(json.dumps(chosen, indent=1) + "\n")
    return chosen


def degraded_scan(job: str, clean: np.ndarray, seed: int, folder: Path) -> Path:
    """The degraded stack as the NIfTI scan a user would have: 2 mm voxels, or 8 mm thick slices
    whose centres lie where the fine grid's slabs put them (so the output's slice j is clean slice j)."""
    config = load_experiment(CONFIGS / f"{job}_2d_l1.yaml")
    affine = np.diag([SPACING, SPACING, SPACING, 1.0])
    if job == "denoise":
        array = conditions(job, config, clean, seed)[CONDITION[job]]
    else:
        _, low = thick_slices(clean[None], FACTOR, axis=-1, return_low_res=True)
        array = np.asarray(low[0])
        affine[2, 2] = SPACING * FACTOR
        affine[2, 3] = SPACING * (FACTOR - 1) / 2.0
    path = folder / "scan.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(array, dtype=np.float32), affine), path)
    return path


def evaluate(job: str, family: str, seed: int, part: str, results: Path, steps: int | None) -> None:
    condition, method = CONDITION[job], f"self_{family}"
    path = record_path(job, 2, part, method, condition, seed, results)
    if scored(path):
        print(f"{path.name}: already scored, kept")
        return
    clean, slab = evaluation_stack(load_experiment(CONFIGS / f"{job}_2d_l1.yaml"), part)
    with tempfile.TemporaryDirectory(prefix="medsynth-self-bench-") as folder:
        folder = Path(folder)
        scan = degraded_scan(job, clean, seed, folder)
        # no time limit: every run trains its family's full steps, whatever else shares the machine
        # (time to result on an idle machine: --timing)
        training = SelfTraining(family=family, seed=seed, steps=steps, keep_model=folder / "run", minutes=24 * 60)
        began = time.perf_counter()
        restore(scan, folder / "out.nii.gz", None, job, self_training=training, seed=seed, progress=False,
                device="cpu")
        seconds = time.perf_counter() - began
        estimate = np.asarray(nib.load(folder / "out.nii.gz").dataobj, dtype=np.float32)[..., :clean.shape[-1]]
        run = RunDirectory(folder / "run")
        summary = json.loads((run.path / "summary.json").read_text())
        resolved = experiment_to_dict(run.read_config())
    resolved.pop("description", None)
    resolved["data"].pop("images", None)  # a temporary path
    scores = slice_scores(estimate[..., slab], clean[..., slab])
    if part == "test" and seed == 0:
        save_example(estimate, slab, job, 2, condition, method, results)
    train_seconds = float(summary["seconds_total"])
    write_record({"job": job, "dims": 2, "part": part, "seed": seed, "slices": slab.stop - slab.start,
                  "context": [int(slab.start), int(clean.shape[-1] - slab.stop)], "kind": "model", "method": method,
                  "condition": condition, "options": {"self_supervised": True, "family": family},
                  "steps_trained": summary["steps"], "stopped_at_time_limit": summary["stopped_at_time_limit"],
                  "scores": scores,
                  "seconds": {"train": train_seconds, "inference": round(seconds - train_seconds, 2),
                              "total": round(seconds, 2)},
                  "provenance": provenance(config=resolved, seeds=[seed], config_file=f"--self --family {family}")},
                 results)
    print(f"{part} {job} {condition} seed {seed} {method}: {np.mean(scores['psnr']):.2f} dB, "
          f"SSIM {np.mean(scores['ssim']):.4f} ({seconds:.0f} s, {summary['steps']} steps)")


def choose(job: str, results: Path) -> str | None:
    """The family with the best mean PSNR over every validation seed and slice (families scored on
    every seed); the diffusion family at its chosen sampling setting (:func:`choose_setting`) if there is one."""
    by_family: dict[str, dict[int, list[float]]] = {}
    settings = results / "validation" / f"{job}_2d_self_diffusion_settings.json"
    for family in SELF_FAMILIES:
        method = f"self_{family}"
        if family == "diffusion" and settings.exists():
            chosen = json.loads(settings.read_text())
            method += f"_s{chosen['num_inference_steps']}e{chosen['ensemble']}"
        for path in (results / "validation").glob(f"{job}_2d_{method}_{CONDITION[job]}_seed*.json"):
            record = json.loads(path.read_text())
            by_family.setdefault(family, {})[record["seed"]] = record["scores"]["psnr"]
    seeds = set().union(*(set(v) for v in by_family.values())) if by_family else set()
    complete = {f: v for f, v in by_family.items() if set(v) == seeds}
    if not complete:
        return None
    best = max(complete, key=lambda f: float(np.mean([x for s in complete[f].values() for x in s])))
    means = {f: round(float(np.mean([x for s in v.values() for x in s])), 3) for f, v in complete.items()}
    path = results / "validation" / f"{job}_2d_self_choices.json"
    path.write_text(json.dumps({"family": best, "mean_psnr": means, "seeds": sorted(seeds),
                                "rule": "best mean PSNR over every validation seed and slice"}, indent=1) + "\n")
    return best


def timing(job: str) -> dict:
    """Wall time of ``medsynth <job> SCAN OUT --self`` (default family) on a 256x256x40 scan, from the shell."""
    from scipy.ndimage import zoom

    from medsynth.data.samples import mni152

    template = mni152()[0].array.astype(np.float32)
    template /= float(np.percentile(template, 99.5))
    with tempfile.TemporaryDirectory(prefix="medsynth-self-timing-") as folder:
        folder = Path(folder)
        in_plane = zoom(template, (256 / template.shape[0], 256 / template.shape[1], 1), order=1)
        if job == "super_resolve":  # 40 slices of 4x the in-plane spacing
            volume = zoom(in_plane, (1, 1, 40 * FACTOR / in_plane.shape[2]), order=1)
            _, low = thick_slices(volume[None], FACTOR, axis=-1, return_low_res=True)
            array, affine = np.asarray(low[0]), np.diag([0.9, 0.9, 0.9 * FACTOR, 1.0])
        else:
            volume = zoom(in_plane, (1, 1, 40 / in_plane.shape[2]), order=1)
            noise = np.random.default_rng(0).normal(0, 0.05, (2, *volume.shape))
            array, affine = np.hypot(volume + noise[0], noise[1]), np.diag([0.9, 0.9, 3.6, 1.0])
        scan = folder / "scan.nii.gz"
        nib.save(nib.Nifti1Image(array.astype(np.float32), affine), scan)
        command = ["medsynth", job.replace("_", "-"), str(scan), str(folder / "out.nii.gz"), "--self",
                   "--device", "cpu"]
        began = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "TERM": "dumb"})
        seconds = time.perf_counter() - began
    if done.returncode:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
    family = SELF_DEFAULT_FAMILY[job]
    model = SELF_MODELS[family]["model"]
    trained = re.search(TRAINED, done.stderr)
    return {"command": f"medsynth {job.replace('_', '-')} SCAN OUT --self", "family": family,
            "settings": {key: model[key] for key in ("num_inference_steps", "ensemble") if key in model}
            | {"flips": SELF_MODELS[family]["flips"]},
            "scan": list(array.shape), "seconds": round(seconds, 1),
            "train_seconds": float(trained.group(1)) if trained else None,
            "log": done.stderr.strip().splitlines()[-4:], "provenance": provenance()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", nargs="+", default=["super_resolve", "denoise"], choices=["super_resolve", "denoise"])
    parser.add_argument("--families", nargs="+", default=list(SELF_FAMILIES), choices=list(SELF_FAMILIES))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--part", choices=["validation", "test"])
    parser.add_argument("--timing", action="store_true", help="time the default family from the command line")
    parser.add_argument("--diffusion-settings", action="store_true",
                        help="validation: the diffusion family's sampling settings (DIFFUSION_SETTINGS), trained once")
    parser.add_argument("--results", type=Path, default=RESULTS, help="where records go (a smoke test: elsewhere)")
    parser.add_argument("--train-steps", type=int, default=None, help="smoke tests only: fewer training steps")
    args = parser.parse_args()
    if args.part is None and not args.timing and not args.diffusion_settings:
        parser.error("give --part, --diffusion-settings and/or --timing")
    for job in args.jobs if args.part else []:
        if args.part == "test":
            chosen = json.loads((args.results / "validation" / f"{job}_2d_self_choices.json").read_text())["family"] \
                if (args.results / "validation" / f"{job}_2d_self_choices.json").exists() else None
            if chosen != SELF_DEFAULT_FAMILY[job]:
                raise SystemExit(f"{job}: validation chose {chosen}, the default family is {SELF_DEFAULT_FAMILY[job]}: "
                                 "run --part validation, then set SELF_DEFAULT_FAMILY before scoring test")
        for family in args.families:
            for seed in args.seeds:
                evaluate(job, family, seed, args.part, args.results, args.train_steps)
        if args.part == "validation":
            print(f"{job}: validation chose {choose(job, args.results)}")
    if args.diffusion_settings:
        for job in args.jobs:
            for seed in args.seeds:
                evaluate_settings(job, seed, args.results, args.train_steps)
            print(f"{job}: validation chose {choose_setting(job, args.results)}")
    if args.timing:  # jobs timed earlier are kept, each with its own provenance
        record = json.loads(TIMING.read_text()) if TIMING.exists() else {}
        shared = record.pop("provenance", None)  # older records: one block for both jobs
        for job in ("super_resolve", "denoise"):
            if job in record and shared is not None:
                record[job].setdefault("provenance", shared)
        record.update({job: timing(job) for job in args.jobs})
        TIMING.write_text(json.dumps(record, indent=1) + "\n")
        print(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
