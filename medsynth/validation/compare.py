"""``medsynth compare``: train (or take) one model per family on the same split, sample, measure, report.

For each family and each real fraction of ``utility.fractions`` (and always the whole training
set), a generator is trained on exactly the real training slices the segmenter of that fraction
sees (``data.train_slices``). The generator of the whole set makes the sets every other question
is asked of, all from deformed *training* label maps (as ``medsynth augment`` makes them):

- realism: KID with a 95% interval (FID with its validity flag) against the held-out real slices,
  in three feature spaces, and whether the spaces rank the families alike (``compare_measure``);
- diversity within and across conditions beside the real data's, with the mode-collapse flag;
- calibrated memorization on features and on condition residuals;
- label fidelity: Dice of real-only segmenters on the synthetic images against their maps;
- utility: the segmenter trained on each fraction with each arm (both families, classical
  augmentation, domain randomisation) against real only, paired, with 95% intervals;
- costs: network evaluations per image (``Synthesizer.cost``), sampling speed,
  training wall time and whether the budgets are matched.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from pathlib import Path

import numpy as np
import torch

from medsynth.config import apply_overrides, from_dict, to_dict
from medsynth.device import resolve_device
from medsynth.errors import MedsynthError
from medsynth.io.files import prepare_output_dir, write_json
from medsynth.models import SampleOptions, split_options
from medsynth.synthesis.apply import TrainedModel, output_seed
from medsynth.training import RunDirectory, Trainer
from medsynth.training.experiment import ExperimentConfig, experiment_to_dict
from medsynth.validation import compare_measure as measure
from medsynth.validation.compare_config import (
    SPLIT_KEYS,
    CompareConfig,
    FeatureConfig,
    SamplingConfig,
    UtilityConfig,
    _experiments,
    load_compare_config,
    load_experiments,
    split_of,
)
from medsynth.validation.compare_data import RealSlices, class_names, deformed_conditions, real_slices, sample_images
from medsynth.validation.compare_report import write_compare_report
from medsynth.validation.compare_results import (
    FULL,
    CompareReport,
    FamilyFigures,
    FamilyResult,
    SamplingCost,
    SyntheticSets,
)
from medsynth.validation.compare_summary import headline, verdicts
from medsynth.validation.feature_spaces import build_feature_spaces
from medsynth.validation.features import FeatureExtractor, load_feature_extractor, train_feature_network
from medsynth.validation.mask_fidelity import label_fidelity, real_segmenters
from medsynth.validation.provenance import provenance
from medsynth.validation.realism import ImageSet, intensity_distances
from medsynth.validation.utility import REAL_ONLY, real_subset
from medsynth.validation.utility_study import SyntheticPairs, utility_experiment, utility_verdicts

log = logging.getLogger("medsynth")

__all__ = ["SPLIT_KEYS", "CompareConfig", "FeatureConfig", "SamplingConfig", "UtilityConfig", "_experiments",
           "compare", "load_compare_config", "load_experiments"]


def _key(fraction: float) -> str:
    return f"{float(fraction):g}"


def _run_for(name: str, key: str, experiment: ExperimentConfig, train_slices: list[int], out: Path,
             runs: dict[str, Path], device: str, progress: bool) -> tuple[Path, bool]:
    """The run of ``name`` at real fraction ``key``: the finished run given for the whole set, or one
    trained here on ``train_slices`` only (resumed when an earlier comparison left it unfinished).
    Returns the run and whether it was trained on exactly those slices."""
    if key == FULL and name in runs:
        saved = RunDirectory(runs[name]).read_config()
        exact = saved.data.train_slices is not None and sorted(saved.data.train_slices) == sorted(train_slices)
        return Path(runs[name]), exact
    run = out / "runs" / (name if key == FULL else f"{name}@{key}")
    config = dataclasses.replace(experiment, data=dataclasses.replace(experiment.data, train_slices=train_slices))
    directory = RunDirectory(run)
    if directory.exists():
        directory.continued_config(config)  # a run left by a comparison of another config is refused, not reused
    if not directory.is_finished(config.train.steps):
        log.info("training %s on %d real slices (fraction %s, %s, %d steps) into %s", name, len(train_slices), key,
                 config.family, config.train.steps, run)
        Trainer(config, run, device=device, resume=directory.exists(), progress=progress).fit()
    return run, True


def _check_given(runs: dict[str, Path], experiments: dict[str, ExperimentConfig]) -> None:
    """Refuse a run given with ``--runs`` that was trained on another split, or has no checkpoint."""
    for name, path in runs.items():
        given = RunDirectory(path)
        if split_of(given.read_config()) != split_of(experiments[name]):
            raise MedsynthError(f"{path}: trained on other data or another held-out split than the config's")
        if given.latest_checkpoint() is None:
            raise MedsynthError(f"{path}: run has no checkpoint yet")


def _sampling_options(trained: TrainedModel, steps: int | None) -> SampleOptions:
    """``sampling.steps`` for the families with steps (a GAN has none)."""
    return split_options(trained.model, SampleOptions(steps=steps))[0]


def _make_sets(name: str, runs: dict[str, tuple[Path, bool]], real: RealSlices, subsets: dict[str, list[int]],
               sampling: SamplingConfig, device: str, progress: bool) -> SyntheticSets:
    """Each fraction's synthetic pairs (``SyntheticPairs``) and, from the whole-set generator, the
    diversity groups and the cost of sampling."""
    train, pairs = real.train, {}
    for key, (run, exact) in runs.items():
        trained = TrainedModel.load(run, device)
        options = _sampling_options(trained, sampling.steps)
        sources = [i for i in subsets[key] for _ in range(sampling.augment_per_label)]
        labels, seeds, names = deformed_conditions(train, sources, sampling.seed, sampling.deform)
        images, seconds = sample_images(trained, labels, seeds, options, sampling.batch_size,
                                        f"{name} ({key}): synthetic pairs", progress)
        trained_on = subsets[key] if exact else list(range(len(train)))
        pairs[key] = SyntheticPairs(ImageSet(images, labels, names), sources, trained_on)
        if key != FULL:
            continue
        chosen = np.linspace(0, len(subsets[key]) - 1, min(sampling.diversity_conditions, len(subsets[key])))
        conditions = [subsets[key][int(i)] for i in np.unique(chosen.round().astype(int))]
        maps, _, map_names = deformed_conditions(train, conditions, sampling.seed, sampling.deform, "diversity")
        repeats = sampling.per_label
        group_seeds = [output_seed(sampling.seed, f"{map_names[i // repeats]}/{i % repeats}")
                       for i in range(len(maps) * repeats)]
        groups, group_seconds = sample_images(trained, maps.repeat_interleave(repeats, 0), group_seeds, options,
                                              sampling.batch_size, f"{name}: diversity samples", progress)
        sampler, evaluations = trained.describe_sampling(options)
        cost = SamplingCost(trained.family, sampler, options.describe(), evaluations,
                            (len(images) + len(groups)) / max(seconds + group_seconds, 1e-9), exact,
                            trained.config.train.batch_size)
        groups = groups.view(len(maps), repeats, *groups.shape[1:])
    return SyntheticSets(pairs, groups, maps, cost)


def _feature_network(config: CompareConfig, train: ImageSet, classes: int, out: Path, device: torch.device,
                     progress: bool) -> FeatureExtractor:
    if config.features.path:
        return load_feature_extractor(config.features.path, device)
    extractor = train_feature_network(list(train.images), list(train.labels), num_classes=classes,
                                      steps=config.features.steps, device=device, progress=progress)
    extractor.save(out / "feature_network")
    return extractor


def compare(config: CompareConfig | str | os.PathLike, out: str | os.PathLike, *,
            runs: dict[str, str | os.PathLike] | None = None, device: str = "auto",
            overrides: list[str] | None = None, progress: bool = True) -> Path:
    """Run the comparison and write ``out/report.html``, ``out/metrics.json`` and ``out/figures/*.png``.

    Args:
        config: a ``CompareConfig`` or the path of its YAML.
        runs: name -> finished run directory, used instead of training that experiment on the whole
            training set (generators for smaller real fractions are still trained here).
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
    experiments = load_experiments(config)
    _check_given(runs, experiments)
    target = resolve_device(device)
    inputs = [path for e in experiments.values() for path in (e.data.images, e.data.labels)] + list(runs.values())
    out = prepare_output_dir(out, *inputs)
    began = time.perf_counter()
    first = next(iter(experiments.values()))
    names = class_names(first)
    real = real_slices(first, config.min_foreground)
    train, held = real.train, real.held
    utility_config = config.utility
    keys = sorted({_key(f) for f in utility_config.fractions} | {FULL}, key=float)
    subsets = {key: real_subset(len(train), float(key)) for key in keys}
    log.info("%d real training slices, %d held-out slices of %s; %d segmenter seeds; generators per family: %d "
             "(fractions %s)", len(train), len(held), tuple(train.images.shape[2:]), len(utility_config.seeds),
             len(keys), ", ".join(keys))
    run_dirs = {name: {key: _run_for(name, key, e, [real.train_index[i] for i in subsets[key]], out, runs,
                                     str(target), progress) for key in keys}
                for name, e in experiments.items()}
    extractor = _feature_network(config, train, len(names), out, target, progress)
    sets = {name: _make_sets(name, run_dirs[name], real, subsets, config.samples, str(target), progress)
            for name in experiments}
    full = {name: sets[name].pairs[FULL].pairs for name in experiments}
    realism = measure.realism(build_feature_spaces(extractor, 2), held, train, full)
    models, shown = {}, {}
    for name, made in sets.items():
        whole_run = run_dirs[name][FULL][0]
        memorization = measure.memorization(extractor, train, held, full[name], len(names))
        models[name] = FamilyResult(made.cost, {key: measure.run_record(run, exact)
                                                for key, (run, exact) in run_dirs[name].items()},
                                    len(full[name]), measure.diversity(made.groups, held), memorization,
                                    measure.stability(whole_run), intensity_distances(held, full[name], names))
        shown[name] = FamilyFigures(full[name], memorization, made.groups, made.group_labels,
                                    measure.loss_curves(whole_run))
    segmenters: list[torch.nn.Module] = []

    def keep(arm: str, fraction: float, seed: int, network: torch.nn.Module) -> None:
        if arm == REAL_ONLY and _key(fraction) == FULL:
            segmenters.append(network)

    synthetic = {name: {float(k): sets[name].pairs[k] for k in map(_key, utility_config.fractions)}
                 for name in experiments}
    utility = utility_experiment(train, held, synthetic, class_names=names, seeds=utility_config.seeds,
                                 fractions=utility_config.fractions, steps=utility_config.steps,
                                 ratio=utility_config.ratio, baselines=utility_config.baselines,
                                 deform=config.samples.deform, device=target, progress=progress, keep=keep)
    utility["verdicts"] = utility_verdicts(utility)
    if not segmenters:  # the whole set is not among the utility fractions: train the real-only segmenters here
        segmenters = real_segmenters(train, num_classes=len(names), steps=utility_config.steps,
                                     seeds=utility_config.seeds, device=target)
    fidelity = label_fidelity(segmenters, full, held, class_names=names)
    report = CompareReport(
        config.description, to_dict(config), {name: experiment_to_dict(e) for name, e in experiments.items()},
        {"train_slices": len(train), "held_out_slices": len(held), "slice_shape": list(train.images.shape[2:]),
         "classes": names, "source": first.data.images or "bundled MNI152 2009 template (nilearn)",
         "test_slab": list(first.data.test), "fractions": {key: len(subsets[key]) for key in keys}},
        {"description": extractor.description, **extractor.config}, realism, fidelity, models, utility,
        measure.budget({name: model.full.train_seconds for name, model in models.items()}))
    report.verdicts = verdicts(report)
    report.headline = headline(report)
    report.seconds = round(time.perf_counter() - began, 1)
    report.provenance = provenance(config=to_dict(config), seeds=list(utility_config.seeds), seconds=report.seconds)
    write_json(out / "metrics.json", report.as_dict())
    return write_compare_report(out, report, train, held, shown)
