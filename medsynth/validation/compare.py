"""``medsynth compare``: train (or take) one model per family on the same split, sample, measure, report.

The comparison config (``configs/compare_2d.yaml``) names one experiment config per column,
e.g. ``diffusion: generate_2d_diffusion.yaml`` and ``gan: generate_2d_gan.yaml``; the ready-made
pairs are sized to the same CPU wall time (matched budgets). Every experiment must hold out the
same slab of the same data, so every model is measured on the same held-out real slices.

Per model: realism, coverage and diversity of samples for the held-out label maps; within-
condition diversity (several samples per label map: the collapse signal); near-copies of the
real training slices among augmentation samples (made from deformed training label maps, as
``medsynth augment`` makes them); training time, steps/s, peak memory and loss stability from
the run; sampling images/s timed here; and the downstream segmentation utility of the
augmentation samples.
"""

from __future__ import annotations

import copy
import csv
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from medsynth.config import apply_overrides, from_dict, load_yaml, to_dict
from medsynth.errors import MedsynthError
from medsynth.io.files import prepare_output_dir, write_json
from medsynth.synthesis.apply import TrainedModel, output_seed
from medsynth.synthesis.labels import deform_label
from medsynth.training import RunDirectory, Trainer
from medsynth.training.dataset import load_volumes, split_volumes
from medsynth.training.experiment import ExperimentConfig, experiment_from_dict, experiment_to_dict, load_experiment
from medsynth.training.run_dir import checkpoint_name
from medsynth.training.trainer import resolve_device
from medsynth.validation.features import FeatureExtractor, load_feature_extractor, train_feature_network
from medsynth.validation.metrics import ms_ssim_diversity
from medsynth.validation.realism import (
    ImageSet,
    common_shape,
    diversity,
    foreground_slices,
    memorization_check,
    realism_metrics,
    stack_images,
)
from medsynth.validation.report import write_report
from medsynth.validation.utility import segmentation_utility

log = logging.getLogger("medsynth")

@dataclass
class SamplingConfig:
    per_label: int = 3  # samples per held-out label map (realism, coverage, within-condition diversity)
    augment_per_label: int = 1  # synthetic pairs per real training label map (utility, memorization)
    steps: int | None = None  # diffusion sampling steps; None: each model's default
    deform: float = 1.0  # strength of the random label deformation of augmentation samples
    batch_size: int = 16
    seed: int = 0


@dataclass
class FeatureConfig:
    path: str | None = None  # a TorchScript file or a saved medsynth feature network; None: train one here
    steps: int = 300


@dataclass
class UtilityConfig:
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    fractions: list[float] = field(default_factory=lambda: [0.1, 1.0])
    steps: int = 200
    ratio: float = 0.5  # fraction of each batch drawn from the synthetic pairs


