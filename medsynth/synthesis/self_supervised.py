"""``denoise --self`` and ``super-resolve --self``: train a model on the scan being restored, then apply it.

The training data is the scan alone (:mod:`medsynth.training.self_supervised`), so there is no
domain shift to another patient or protocol. This module turns one scan into the experiment
config of its model: the slice profile and factor of super-resolution from the header, the axes,
and a CPU-sized model of the chosen family (:data:`SELF_MODELS`). :func:`medsynth.synthesis.restore`
trains and applies it (``self_training``).
"""

from __future__ import annotations

import contextlib
import copy
import logging
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medsynth.errors import Interrupted, MedsynthError, display
from medsynth.io import ImageSource, MedicalImage
from medsynth.io.files import check_separate, is_inside
from medsynth.synthesis.apply import TrainedModel, ras_spacing, to_ras
from medsynth.training import Trainer
from medsynth.training.experiment import ExperimentConfig, experiment_from_dict
from medsynth.training.self_supervised import self_supervised_sources

log = logging.getLogger("medsynth")
#: ``--family`` choices: the conditional GAN, the conditional diffusion model and the GAN's generator
#: trained with plain L1
SELF_FAMILIES = ("l1", "gan", "diffusion")
#: each job's default ``--family``: the best mean PSNR on validation (benchmarks/self_supervised.py)
SELF_DEFAULT_FAMILY = {"super_resolve": "diffusion", "denoise": "l1"}
#: a thick axis must be this many times the finest in-plane spacing for ``super-resolve --self``
MIN_ANISOTROPY = 1.5
_GAN = {"channels": [32, 64, 128], "noise_channels": 8, "residual": True, "adversarial": "least_squares",
        "adversarial_weight": 0.02, "l1_weight": 100.0, "feature_matching_weight": 0.2, "spectral_norm": True,
        "discriminator_lr_scale": 2.0}
_L1 = {**_GAN, "noise_channels": 0, "adversarial_weight": 0.0, "feature_matching_weight": 0.0, "diversity_weight": 0.0}
_DIFFUSION = {"channels": [32, 64, 64], "attention_levels": [False, False, True], "num_res_blocks": 1,
              "norm_num_groups": 16, "num_head_channels": 32, "prediction_type": "v_prediction",
              "num_train_timesteps": 1000, "schedule": "scaled_linear_beta", "sampler": "ddim",
              "num_inference_steps": 1, "ensemble": 1, "residual": True, "residual_scale": 10.0}
#: per family: model options (the shipped 2D CPU configs' networks), training steps and batch, and
#: the flip ensemble; sized so that training stays within the default ``--minutes`` on 2 CPU cores.
#: The diffusion model's sampling (DDIM steps, ensemble) was chosen on validation among the settings
#: expected within the 10-minute time to result (``benchmarks.self_supervised --diffusion-settings``).
SELF_MODELS = {
    "l1": {"model": _L1, "steps": 800, "batch_size": 16, "flips": True},
    "gan": {"model": _GAN, "steps": 250, "batch_size": 16, "flips": True},
    "diffusion": {"model": _DIFFUSION, "steps": 300, "batch_size": 8, "flips": False},
}
#: default ``--minutes``: the most training time per scan (inference comes on top: the family's passes
#: over the whole scan, measured in docs/results.md)
DEFAULT_MINUTES = 7.0


@dataclass
class SelfTraining:
    """How ``--self`` trains each scan's model.

    Attributes:
        family: one of :data:`SELF_FAMILIES`; ``None``: the job's :data:`SELF_DEFAULT_FAMILY`.
        minutes: training stops after this long (fewer steps: machine-dependent, with a warning).
        steps: training steps (default: the family's, :data:`SELF_MODELS`).
        keep_model: keep the run directory here (one scan) or in ``keep_model/<scan name>`` (a
            folder); it works with ``--model`` on other scans of the same protocol. ``None``:
            a temporary folder, removed afterwards.
        slice_profile: super-resolution: "box" or "gaussian" slice sensitivity profile.
        seed: training seed.
    """

    family: str | None = None
    minutes: float = DEFAULT_MINUTES
    steps: int | None = None
    keep_model: Path | None = None
    slice_profile: str = "box"
    seed: int = 0

    def check(self) -> None:
        if self.family is not None and self.family not in SELF_FAMILIES:
            raise MedsynthError(f"--family {self.family}: unknown (known: {', '.join(SELF_FAMILIES)})")
        if not 0 < self.minutes <= 24 * 60:
            raise MedsynthError(f"--minutes {self.minutes}: must be above 0 and at most a day (1440)")
        if self.steps is not None and not 1 <= self.steps <= 10**6:
            raise MedsynthError(f"--train-steps {self.steps}: must be between 1 and 1000000")
        if self.slice_profile not in ("box", "gaussian"):
            raise MedsynthError(f"--slice-profile {self.slice_profile}: must be box or gaussian")


