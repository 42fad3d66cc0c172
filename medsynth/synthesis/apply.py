"""Apply a trained model to whole images: into the model's space and back, 2D slice by slice or 3D.

A model was trained on RAS-oriented volumes normalised to [0, 1] by the data layer (CT window or
MR percentiles, :mod:`medsynth.data.intensity`). :func:`to_model_space` does the same to a new
image and remembers how; :func:`from_model_space` inverts it exactly (orientation is a permutation
and flips; the intensity map is linear), so outputs land on the source grid in source units.
"""

from __future__ import annotations

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
from medsynth.models import SampleOptions, Synthesizer, split_options
from medsynth.synthesis.inferers import choose_inferer
from medsynth.training.experiment import ExperimentConfig
from medsynth.training.inference import load_trained

log = logging.getLogger("medsynth")
#: largest number of 2D slices (or 3D windows) per network call, as for training
MAX_BATCH = 4096
#: command-line flag of each sampling option a user can set
OPTION_FLAGS = {"steps": "--steps", "sampler": "--sampler", "ensemble": "--ensemble", "flips": "--flips",
                "strength": "--strength"}
#: most samples averaged per output
MAX_ENSEMBLE = 100


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
        model, config, path = load_trained(run_dir, resolve_device(device))
        return cls(model, config, path)

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
            raise MedsynthError(f"{self.run_dir}: this model was trained for {self.job}, not {job}")

    def sample_options(self, *, steps: int | None = None, sampler: str | None = None, ensemble: int | None = None,
                       flips: bool | None = None, strength: float | None = None) -> SampleOptions:
        """The options a command runs this model with: the ones given, the flip ensemble by default
        where the config asks for it (``job.flip_ensemble``, restoration only); options the family
        does not take are dropped with a note (a GAN has no ``--steps``).

        Raises:
            MedsynthError: an unknown sampler, steps or strength out of range (naming the flag).
        """
        if steps is not None:
            check_count("--steps", steps, 10**6)
        if ensemble is not None:
            check_count("--ensemble", ensemble, MAX_ENSEMBLE)
        if flips is None:
            flips = self.config.job.flip_ensemble and self.job != "generate"
        options = SampleOptions(steps=steps, sampler=sampler, ensemble=ensemble, flips=flips, strength=strength)
        options, dropped = split_options(self.model, options)
        if dropped:
            log.warning("%s: not an option of this %s model; ignored",
                        "/".join(OPTION_FLAGS.get(name, name) for name in dropped), self.family)
        try:
            self.model.cost(options)  # the family checks its settings
        except ValueError as err:
            flags = "/".join(OPTION_FLAGS[name] for name in options.given() if name in OPTION_FLAGS and name != "flips")
            raise MedsynthError(f"{flags or 'sampling options'}: {err}") from None
        return options

    def describe_sampling(self, options: SampleOptions) -> tuple[str, int]:
        """(sampler name, network evaluations per output: ``Synthesizer.cost``, which counts
        guidance, ensembles and flips) for the manifest and the comparison report."""
        sampler = options.sampler or self.model.sampling_defaults().sampler or self.family
        return sampler, self.model.cost(options)


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


def run_on_volume(trained: TrainedModel, condition: np.ndarray | None, *, seed: int,
                  options: SampleOptions | None = None, init: np.ndarray | None = None, batch_size: int = 8,
                  shape: tuple[int, ...] | None = None, patch_wise: bool | None = None) -> np.ndarray:
    """Run the model over a whole image in model space; returns the output ``(X, Y[, Z])`` in [0, 1].

    The strategy (slices, the whole volume, overlapping windows) comes from the run's config
    (:func:`~medsynth.synthesis.inferers.choose_inferer`).

    Args:
        condition: ``(C, X, Y[, Z])`` (one-hot labels or an image), or ``None`` (unconditional:
            give ``shape``).
        seed: seeds the sampling; the same seed gives the same volume.
        options: how to sample; default: :meth:`TrainedModel.sample_options` (the config's).
        init: ``(X, Y[, Z])`` image to start from (diffusion variations with ``options.strength``).
        batch_size: slices per network call for 2D models (and windows for patch-wise runs).
        patch_wise: overlapping windows blended with Gaussian weights; default for restoration,
            not for generation (one label map, one coherent volume).
    """
    options = trained.sample_options() if options is None else options
    spatial = tuple(condition.shape[1:]) if condition is not None else tuple(shape)
    inferer = choose_inferer(trained.config, spatial, conditional=condition is not None, batch_size=batch_size,
                             patch_wise=patch_wise)
    cond = None if condition is None else torch.as_tensor(condition, dtype=torch.float32)
    start = None if init is None else torch.as_tensor(init, dtype=torch.float32)
    return inferer(trained.model, cond, seed=seed, spatial=spatial, options=options, init=start).numpy()
