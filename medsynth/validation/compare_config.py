"""What ``medsynth compare`` runs: the comparison config and the experiments it names.

The comparison config (``configs/compare_2d.yaml``) names one experiment config per column,
e.g. ``diffusion: generate_2d_diffusion.yaml`` and ``gan: generate_2d_gan.yaml``. Every
experiment must hold out the same slabs of the same data, so every model is measured on the same
held-out real slices.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medsynth.config import apply_overrides, from_dict, load_yaml
from medsynth.errors import MedsynthError
from medsynth.training.experiment import ExperimentConfig, experiment_from_dict, load_experiment
from medsynth.validation.utility_study import DEFAULT_SEEDS


@dataclass
class SamplingConfig:
    """How the synthetic sets are made (all from deformed *training* label maps, as ``augment`` makes them)."""

    augment_per_label: int = 1  # synthetic pairs per real training label map (realism, memorization, utility)
    per_label: int = 3  # samples per condition for within-condition diversity
    diversity_conditions: int = 8  # deformed training label maps sampled per_label times each
    steps: int | None = None  # diffusion sampling steps; None: each model's default
    deform: float = 1.0  # strength of the random label deformation
    batch_size: int = 16
    seed: int = 0

    def validate(self) -> None:
        for key in ("augment_per_label", "diversity_conditions", "batch_size"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key}: must be at least 1, got {getattr(self, key)}")
        if self.per_label < 2:
            raise ValueError(f"per_label: within-condition diversity needs at least 2 samples, got {self.per_label}")
        if not 0 <= self.deform <= 10:
            raise ValueError(f"deform: must be in [0, 10], got {self.deform}")


@dataclass
class FeatureConfig:
    path: str | None = None  # a TorchScript file or a saved medsynth feature network; None: train one here
    steps: int = 300


@dataclass
class UtilityConfig:
    """The utility study: every arm trains the same segmenter with each seed at each real fraction."""

    seeds: list[int] = field(default_factory=lambda: list(DEFAULT_SEEDS))
    fractions: list[float] = field(default_factory=lambda: [0.1, 1.0])  # a generator is trained for each
    steps: int = 200
    ratio: float = 0.5  # fraction of each batch drawn from the arm
    baselines: bool = True  # the classical-augmentation and domain-randomisation arms

    def validate(self) -> None:
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds: need at least one seed, each once, got {self.seeds}")
        if not self.fractions or any(not 0 < f <= 1 for f in self.fractions):
            raise ValueError(f"fractions: each must be in (0, 1], got {self.fractions}")
        if len({f"{f:g}" for f in self.fractions}) != len(self.fractions):
            raise ValueError(f"fractions: a fraction is listed twice: {self.fractions}")
        if self.steps < 1 or not 0 <= self.ratio <= 1:
            raise ValueError(f"steps must be >= 1 and ratio in [0, 1], got {self.steps} and {self.ratio}")


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
#: (``data.train_slices`` is not one: compare sets it per real fraction)
SPLIT_KEYS = ("images", "labels", "modality", "ct_window", "spacing_mm", "slice_axis", "validation", "test",
              "case_split")


def split_of(experiment: ExperimentConfig) -> dict:
    return {key: getattr(experiment.data, key) for key in SPLIT_KEYS}


def load_compare_config(path: str | os.PathLike, overrides: list[str] | None = None) -> CompareConfig:
    data = apply_overrides(load_yaml(path), overrides or [])
    data.setdefault("base_dir", str(Path(path).resolve().parent))
    try:
        return from_dict(CompareConfig, data)
    except MedsynthError as err:
        raise MedsynthError(f"{path}: {err}") from None


def load_experiments(config: CompareConfig) -> dict[str, ExperimentConfig]:
    """The experiments of ``config``, checked: label-conditioned 2D ``generate`` models on one split.

    Raises:
        MedsynthError: no experiment, a wrong job, other data or another split than the first's,
            or a ``data.train_slices`` of its own (compare chooses the slices per real fraction).
    """
    if len(config.experiments) < 1:
        raise MedsynthError("compare: `experiments` names no model to compare")
    for key, value in (("samples", config.samples), ("utility", config.utility)):
        try:
            value.validate()
        except ValueError as err:
            raise MedsynthError(f"{key}.{err}") from None
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
        if experiment.data.train_slices is not None:
            raise MedsynthError(f"experiments.{name}: data.train_slices is set; compare chooses each generator's "
                                "training slices itself (utility.fractions)")
        out[name] = experiment
    first_name, first = next(iter(out.items()))
    for name, experiment in out.items():
        if split_of(experiment) != split_of(first) or experiment.job.num_classes != first.job.num_classes:
            raise MedsynthError(f"experiments.{name}: its data ({', '.join(SPLIT_KEYS)}) or classes differ from "
                                f"{first_name}'s; every model must be trained and measured on the same split")
    return out


#: the older private name, kept for callers of ``medsynth.validation.compare._experiments``
_experiments = load_experiments