def slice_thickness_mm(source: ImageSource) -> float | None:
    """SliceThickness of a DICOM series (its first header), ``None`` for NIfTI or when absent."""
    if source.series is None:
        return None
    try:
        value = float(source.series.headers[0].get("SliceThickness", None) or "nan")
    except (TypeError, ValueError):
        return None
    return value if np.isfinite(value) and value > 0 else None


def self_config(image: MedicalImage, source: ImageSource, job: str, training: SelfTraining,
                factor: int | None = None) -> tuple[ExperimentConfig, str]:
    """The experiment config that trains ``image``'s own model, and a one-line account of what was
    assumed (axes, factor, slice profile).

    Raises:
        MedsynthError: a 2D image, a constant one, or (super-resolution) a scan with no thick axis.
    """
    if image.array.ndim != 3 or min(image.array.shape) < 2:
        raise MedsynthError(f"{image.name}: a 2D image; --self needs a 3D scan")
    if not np.ptp(image.array) > 0:
        raise MedsynthError(f"{image.name}: every voxel is {image.array.flat[0]:g}; a constant scan has nothing for "
                            "--self to learn from")
    spacing = ras_spacing(image, to_ras(image)[1])
    thick = int(np.argmax(spacing))
    in_plane = [a for a in range(3) if a != thick]
    family_name = training.family or SELF_DEFAULT_FAMILY[job]
    family = SELF_MODELS[family_name]
    job_section: dict = {"name": job, "flip_ensemble": family["flips"]}
    if job == "super_resolve":
        fine = float(min(spacing[a] for a in in_plane))
        if spacing[thick] < MIN_ANISOTROPY * fine:
            raise MedsynthError(f"{image.name}: voxels of {' x '.join(f'{s:.2f}' for s in spacing)} mm have no thick "
                                f"axis (at least {MIN_ANISOTROPY}x the in-plane spacing); nothing for --self to "
                                "super-resolve")
        coarse = float(max(spacing[a] for a in in_plane))
        if coarse > 1.3 * fine:
            log.warning("%s: in-plane voxels of %.2f x %.2f mm are not square; the pairs treat both in-plane axes as "
                        "the target resolution", image.name, fine, coarse)
        factor = factor or max(2, round(spacing[thick] / fine))
        thickness = slice_thickness_mm(source)
        relative = 1.0 if thickness is None else thickness / spacing[thick]
        slice_axis = in_plane[0]
        degrade_axis = [a for a in range(3) if a != slice_axis].index(thick)
        job_section.update({"degradation": "thick_slices", "factor": [factor, factor], "degrade_axis": degrade_axis,
                            "interpolation": "cubic", "slice_profile": training.slice_profile,
                            "slice_thickness": round(float(relative), 4), "fuse_planes": True})
        patch = [64, 64]
        origin = "assumed equal to the spacing" if thickness is None else "from SliceThickness"
        account = (f"thick axis {'RAS'[thick]} at {spacing[thick]:.2f} mm, in-plane {fine:.2f} mm: factor {factor}; "
                   f"slice profile {training.slice_profile}, {relative * spacing[thick]:.2f} mm thick ({origin})")
    else:
        slice_axis = thick if spacing[thick] > 1.05 * min(spacing) else 2
        modality = str(image.meta.get("modality", "")).upper()
        job_section["noise"] = "low_dose_ct" if modality == "CT" else "rician"
        patch = [96, 96]  # Neighbor2Neighbor halves it: the model trains on 48x48
        account = (f"2D slices along {'RAS'[slice_axis]}, Neighbor2Neighbor pairs; "
                   + ("CT: no bias correction" if modality == "CT" else "magnitude MR: Rician bias undone"))
    data = {"images": str(source.path), "self_supervised": True, "patch_size": patch, "slice_axis": slice_axis,
            "augment": True}
    if image.meta.get("modality") in ("CT", "MR"):
        data["modality"] = image.meta["modality"]
    steps = training.steps or family["steps"]
    config = experiment_from_dict({
        "description": f"self-supervised {job} of {image.name} ({family_name}): {account}",
        "job": job_section, "family": "gan" if family_name == "l1" else family_name, "spatial_dims": 2,
        "data": data, "model": copy.deepcopy(family["model"]),
        "train": {"steps": steps, "batch_size": family["batch_size"], "lr": 5e-4, "warmup_steps": min(50, steps // 10),
                  "ema_decay": 0.995, "seed": training.seed, "log_every": 10, "sample_every": steps,
                  "checkpoint_every": 100},
    }, "--self")
    return config, account


def check_keep_model(training: SelfTraining, input_path: Path, output_path: Path, count: int) -> None:
    """``--keep-model`` must be a new (or empty) folder apart from the input and the output."""
    if training.keep_model is None:
        return
    keep = Path(training.keep_model)
    check_separate(keep, [input_path], "--keep-model folder")
    if is_inside(keep, output_path) or is_inside(output_path, keep):
        raise MedsynthError(f"{display(keep)}: --keep-model and the output {display(output_path)} overlap; keep the "
                            "model elsewhere")
    if keep.exists() and (not keep.is_dir() or any(keep.iterdir())):
        raise MedsynthError(f"{display(keep)}: --keep-model must be a new or empty folder")
    if count > 1:
        log.info("%d scans: one model each, kept in %s/<scan name>", count, display(keep))


def check_self_scans(sources: list[ImageSource], job: str, training: SelfTraining, factor: int | None = None) -> None:
    """Refuse a folder holding a scan that ``--self`` cannot train on (2D, constant, no thick axis,
    too small for pairs) before any training starts, not after minutes spent on the scans before it."""
    for source in sources:
        config, _ = self_config(source.read(), source, job, training, factor)
        self_supervised_sources(config, [source])


@contextlib.contextmanager
def self_run_dir(training: SelfTraining, source: ImageSource, count: int) -> Iterator[Path]:
    """The run directory of one scan's model: under ``--keep-model`` (kept), else a temporary one.

    A kept run that fails or is interrupted is removed (its folder was new or empty), so the same
    command can be run again and no half-trained model is left to be mistaken for a finished one.
    """
    if training.keep_model is not None:
        run = Path(training.keep_model) if count == 1 else Path(training.keep_model) / source.name
        existed = run.exists()
        try:
            yield run
        except BaseException:
            shutil.rmtree(run, ignore_errors=True)
            if existed:
                run.mkdir(exist_ok=True)
            raise
        return
    with tempfile.TemporaryDirectory(prefix="medsynth-self-") as folder:
        yield Path(folder) / "run"


def train_self(image: MedicalImage, source: ImageSource, job: str, training: SelfTraining, run_dir: Path, *,
               factor: int | None = None, device: str = "auto", progress: bool = True) -> TrainedModel:
    """Train ``image``'s own model into ``run_dir`` (within ``training.minutes``) and load it."""
    config, account = self_config(image, source, job, training, factor)
    log.info("%s: %s", image.name, account)
    try:
        summary = Trainer(config, run_dir, device=device, progress=progress, time_limit=training.minutes * 60,
                          sources=[source]).fit()
    except Interrupted:  # a --self run cannot be resumed: nothing of it is kept
        raise Interrupted(f"{image.name}: interrupted while training its --self model; nothing was written for it "
                          "(outputs of earlier scans are complete)") from None
    log.info("%s: trained a %s model for %d steps in %.0f s", image.name, training.family or SELF_DEFAULT_FAMILY[job],
             summary["steps"],
             summary["seconds_this_session"])
    return TrainedModel.load(run_dir, device)


__all__ = ["DEFAULT_MINUTES", "SELF_DEFAULT_FAMILY", "SELF_FAMILIES", "SELF_MODELS", "SelfTraining", "check_keep_model",
           "check_self_scans", "self_config", "self_run_dir", "slice_thickness_mm", "train_self"]
