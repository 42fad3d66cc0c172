"""Apply a trained model to whole images: into the model's space and back, 2D slice by slice or 3D.

A model was trained on RAS-oriented volumes normalised to [0, 1] by the data layer (CT window or
MR percentiles, :mod:`medsynth.data.intensity`). :func:`to_model_space` does the same to a new
image and remembers how; :func:`from_model_space` inverts it exactly (orientation is a permutation
and flips; the intensity map is linear), so outputs land on the source grid in source units.
"""

from __future__ import annotations

import itertools
import logging
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from medsynth.data.intensity import denormalize, intensity_scaling
from medsynth.device import resolve_device
from medsynth.errors import MedsynthError, check_count
from medsynth.io import MedicalImage
from medsynth.models import Synthesizer
from medsynth.models.samplers import SAMPLERS
from medsynth.training.experiment import ExperimentConfig
from medsynth.training.inference import load_synthesizer
from medsynth.training.run_dir import RunDirectory

log = logging.getLogger("medsynth")
#: 3D restoration runs in overlapping windows this many training patches a side, Gaussian-blended:
#: windows of one patch leave some holding background only, which training never showed
#: (``data.min_foreground``), and the whole volume at once puts the network outside the field of
#: view it was trained on (docs/architecture.md).
WINDOW_PATCHES = 2
WINDOW_OVERLAP = 0.5
#: largest number of 2D slices (or 3D windows) per network call, as for training
MAX_BATCH = 4096
JOB_COMMANDS = {"generate": "augment", "denoise": "denoise", "super_resolve": "super-resolve"}


def output_seed(seed: int, name: str) -> int:
    """The seed of one output, from the base seed and the output's name: stable across reruns,
    ranks, batch orders and the other outputs."""
    return zlib.crc32(f"{seed}/{name}".encode()) & 0x7FFFFFFF


@dataclass
class TrainedModel:
    """A model from a run directory, with the config it was trained with."""

    model: Synthesizer
    config: ExperimentConfig
    run_dir: Path

    @classmethod
    def load(cls, run_dir: str | os.PathLike, device: str = "auto") -> TrainedModel:
        run = RunDirectory(run_dir)
        config = run.read_config()
        return cls(load_synthesizer(run.path, resolve_device(device)), config, run.path)

    @property
    def family(self) -> str:
        return self.model.family

    @property
    def job(self) -> str:
        return self.config.job.name

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def require_job(self, job: str) -> None:
        if self.job != job:
            raise MedsynthError(f"{self.run_dir}: this model was trained for {self.job}, not {job}; "
                                f"use `medsynth {JOB_COMMANDS[self.job]}` with it")

    def sampling_options(self, steps: int | None, sampler: str | None) -> dict:
        """Sampler options for this family: diffusion families take them, a GAN ignores them with a note."""
        model_config = self.model.sampler_config
        if steps is not None:
            check_count("--steps", steps, model_config.num_train_timesteps if model_config is not None else 10**4)
        if model_config is None:
            if steps is not None or sampler is not None:
                log.warning("--steps/--sampler apply to diffusion models; this %s samples in one pass", self.family)
            return {}
        if sampler is not None and sampler not in SAMPLERS:
            raise MedsynthError(f"--sampler {sampler}: unknown sampler (known: {', '.join(SAMPLERS)})")
        options = {}
        if steps is not None:
            options["num_inference_steps"] = steps
        if sampler is not None:
            options["sampler"] = sampler
        return options

    def describe_sampling(self, options: dict) -> tuple[str, int]:
        """(sampler name, network evaluations per sample: ``Synthesizer.network_evaluations``, which
        counts guidance and ensembles) for the manifest and the comparison report."""
        model_config = self.model.sampler_config
        sampler = self.family if model_config is None else options.get("sampler", model_config.sampler)
        return sampler, int(self.model.network_evaluations(**options))


@dataclass
class ModelSpace:
    """How an image was brought into model space: its RAS reorientation and intensity scaling."""

    source: MedicalImage
    orientation: np.ndarray  # nibabel orientation of the source array axes relative to RAS
    scaling: dict


def to_ras(image: MedicalImage) -> tuple[np.ndarray, np.ndarray]:
    """The array reordered/flipped to RAS axes, and the orientation used (exact, no resampling)."""
    if image.array.ndim == 2:
        return image.array, np.array([[0, 1], [1, 1]], dtype=float)
    orientation = nib.orientations.io_orientation(image.affine)
    return nib.orientations.apply_orientation(image.array, orientation), orientation


