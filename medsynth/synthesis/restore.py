"""``denoise`` and ``super-resolve``: a file or a folder in, the same structure out, geometry kept.

Denoising keeps voxels outside the intensity range the model works in (a CT window, the MR
0.5-99.5 percentiles) at their input values, so bone and air survive a soft-tissue CT model.
Super-resolution takes a thick-slice volume on its acquired grid: the thick axis must be the
one the model restores (``job.degrade_axis``); the volume is interpolated onto the fine grid as
in training (``job.interpolation``, the slab centres kept where they were) and
refined by the model. The output's affine carries the new slice spacing.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from medsynth.data import interpolate_slabs
from medsynth.errors import MedsynthError
from medsynth.io import ImageSource, MedicalImage, find_images, write_dicom_series, write_nifti
from medsynth.io.files import is_inside, is_nifti, nifti_stem, prepare_output_dir
from medsynth.synthesis.apply import (
    TrainedModel,
    from_model_space,
    output_seed,
    ras_affine,
    run_on_volume,
    to_model_space,
)

log = logging.getLogger("medsynth")


def restore(
    input_path: str | os.PathLike,
    output_path: str | os.PathLike,
    model: str | os.PathLike | TrainedModel,
    job: str,
    *,
    steps: int | None = None,
    sampler: str | None = None,
    seed: int = 0,
    batch_size: int = 8,
    factor: int | None = None,
    flips: bool | None = None,
    device: str = "auto",
    progress: bool = True,
) -> list[Path]:
    """Denoise or super-resolve every image under ``input_path``; returns the written paths.

    A NIfTI file in gives the NIfTI file ``output_path`` (or ``output_path/<name>.nii.gz`` when
    that is a folder); a folder in gives a folder with the same relative layout, NIfTI files as
    NIfTI, DICOM series as DICOM series.

    Args:
        job: ``denoise`` or ``super_resolve``; a model trained for another job is refused.
        factor: super-resolve only: slices per thick slice; default from the voxel size.
        flips: average over flipped copies of the input (``2 ** dims`` passes); default: the
            model config's ``job.flip_ensemble``.
    """
    trained = model if isinstance(model, TrainedModel) else TrainedModel.load(model, device)
    trained.require_job(job)
    input_path, output_path = Path(input_path), Path(output_path)
    if is_inside(output_path, input_path) or (input_path.is_file() and output_path.resolve() == input_path.resolve()):
        raise MedsynthError(f"{output_path}: output is inside the input {input_path}; medsynth never writes into "
                            "its input")
    sources = find_images(input_path)
    single_file = input_path.is_file() and is_nifti(input_path) and is_nifti(output_path)
    if not single_file:
        prepare_output_dir(output_path, input_path)
    options = trained.sampling_options(steps, sampler)
    if flips is not None:
        options["flips"] = flips
    written = []
    for source in tqdm(sources, desc=job.replace("_", "-"), unit="image", disable=not progress or None):
        image = source.read()
        result = _restore_one(trained, image, job, seed=output_seed(seed, source.name),
                              batch_size=batch_size, factor=factor, options=options)
        target = output_path if single_file else _target(source, input_path, output_path)
        if source.series is None:
            written.append(write_nifti(result, target))
        else:
            written.append(write_dicom_series(result, target, series_description=result.meta["series_description"][:64],
                                              uid_seed=f"{source.name}/{seed}"))
    return written


def _target(source: ImageSource, input_path: Path, output_path: Path) -> Path:
    """Where an output goes: the same path relative to the input folder."""
    base = input_path if input_path.is_dir() else input_path.parent
    if source.series is None:
        relative = source.path.relative_to(base)
        return output_path / relative.parent / f"{nifti_stem(relative)}.nii.gz"
    location = source.path if source.path.is_dir() else source.path.parent
    return output_path / location.relative_to(base) / source.name


def restored_axis(trained: TrainedModel) -> int:
    """The volume axis (RAS) that a super-resolution model restores."""
    config = trained.config
    if config.spatial_dims == 3:
        return config.job.degrade_axis % 3
    in_plane = [a for a in range(3) if a != config.data.slice_axis]
    return in_plane[config.job.degrade_axis % 2]


def thick_to_fine(array: np.ndarray, axis: int, factor: int, kind: str = "linear") -> np.ndarray:
    """Thick slices interpolated onto ``factor`` times more slices along ``axis`` (``kind``: "linear" or "cubic").

    Fine slice ``j`` lies at ``(j - (factor - 1) / 2) / factor`` in thick-slice units, so the
    fine slices tile each thick slab; values beyond the first and last slab centres are constant.
    The same interpolation makes the training condition (:func:`medsynth.data.thick_slices`).
    """
    return interpolate_slabs(array, factor, array.shape[axis] * factor, axis, kind)


def fine_affine(affine: np.ndarray, axis: int, factor: int) -> np.ndarray:
    """Affine of :func:`thick_to_fine`'s grid."""
    step = np.eye(4)
    step[axis, axis] = 1.0 / factor
    step[axis, 3] = -(factor - 1) / (2.0 * factor)
    return affine @ step


def _restore_one(trained: TrainedModel, image: MedicalImage, job: str, *, seed: int, batch_size: int,
                 factor: int | None, options: dict) -> MedicalImage:
    x, space = to_model_space(image, trained.config)
    description = f"medsynth {job.replace('_', '-')} ({trained.family})"
    if job == "denoise":
        out = run_on_volume(trained, x[None], seed=seed, batch_size=batch_size, **options)
        result = from_model_space(out, space, series_description=description)
        # voxels outside the intensity range the model works in (CT window, MR percentiles) were
        # clipped on the way in: they keep their input values rather than the clip bound
        low, high = space.scaling["low"], space.scaling["high"]
        outside = (image.array < low) | (image.array > high)
        return result.with_array(np.where(outside, image.array, result.array).astype(np.float32))
    if x.ndim != 3:
        raise MedsynthError(f"{image.name}: super-resolution needs a 3D volume, got a 2D image")
    axis = restored_axis(trained)
    spacing = np.sqrt((ras_affine(image, space.orientation)[:3, :3] ** 2).sum(axis=0))
    others = [spacing[a] for a in range(3) if a != axis]
    thickest = int(np.argmax(spacing))
    if factor is None:
        factor = max(1, round(spacing[axis] / min(others)))
        if spacing[thickest] >= 1.5 * min(spacing) and thickest != axis:
            raise MedsynthError(f"{image.name}: the thick axis is {'RAS'[thickest]} ({spacing[thickest]:.2f} mm) but "
                                f"the model restores the {'RAS'[axis]} axis; reorient the input or use another model")
    low, high = trained.config.job.factor
    if not low <= factor <= high:
        log.warning("%s: factor %d is outside the factors the model was trained on (%d-%d)", image.name, factor, low,
                    high)
    condition = thick_to_fine(x, axis, factor, trained.config.job.interpolation) if factor > 1 else x
    out = run_on_volume(trained, condition[None], seed=seed, batch_size=batch_size, **options)
    affine = fine_affine(ras_affine(image, space.orientation), axis, factor)
    return from_model_space(out, space, affine=affine, series_description=description)
