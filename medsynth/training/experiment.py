"""The experiment config: what ``medsynth train CONFIG.yaml`` reads, validates and saves in the run."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from medsynth.config import (
    ConfigError,
    apply_overrides,
    blame_override,
    check_range,
    from_dict,
    load_yaml,
    split_key,
    to_dict,
)
from medsynth.errors import MedsynthError, describe, short

Job = Literal["generate", "denoise", "super_resolve"]
#: Largest patch, in voxels, a config may ask for (a 256^3 patch; beyond that use smaller patches).
MAX_PATCH_VOXELS = 256**3
#: Most label classes of ``generate`` (one condition channel each).
MAX_CLASSES = 1024
#: Largest count of steps (training, logging, checkpoints).
MAX_STEPS = 10**9
#: Largest model: parameters of all the family's networks together.
MAX_PARAMETERS = 2**30
#: fp32 bytes per parameter while training: weights, gradients, Adam's two moments and the EMA copy.
BYTES_PER_PARAMETER = 20


@dataclass
class DataConfig:
    """Where the training images come from and how they are prepared."""

    images: str | None = None  # folder of NIfTI/DICOM; None: the bundled MNI152 template
    labels: str | None = None  # folder of label maps matched by file stem (generate)
    modality: str | None = None  # "CT" or "MR"; None: from the files
    ct_window: str = "brain"  # CT preset window for intensity scaling (medsynth.data.CT_WINDOWS)
    spacing_mm: float | None = None  # resample to this isotropic spacing; None: keep
    patch_size: tuple[int, ...] = (64, 64)
    slice_axis: int = 2  # 2D models: spatial axis the volumes are sliced along (2 = axial)
    # three disjoint parts (docs/architecture.md, "Train, validation, test"): one volume is cut into
    # axial slabs (fractions of Z); several volumes are split by case
    validation: tuple[float, float] = (0.26, 0.39)  # slab for every choice (steps, sampler, baselines)
    test: tuple[float, float] = (0.51, 0.64)  # slab scored once per shipped config
    case_split: tuple[float, float] = (0.15, 0.15)  # several volumes: fractions of cases for validation, test
    min_foreground: float = 0.1  # patches need this fraction of foreground (label > 0, else image > 0.05)
    augment: bool = False  # random flips along every patch axis and a random gamma (0.8-1.25) of each patch
    # 2D only: train on these slices of the training part alone (None: all). Slice k is the k-th
    # slice along slice_axis of the training volumes (or slabs) in split order (training.dataset.
    # training_slice_names); `medsynth compare` sets it to train a generator on a fraction of the data
    train_slices: list[int] | None = None
    # train on the one scan in `images` alone, with no split and no clean data (`--self`): super_resolve
    # pairs from its high-resolution in-plane slices, denoise with Neighbor2Neighbor pairs (docs/self-supervised.md)
    self_supervised: bool = False

    def validate(self) -> None:
        check_range(self, "patch_size", 4)
        voxels = 1
        for p in self.patch_size:
            voxels *= p
        if voxels > MAX_PATCH_VOXELS:
            raise ValueError(f"patch_size: {short(list(self.patch_size))} is {voxels} voxels, "
                             f"more than {MAX_PATCH_VOXELS}")
        if self.slice_axis not in (0, 1, 2):
            raise ValueError(f"slice_axis: must be 0, 1 or 2, got {self.slice_axis}")
        for key in ("validation", "test"):
            check_range(self, key, 0.0, 1.0)
            if getattr(self, key)[0] > getattr(self, key)[1]:
                raise ValueError(f"{key}: expected 0 <= start <= stop <= 1, got {list(getattr(self, key))}")
        (a, b), (c, d) = self.validation, self.test
        if a < b and c < d and a < d and c < b:
            raise ValueError(f"validation {list(self.validation)} and test {list(self.test)}: the slabs overlap")
        check_range(self, "case_split", 0.0, 0.5)
        check_range(self, "min_foreground", 0.0, 1.0, below=True)
        if self.train_slices is not None:
            if not self.train_slices:
                raise ValueError("train_slices: empty; leave it out (null) to train on every training slice")
            check_range(self, "train_slices", 0, 10**9)
            if len(set(self.train_slices)) != len(self.train_slices):
                raise ValueError("train_slices: an index is listed twice")
        if self.spacing_mm is not None:
            check_range(self, "spacing_mm", 0.01, 100.0)


@dataclass
class JobConfig:
    """What the model learns: the condition -> image mapping (generate: label map -> image,
    denoise: noisy -> clean, super_resolve: thick slices -> thin)."""

    name: Job = "generate"
    num_classes: int = 3  # generate: label classes incl. background; 0 = unconditional
    class_names: tuple[str, ...] = ()  # generate: one per class, background first (default class_0, class_1, ...)
    noise: Literal["rician", "gaussian", "low_dose_ct"] = "rician"  # denoise
    noise_sigma: tuple[float, float] = (0.03, 0.08)  # rician/gaussian, fraction of the [0, 1] range
    photons: tuple[float, float] = (2e4, 2e5)  # low_dose_ct: incident photons per ray
    degradation: Literal["thick_slices", "kspace"] = "thick_slices"  # super_resolve
    factor: tuple[int, int] = (2, 4)  # super_resolve: through-plane factor range
    degrade_axis: int = -1  # super_resolve: spatial axis of the patch that is degraded
    interpolation: Literal["linear", "cubic"] = "linear"  # super_resolve thick slices -> the fine grid (condition)
    slice_profile: Literal["box", "gaussian"] = "box"  # super_resolve thick_slices: slice sensitivity profile
    slice_thickness: float = 1.0  # super_resolve thick_slices: thickness / spacing (< 1: gaps, > 1: overlap)
    # 2D super_resolve: restore the axis in both planes that contain it and average (SMORE/ECLARE fusion)
    fuse_planes: bool = False
    flip_ensemble: bool = False  # restoration: average the outputs over flips of every spatial axis (self-ensemble)

    def validate(self) -> None:
        check_range(self, "num_classes", 0, MAX_CLASSES)
        if self.num_classes == 1:
            raise ValueError(f"num_classes: must be 0 (unconditional) or >= 2, got {self.num_classes}")
        if self.class_names:
            if len(self.class_names) != self.num_classes:
                raise ValueError(f"class_names: {len(self.class_names)} names for num_classes {self.num_classes}")
            if len(set(self.class_names)) != len(self.class_names) or not all(
                    isinstance(n, str) and re.fullmatch(r"[A-Za-z0-9_\-]{1,64}", n) for n in self.class_names):
                raise ValueError("class_names: distinct names of 1-64 letters, digits, '_' or '-', got "
                                 f"{short(list(self.class_names))}")
        check_range(self, "noise_sigma", 0.0, 1.0)
        if self.noise_sigma[0] > self.noise_sigma[1]:
            raise ValueError(f"noise_sigma: expected 0 <= low <= high, got {list(self.noise_sigma)}")
        check_range(self, "photons", 0.0, 1e9, above=True)
        if self.photons[0] > self.photons[1]:
            raise ValueError(f"photons: expected 0 < low <= high, got {list(self.photons)}")
        check_range(self, "factor", 1, 64)
        check_range(self, "slice_thickness", 0.05, 10.0)
        if self.factor[0] > self.factor[1]:
            raise ValueError(f"factor: expected 1 <= low <= high, got {list(self.factor)}")

    @property
    def labels(self) -> dict[str, int]:
        """Class name -> label value (``class_names``, else ``class_0``, ``class_1``, ...); empty if unconditional."""
        names = self.class_names or tuple(f"class_{k}" for k in range(self.num_classes))
        return {name: k for k, name in enumerate(names)} if self.num_classes else {}

    @property
    def condition_channels(self) -> int:
        return self.num_classes if self.name == "generate" else 1


@dataclass
class TrainConfig:
    """The optimisation: steps, batch, learning rate, EMA, logging and checkpoints."""

    steps: int = 1000
    batch_size: int = 16
    lr: float = 2e-4
    weight_decay: float = 0.0
    warmup_steps: int = 50
    lr_schedule: Literal["cosine", "constant"] = "cosine"
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    seed: int = 0
    log_every: int = 10
    sample_every: int = 250
    sample_steps: int = 20  # diffusion steps for the progress grids
    checkpoint_every: int = 100
    amp: bool = True  # mixed precision, CUDA only (bf16/fp16 are 40-200x slower on CPUs without support)

    def validate(self) -> None:
        for key in ("steps", "log_every", "sample_every", "checkpoint_every"):
            check_range(self, key, 1, MAX_STEPS)
        check_range(self, "batch_size", 1, 4096)
        check_range(self, "sample_steps", 1, 10_000)
        check_range(self, "lr", 0.0, 1.0, above=True)
        check_range(self, "weight_decay", 0.0, 1.0)
        check_range(self, "warmup_steps", 0, MAX_STEPS)
        check_range(self, "grad_clip", 0.0)  # 0: no clipping
        check_range(self, "ema_decay", 0.0, 1.0, below=True)
        check_range(self, "seed", 0, 2**63 - 2)  # torch seeds are 64-bit; the trainer also uses seed + 1


@dataclass
class ExperimentConfig:
    """One training run: job, family, dimensionality, data, model options and optimisation."""

    job: JobConfig = field(default_factory=JobConfig)
    family: str = "diffusion"
    spatial_dims: Literal[2, 3] = 2
    data: DataConfig = field(default_factory=DataConfig)
    model: dict[str, Any] = field(default_factory=dict)  # the family's options, validated by the family
    train: TrainConfig = field(default_factory=TrainConfig)
    description: str = ""

    def validate(self) -> None:
        if len(self.data.patch_size) != self.spatial_dims:
            raise ValueError(f"data.patch_size: a {self.spatial_dims}D config needs {self.spatial_dims} sides, "
                             f"got {short(list(self.data.patch_size))}")
        if self.data.train_slices is not None and self.spatial_dims != 2:
            raise ValueError("data.train_slices: selects 2D slices; a 3D config trains on whole training volumes")
        if self.data.self_supervised:
            if self.spatial_dims != 2 or self.job.name == "generate" or self.data.images is None:
                raise ValueError("data.self_supervised: trains a 2D denoise or super_resolve model on one scan "
                                 "(data.images)")
            if self.job.name == "super_resolve" and (self.job.degradation != "thick_slices"
                                                     or self.job.factor[0] != self.job.factor[1]):
                raise ValueError("data.self_supervised: super_resolve learns one thick_slices factor, the scan's")
        if self.job.fuse_planes and (self.spatial_dims != 2 or self.job.name != "super_resolve"):
            raise ValueError("job.fuse_planes: fuses the two planes of a 2D super_resolve model")
        if not -self.spatial_dims <= self.job.degrade_axis < self.spatial_dims:
            raise ValueError(f"job.degrade_axis: {self.job.degrade_axis} is not an axis of a "
                             f"{self.spatial_dims}D patch")


def load_experiment(path: str | os.PathLike, overrides: list[str] | None = None) -> ExperimentConfig:
    """Load, override (``key.sub=value``), and validate an experiment config; errors name the key
    (and the ``--set`` that gave it, if one did)."""
    overrides = overrides or []
    return experiment_from_dict(apply_overrides(load_yaml(path), overrides), str(path), overrides)


def experiment_from_dict(data: dict[str, Any], source: str = "config",
                         overrides: list[str] | None = None) -> ExperimentConfig:
    """Validate plain config data: every key, the family's model options, and the model's size
    (counted on the meta device, before anything is allocated or written).

    Errors start with ``source``, or with ``--set KEY=VALUE`` when one of ``overrides`` set the key.
    """
    from medsynth.models import family_options

    try:
        config = from_dict(ExperimentConfig, data)
        options = family_options(config.family, config.model)
        check_model(config, options)
    except ConfigError as err:
        raise MedsynthError(blame_override(err, overrides or []) or f"{source}: {err}") from None
    except MedsynthError as err:
        raise MedsynthError(f"{source}: {err}") from None
    return config


def check_model(config: ExperimentConfig, options: Any) -> None:
    """Refuse a model that cannot train on ``data.patch_size`` or whose training state would not fit
    (more than ``MAX_PARAMETERS`` parameters, counted on the meta device: nothing is allocated).

    Raises:
        ConfigError: naming the ``model`` keys of the largest network, or a family that cannot
            build this model (e.g. ``model.residual`` with a label condition).
    """
    from medsynth.models import parameter_counts

    try:
        check_patch = getattr(options, "check_patch", None)
        if check_patch is not None:
            check_patch(config.data.patch_size)
        counts = parameter_counts(config.family, config.spatial_dims, config.job.condition_channels, options)
    except ValueError as err:
        raise ConfigError(*split_key(describe(err).removeprefix("model."), "model")) from None
    total = sum(counts.values())
    if total <= MAX_PARAMETERS:
        return
    largest = max(counts, key=counts.get)
    keys = getattr(options, "SIZE_KEYS", {}).get(largest, ("channels",))
    gib = total * BYTES_PER_PARAMETER / 2**30
    raise ConfigError("model", f"{total:,} parameters ({largest}: {counts[largest]:,}) need about {gib:,.0f} GiB "
                               f"to train, more than the limit of {MAX_PARAMETERS:,} parameters; make "
                               f"{', '.join(f'model.{k}' for k in keys)} smaller")


def experiment_to_dict(config: ExperimentConfig) -> dict[str, Any]:
    """Plain data of the resolved config, model options included with their defaults."""
    from medsynth.models import family_options

    data = to_dict(config)
    data["model"] = to_dict(family_options(config.family, config.model))
    return data