def from_ras(array: np.ndarray, orientation: np.ndarray) -> np.ndarray:
    """Inverse of :func:`to_ras` for an array on the RAS grid."""
    if array.ndim == 2:
        return array
    back = nib.orientations.ornt_transform(nib.orientations.axcodes2ornt("RAS"), orientation)
    return nib.orientations.apply_orientation(array, back)


def ras_affine(image: MedicalImage, orientation: np.ndarray) -> np.ndarray:
    """Affine of the RAS-reordered array."""
    if image.array.ndim == 2:
        return image.affine
    return image.affine @ nib.orientations.inv_ornt_aff(orientation, image.array.shape)


def ras_spacing(image: MedicalImage, orientation: np.ndarray) -> np.ndarray:
    """Voxel size (mm) along each axis of the RAS-reordered array."""
    return np.sqrt((ras_affine(image, orientation)[:3, :3] ** 2).sum(axis=0))


def to_model_space(image: MedicalImage, config: ExperimentConfig) -> tuple[np.ndarray, ModelSpace]:
    """``image`` as the model saw its training data: RAS axes, intensities scaled to [0, 1].

    Raises:
        MedsynthError: non-finite voxels, or a model trained at another voxel size.
    """
    if not np.isfinite(image.array).all():
        raise MedsynthError(f"{image.name}: image has NaN or infinite voxels")
    if config.data.spacing_mm is not None and image.array.ndim == 3:
        target = config.data.spacing_mm
        if any(abs(s - target) > 0.05 * target for s in image.spacing_mm):
            raise MedsynthError(f"{image.name}: voxel size {tuple(round(s, 3) for s in image.spacing_mm)} mm, but "
                                f"the model was trained at {target} mm; resample the input first (e.g. MONAI Spacingd)")
    array, orientation = to_ras(image)
    modality = config.data.modality or image.meta.get("modality")
    scaling = intensity_scaling(array, modality, window=config.data.ct_window)
    normalised = np.clip((array - scaling["low"]) / (scaling["high"] - scaling["low"]), 0.0, 1.0)
    return normalised.astype(np.float32), ModelSpace(image, orientation, scaling)


def from_model_space(array: np.ndarray, space: ModelSpace, affine: np.ndarray | None = None,
                     **meta) -> MedicalImage:
    """An output in model space back on the source's axes, in the source's intensity units.

    ``affine``: the output's RAS-grid affine when it differs from the source's (super-resolution).
    """
    values = denormalize(np.asarray(array, dtype=np.float32), space.scaling)
    source = space.source
    if affine is None:
        return MedicalImage(from_ras(values, space.orientation), source.affine.copy(), {**source.meta, **meta})
    return MedicalImage(values, affine, {**source.meta, **meta})  # a new grid: kept in RAS order