@dataclass
class CompareConfig:
    """What ``medsynth compare`` runs: one column per entry of ``experiments``."""

    experiments: dict[str, Any] = field(default_factory=dict)  # name -> config path (relative to this file) or mapping
    overrides: list[str] = field(default_factory=list)  # applied to every experiment, e.g. train.steps=200
    samples: SamplingConfig = field(default_factory=SamplingConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    utility: UtilityConfig = field(default_factory=UtilityConfig)
    min_foreground: float = 0.15  # slices whose label foreground covers less than this are not used
    description: str = ""
    base_dir: str = "."  # where relative experiment paths are found (the config file's folder)


#: the data settings that define which real slices are trained on and which are held out
SPLIT_KEYS = ("images", "labels", "modality", "ct_window", "spacing_mm", "slice_axis", "validation", "test",
              "case_split")


def _split(experiment: ExperimentConfig) -> dict:
    return {key: getattr(experiment.data, key) for key in SPLIT_KEYS}


def load_compare_config(path: str | os.PathLike, overrides: list[str] | None = None) -> CompareConfig:
    data = apply_overrides(load_yaml(path), overrides or [])
    data.setdefault("base_dir", str(Path(path).resolve().parent))
    try:
        return from_dict(CompareConfig, data)
    except MedsynthError as err:
        raise MedsynthError(f"{path}: {err}") from None


def _experiments(config: CompareConfig) -> dict[str, ExperimentConfig]:
    if len(config.experiments) < 1:
        raise MedsynthError("compare: `experiments` names no model to compare")
    out = {}
    for name, entry in config.experiments.items():
        if isinstance(entry, str):
            experiment = load_experiment(Path(config.base_dir) / entry, config.overrides)
        elif isinstance(entry, dict):
            data = apply_overrides(copy.deepcopy(entry), config.overrides)
            experiment = experiment_from_dict(data, f"experiments.{name}")
        else:
            raise MedsynthError(f"experiments.{name}: expected a config path or mapping, got {entry!r}")
        if experiment.job.name != "generate" or experiment.job.num_classes < 2 or experiment.spatial_dims != 2:
            raise MedsynthError(f"experiments.{name}: compare measures label-conditioned 2D generate models; "
                                f"this is {experiment.spatial_dims}D {experiment.job.name} "
                                f"with {experiment.job.num_classes} classes")
        out[name] = experiment
    first_name, first = next(iter(out.items()))
    for name, experiment in out.items():
        if _split(experiment) != _split(first) or experiment.job.num_classes != first.job.num_classes:
            raise MedsynthError(f"experiments.{name}: its data ({', '.join(SPLIT_KEYS)}) or classes differ from "
                                f"{first_name}'s; every model must be trained and measured on the same split")
    return out


def _slices(experiment: ExperimentConfig, min_foreground: float) -> tuple[ImageSet, ImageSet]:
    """Real training and test 2D slices (along ``data.slice_axis``) of the experiment's data (its
    train and test parts; ``held`` below is the test part)."""
    volumes = load_volumes(experiment.data, experiment.spatial_dims)
    if any(v.label is None for v in volumes):
        raise MedsynthError("compare: the data has no label maps (data.labels); generate models need them")
    parts = split_volumes(volumes, experiment.data)
    train_parts, held_parts = parts["train"], parts["test"]
    axis = experiment.data.slice_axis

    def cut(parts: list) -> tuple[list, list, list]:
        images, labels, names = [], [], []
        for part in parts:
            for index in foreground_slices(part.image[0], part.label[0], axis, min_foreground):
                images.append(part.image[0].select(axis, index))
                labels.append(part.label[0].select(axis, index))
                names.append(f"{part.name}:{index}")
        return images, labels, names

    train, held = cut(train_parts), cut(held_parts)
    for what, found in (("training", train), ("held-out", held)):
        if len(found[0]) < 2:
            raise MedsynthError(f"compare: only {len(found[0])} {what} slices with label foreground >= "
                                f"{min_foreground}; check data.test and min_foreground")
    shape = common_shape(held[0] + train[0])

    def to_set(images: list, labels: list, names: list) -> ImageSet:
        return ImageSet(stack_images(images, shape), stack_images(labels, shape).round().long(), names)

    return to_set(*train), to_set(*held)


def _train_or_take(name: str, experiment: ExperimentConfig, out: Path, runs: dict[str, Path], device: str) -> Path:
    if name in runs:
        if _split(RunDirectory(runs[name]).read_config()) != _split(experiment):
            raise MedsynthError(f"{runs[name]}: trained on other data or another held-out split than the config's")
        if RunDirectory(runs[name]).latest_checkpoint() is None:
            raise MedsynthError(f"{runs[name]}: run has no checkpoint yet")
        return Path(runs[name])
    run = out / "runs" / name
    log.info("training %s (%s, %d steps) into %s", name, experiment.family, experiment.train.steps, run)
    finished = RunDirectory(run).latest_checkpoint()
    if finished is None or finished.name != checkpoint_name(experiment.train.steps):
        Trainer(experiment, run, device=device, resume=RunDirectory(run).exists()).fit()
    return run


def _one_hot(labels: torch.Tensor, classes: int) -> torch.Tensor:
    return F.one_hot(labels[:, 0].long(), classes).movedim(-1, 1).float()


def _sample(trained: TrainedModel, labels: torch.Tensor, seeds: list[int], options: dict, batch_size: int,
            desc: str) -> tuple[torch.Tensor, float]:
    """One image per label map (``(N, 1, *spatial)``), each batch seeded; returns images and seconds."""
    classes = trained.config.job.num_classes
    out = []
    began = time.perf_counter()
    with torch.no_grad():
        for start in tqdm(range(0, len(labels), batch_size), desc=desc, leave=False):
            condition = _one_hot(labels[start:start + batch_size], classes).to(trained.device)
            out.append(trained.model.sample(condition, seed=seeds[start], **options).float().cpu().clamp(0, 1))
    return torch.cat(out), time.perf_counter() - began


def _log_columns(run: Path) -> dict[str, np.ndarray]:
    with open(run / "log.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    return {key: np.array([float(r[key]) for r in rows if r.get(key) not in (None, "")]) for key in rows[0]}


def stability(run: Path, window: int = 10) -> dict:
    """Loss curves' spread: for each logged loss, the coefficient of variation (std / |mean|) of its
    running mean over ``window`` logged values, in the second half of training. Smoothing removes
    the step-to-step noise of the objective itself (diffusion's random timesteps), leaving swings
    and drifts; the first logged loss is the headline value."""
    columns = _log_columns(run)
    losses = [k for k in columns if k.startswith("loss")]
    out = {}
    for key in losses:
        values = columns[key][len(columns[key]) // 2:]
        if len(values) > window:
            values = np.convolve(values, np.ones(window) / window, mode="valid")
        out[key] = float(values.std() / max(abs(values.mean()), 1e-12)) if len(values) > 1 else float("nan")
    return {"loss_cv": out, "headline_loss": losses[0] if losses else None}


def evaluate_model(name: str, run: Path, train: ImageSet, held: ImageSet, extractor: FeatureExtractor,
                   real_features: np.ndarray, config: CompareConfig, class_names: list[str],
                   device: str) -> tuple[dict, dict]:
    """Metrics of one model, and the images the report shows."""
    trained = TrainedModel.load(run, device)
    sampling = config.samples
    one_pass = trained.describe_sampling({})[1] == 1
    options = {} if one_pass else trained.sampling_options(sampling.steps, None)
    sampler, evaluations = trained.describe_sampling(options)
    repeats = sampling.per_label
    labels = held.labels.repeat_interleave(repeats, 0)
    seeds = [output_seed(sampling.seed, f"{held.names[i // repeats]}/{i % repeats}") for i in range(len(labels))]
    images, seconds = _sample(trained, labels, seeds, options, sampling.batch_size, f"{name}: held-out label maps")
    names = [f"{held.names[i // repeats]}#{i % repeats}" for i in range(len(labels))]
    generated = ImageSet(images, labels, names)
    metrics = realism_metrics(held, generated, extractor, class_names=class_names, real_features=real_features)
    if repeats > 1:
        groups = images.view(len(held), repeats, *images.shape[1:])
        metrics["ms_ssim_within_condition"] = float(np.mean([ms_ssim_diversity(g) for g in groups]))
    # augmentation pairs from deformed real training label maps, as `medsynth augment` makes them
    sources = [i for i in range(len(train)) for _ in range(sampling.augment_per_label)]
    seeds = [output_seed(sampling.seed, f"{train.names[s]}/augment/{k}") for k, s in enumerate(sources)]
    deformed = torch.stack([torch.as_tensor(deform_label(train.labels[s, 0].numpy(), seed, sampling.deform))[None]
                            for s, seed in zip(sources, seeds, strict=True)])
    pairs_images, pairs_seconds = _sample(trained, deformed, seeds, options, sampling.batch_size,
                                          f"{name}: augmentation pairs")
    pairs = ImageSet(pairs_images, deformed, [f"{train.names[s]}#aug{k}" for k, s in enumerate(sources)])
    summary_path = run / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    metrics.update({
        "run": str(run), "family": trained.family, "sampler": sampler, "network_evaluations": evaluations,
        "memorization": memorization_check(train, pairs),
        "images_per_second": (len(images) + len(pairs_images)) / max(seconds + pairs_seconds, 1e-9),
        "train_seconds": summary.get("seconds_total"), "train_steps": summary.get("steps"),
        "steps_per_second": summary.get("steps_per_second"), "peak_memory_mb": summary.get("peak_memory_mb"),
        "parameters": summary.get("parameters"), "batch_size": trained.config.train.batch_size,
        "stability": stability(run)})
    return metrics, {"samples": generated, "pairs": pairs, "sources": sources, "curves": _log_columns(run)}


def compare(config: CompareConfig | str | os.PathLike, out: str | os.PathLike, *,
            runs: dict[str, str | os.PathLike] | None = None, device: str = "auto",
            overrides: list[str] | None = None, progress: bool = True) -> Path:
    """Run the comparison and write ``out/report.html``, ``out/metrics.json`` and ``out/figures/*.png``.

    Args:
        config: a ``CompareConfig`` or the path of its YAML.
        runs: name -> finished run directory, used instead of training that experiment.
        overrides: ``key=value`` overrides of the comparison config.
    Returns:
        The path of ``report.html``.
    """
    if not isinstance(config, CompareConfig):
        config = load_compare_config(config, overrides)
    elif overrides:
        config = from_dict(CompareConfig, apply_overrides(to_dict(config), overrides))
    runs = {k: Path(v) for k, v in (runs or {}).items()}
    unknown = set(runs) - set(config.experiments)
    if unknown:
        raise MedsynthError(f"--runs: {', '.join(sorted(unknown))} is not an experiment of the config "
                            f"({', '.join(config.experiments)})")
    experiments = _experiments(config)
    target = resolve_device(device)
    inputs = [path for e in experiments.values() for path in (e.data.images, e.data.labels)] + list(runs.values())
    out = prepare_output_dir(out, *inputs)
    began = time.perf_counter()
    first = next(iter(experiments.values()))
    from medsynth.data.samples import TISSUE_CLASSES

    classes = first.job.num_classes
    class_names = list(TISSUE_CLASSES) if first.data.images is None and classes == 3 else \
        ["background"] + [f"class_{k}" for k in range(1, classes)]
    trained_runs = {name: _train_or_take(name, e, out, runs, str(target)) for name, e in experiments.items()}
    train, held = _slices(first, config.min_foreground)
    log.info("%d real training slices, %d held-out slices of %s", len(train), len(held), tuple(train.images.shape[2:]))
    if config.features.path:
        extractor = load_feature_extractor(config.features.path, target)
    else:
        extractor = train_feature_network(list(train.images), list(train.labels), num_classes=classes,
                                          steps=config.features.steps, device=target,
                                          progress=progress)
        extractor.save(out / "feature_network")
    real_features = extractor.extract(held.images)
    metrics = {}
    shown = {}
    for name, run in trained_runs.items():
        metrics[name], shown[name] = evaluate_model(name, run, train, held, extractor, real_features, config,
                                                    class_names, str(target))
    synthetic = {name: (shown[name]["pairs"], shown[name]["sources"]) for name in trained_runs}
    utility = segmentation_utility(train, held, synthetic, class_names=class_names, seeds=config.utility.seeds,
                                   fractions=config.utility.fractions, steps=config.utility.steps,
                                   ratio=config.utility.ratio, device=target,
                                   progress=progress)
    report = {"description": config.description, "config": to_dict(config),
              "experiments": {name: experiment_to_dict(e) for name, e in experiments.items()},
              "data": {"train_slices": len(train), "held_out_slices": len(held),
                       "slice_shape": list(train.images.shape[2:]), "classes": class_names,
                       "source": first.data.images or "bundled MNI152 2009 template (nilearn)",
                       "test_slab": list(first.data.test)},
              "feature_network": {"description": extractor.description, **extractor.config},
              "real_ms_ssim": diversity(held.images), "models": metrics, "utility": utility,
              "seconds": round(time.perf_counter() - began, 1)}
    write_json(out / "metrics.json", report)
    return write_report(out, report, train, held, shown)
