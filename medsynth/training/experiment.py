"""The experiment config: what ``medsynth train CONFIG.yaml`` reads, validates and saves in the run."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Literal

from medsynth.config import apply_overrides, from_dict, load_yaml, to_dict
from medsynth.errors import MedsynthError

Job = Literal["generate", "denoise", "super_resolve"]
#: Largest patch, in voxels, a config may ask for (a 256^3 patch; beyond that use smaller patches).
MAX_PATCH_VOXELS = 256**3


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
    holdout: tuple[float, float] = (0.45, 0.6)  # slab of axial positions (fractions) never trained on
    min_foreground: float = 0.1  # patches need this fraction of foreground (label > 0, else image > 0.05)
    augment: bool = False  # random flips along every patch axis and a random gamma (0.8-1.25) of each patch

    def validate(self) -> None:
        if any(p < 4 for p in self.patch_size):
            raise ValueError(f"patch_size: every side must be at least 4, got {list(self.patch_size)}")
        voxels = 1
        for p in self.patch_size:
            voxels *= p
        if voxels > MAX_PATCH_VOXELS:
            raise ValueError(f"patch_size: {list(self.patch_size)} is {voxels} voxels, more than {MAX_PATCH_VOXELS}")
        if self.slice_axis not in (0, 1, 2):
            raise ValueError(f"slice_axis: must be 0, 1 or 2, got {self.slice_axis}")
        low, high = self.holdout
        if not 0.0 <= low <= high <= 1.0:
            raise ValueError(f"holdout: expected 0 <= start <= stop <= 1, got {list(self.holdout)}")
        if not 0.0 <= self.min_foreground < 1.0:
            raise ValueError(f"min_foreground: must be in [0, 1), got {self.min_foreground}")
        if self.spacing_mm is not None and self.spacing_mm <= 0:
            raise ValueError(f"spacing_mm: must be positive, got {self.spacing_mm}")


@dataclass
class JobConfig:
    """What the model learns: the condition -> image mapping (DESIGN.md's job table)."""

    name: Job = "generate"
    num_classes: int = 3  # generate: label classes incl. background; 0 = unconditional
    noise: Literal["rician", "gaussian", "low_dose_ct"] = "rician"  # denoise
    noise_sigma: tuple[float, float] = (0.03, 0.08)  # rician/gaussian, fraction of the [0, 1] range
    photons: tuple[float, float] = (2e4, 2e5)  # low_dose_ct: incident photons per ray
    degradation: Literal["thick_slices", "kspace"] = "thick_slices"  # super_resolve
    factor: tuple[int, int] = (2, 4)  # super_resolve: through-plane factor range
    degrade_axis: int = -1  # super_resolve: spatial axis of the patch that is degraded
    interpolation: Literal["linear", "cubic"] = "linear"  # super_resolve thick slices -> the fine grid (condition)
    flip_ensemble: bool = False  # restoration: average the outputs over flips of every spatial axis (self-ensemble)

    def validate(self) -> None:
        if self.num_classes < 0 or self.num_classes == 1:
            raise ValueError(f"num_classes: must be 0 (unconditional) or >= 2, got {self.num_classes}")
        if not 0 <= self.noise_sigma[0] <= self.noise_sigma[1]:
            raise ValueError(f"noise_sigma: expected 0 <= low <= high, got {list(self.noise_sigma)}")
        if not 0 < self.photons[0] <= self.photons[1]:
            raise ValueError(f"photons: expected 0 < low <= high, got {list(self.photons)}")
        if not 1 <= self.factor[0] <= self.factor[1]:
            raise ValueError(f"factor: expected 1 <= low <= high, got {list(self.factor)}")

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
        for key in ("steps", "batch_size", "log_every", "sample_every", "checkpoint_every", "sample_steps"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key}: must be at least 1, got {getattr(self, key)}")
        if self.batch_size > 4096:
            raise ValueError(f"batch_size: {self.batch_size} is larger than 4096")
        if not self.lr > 0:
            raise ValueError(f"lr: must be positive, got {self.lr}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay: must be in [0, 1), got {self.ema_decay}")
        if self.warmup_steps < 0 or self.grad_clip < 0 or self.weight_decay < 0:
            raise ValueError("warmup_steps, grad_clip, weight_decay: must be non-negative")


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
                             f"got {list(self.data.patch_size)}")
        if not -self.spatial_dims <= self.job.degrade_axis < self.spatial_dims:
            raise ValueError(f"job.degrade_axis: {self.job.degrade_axis} is not an axis of a "
                             f"{self.spatial_dims}D patch")


def load_experiment(path: str | os.PathLike, overrides: list[str] | None = None) -> ExperimentConfig:
    """Load, override (``key.sub=value``), and validate an experiment config; errors name the key."""
    return experiment_from_dict(apply_overrides(load_yaml(path), overrides or []), str(path))


def experiment_from_dict(data: dict[str, Any], source: str = "config") -> ExperimentConfig:
    """Validate plain config data (the family's model options included); errors start with ``source``."""
    from medsynth.models import family_options

    try:
        config = from_dict(ExperimentConfig, data)
        family_options(config.family, config.model)
    except MedsynthError as err:
        raise MedsynthError(f"{source}: {err}") from None
    return config


def experiment_to_dict(config: ExperimentConfig) -> dict[str, Any]:
    """Plain data of the resolved config, model options included with their defaults."""
    from medsynth.models import family_options

    data = to_dict(config)
    data["model"] = to_dict(family_options(config.family, config.model))
    return data