def run_on_volume(trained: TrainedModel, condition: np.ndarray | None, *, seed: int, batch_size: int = 8,
                  shape: tuple[int, ...] | None = None, init: np.ndarray | None = None, patch_wise: bool | None = None,
                  flips: bool | None = None, **options) -> np.ndarray:
    """Run the model over a whole volume in model space; returns the output ``(X, Y[, Z])`` in [0, 1].

    Ensembles (samples, flips) and overlapping windows are averaged unclipped and the result is
    clipped once: clipping each part first biases the mean where the truth sits at 0 (air).

    Args:
        condition: ``(C, X, Y[, Z])`` (one-hot labels or an image), or ``None`` (unconditional:
            give ``shape``).
        seed: seeds the sampling; the same seed gives the same volume.
        batch_size: slices per network call for 2D models (and windows for patch-wise 3D).
        init: ``(X, Y[, Z])`` image to start from (diffusion variations with ``strength``).
        patch_wise: 3D in overlapping windows (:func:`restoration_window`) blended with Gaussian
            weights (MONAI ``sliding_window_inference``); default for restoration, not for
            generation (one label map, one coherent volume).
        flips: average the outputs over every combination of flips of the network's spatial axes
            (:func:`flip_ensemble`); default: the config's ``job.flip_ensemble`` for restoration,
            never for generation.
        options: passed to ``model.sample`` (sampler, num_inference_steps, strength, ...).
    """
    config, device = trained.config, trained.device
    if flips is None:
        flips = config.job.flip_ensemble and trained.job != "generate"
    model = FlipEnsemble(trained.model) if flips else trained.model
    spatial = tuple(condition.shape[1:]) if condition is not None else tuple(shape)
    cond = None if condition is None else torch.as_tensor(condition, dtype=torch.float32)
    start = None if init is None else torch.as_tensor(init, dtype=torch.float32)[None]
    if config.spatial_dims == 2 and len(spatial) == 3:
        axis = config.data.slice_axis
        cond = None if cond is None else cond.movedim(axis + 1, 0)  # (N, C, a, b)
        start = None if start is None else start.movedim(axis + 1, 0)
        count = spatial[axis]
        plane = tuple(s for i, s in enumerate(spatial) if i != axis)
        outputs = []
        for first in range(0, count, batch_size):
            part = slice(first, min(first + batch_size, count))
            batch_cond = None if cond is None else cond[part].to(device)
            batch_init = None if start is None else start[part].to(device)
            n = part.stop - part.start
            out = model.sample(batch_cond, seed=seed + first, shape=(n, 1, *plane), init=batch_init, clip=False,
                               **options)
            outputs.append(out[:, 0].cpu())
        return torch.cat(outputs).movedim(0, axis).clamp(0, 1).numpy()
    if config.spatial_dims == 3 and len(spatial) != 3:
        raise MedsynthError("a 3D model needs 3D images; this one is 2D")
    cond = None if cond is None else cond[None].to(device)
    start = None if start is None else start[None].to(device)
    if patch_wise is None:
        patch_wise = cond is not None and trained.job != "generate"
    if not patch_wise:
        return model.sample(cond, seed=seed, shape=(1, 1, *spatial), init=start, **options)[0, 0].cpu().numpy()
    from monai.inferers import sliding_window_inference

    calls = itertools.count()

    def predict(windows: torch.Tensor) -> torch.Tensor:  # windows come in a fixed order: seeds are reproducible
        return model.sample(windows, seed=seed + next(calls), clip=False, **options)

    out = sliding_window_inference(cond, restoration_window(config, spatial), batch_size, predict,
                                   overlap=WINDOW_OVERLAP, mode="gaussian")
    return out[0, 0].clamp(0, 1).cpu().numpy()


def restoration_window(config: ExperimentConfig, spatial: tuple[int, ...]) -> tuple[int, ...]:
    """Window of patch-wise 3D restoration: :data:`WINDOW_PATCHES` training patches a side, at most the volume."""
    return tuple(min(s, WINDOW_PATCHES * p) for s, p in zip(spatial, config.data.patch_size, strict=True))


class FlipEnsemble:
    """A model whose ``sample`` averages over all flips of the spatial axes (geometric self-ensemble).

    Each of the ``2 ** dims`` flipped copies of the condition is sampled (seed ``seed + k``) and
    flipped back; the mean is an estimate with less variance than one pass (Lim et al. 2017's
    EDSR+, here without the 90-degree rotations, which would turn a thick-slice axis in-plane).
    Worth it for models trained with flips (``data.augment``), at ``2 ** dims`` times the cost.
    """

    def __init__(self, model: Synthesizer) -> None:
        self.model = model

    def sample(self, condition: torch.Tensor | None, *, seed: int, shape: tuple[int, ...] | None = None,
               init: torch.Tensor | None = None, clip: bool = True, **options) -> torch.Tensor:
        reference = condition if condition is not None else init
        if reference is None:
            raise ValueError("a flip ensemble needs a condition or an init image to flip")
        axes = range(2, reference.dim())
        subsets = [dims for size in range(len(axes) + 1) for dims in itertools.combinations(axes, size)]
        total = None
        for k, dims in enumerate(subsets):
            def flip(tensor: torch.Tensor | None, dims: tuple[int, ...] = dims) -> torch.Tensor | None:
                return tensor.flip(dims) if tensor is not None and dims else tensor

            out = flip(self.model.sample(flip(condition), seed=seed + k, shape=shape, init=flip(init), clip=False,
                                         **options))
            total = out if total is None else total + out
        mean = total / len(subsets)
        return mean.clamp(0, 1) if clip else mean
