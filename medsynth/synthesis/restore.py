"""``denoise`` and ``super-resolve``: a file or a folder in, the same structure out, geometry kept.

Denoising passes through what lies beyond the intensity range the model works in (a CT window,
the MR 0.5-99.5 percentiles), added to the model's output, so bone and air survive a soft-tissue
CT model and the output is continuous at the range's bounds.
Super-resolution takes a thick-slice volume on its acquired grid: the thick axis must be the
one the model restores (``job.degrade_axis``); the volume is interpolated onto the fine grid as
in training (``job.interpolation``, the slab centres kept where they were) and
refined by the model. The output's affine carries the new slice spacing.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

import numpy as np

from medsynth.data import interpolate_slabs
from medsynth.data.noise import estimate_noise_sigma, rician_mean_inverse
from medsynth.errors import MedsynthError, check_count, display
from medsynth.io import ImageSource, MedicalImage, find_input_images, write_dicom_series, write_nifti
from medsynth.io.files import check_separate, folder_lock, inside_output, is_nifti, nifti_stem, prepare_output_dir
from medsynth.io.image import MAX_VOXELS
from medsynth.models import SampleOptions
from medsynth.progress import progress as show_progress
from medsynth.synthesis.apply import (
    MAX_BATCH,
    ModelSpace,
    TrainedModel,
    from_model_space,
    output_seed,
    ras_affine,
    ras_spacing,
    run_on_volume,
    to_model_space,
    to_ras,
)
from medsynth.synthesis.self_supervised import (
    SelfTraining,
    check_keep_model,
    check_self_scans,
    self_run_dir,
    train_self,
)
from medsynth.training.self_supervised import plane_axes

log = logging.getLogger("medsynth")
#: largest ``--factor`` accepted (0.25 mm slices from 8 mm ones)
MAX_FACTOR = 32
#: fused super-resolution: seed offset of the second plane's pass
OTHER_PLANE_SEED = 1_000_003
#: self-supervised denoising: the noise level is measured where the estimate exceeds this (of [0, 1])
SIGNAL_FLOOR = 0.2


def restore(
    input_path: str | os.PathLike,
    output_path: str | os.PathLike,
    model: str | os.PathLike | TrainedModel | None,
    job: str,
    *,
    self_training: SelfTraining | None = None,
    steps: int | None = None,
    sampler: str | None = None,
    ensemble: int | None = None,
    seed: int = 0,
    batch_size: int = 8,
    factor: int | None = None,
    flips: bool | None = None,
    keep_study: bool = False,
    device: str = "auto",
    progress: bool = True,
) -> list[Path]:
    """Denoise or super-resolve every image under ``input_path``; returns the written paths.

    A NIfTI file in gives the NIfTI file ``output_path`` (or ``output_path/<name>.nii.gz`` when
    that is a folder); a folder in gives a folder with the same relative layout, NIfTI files as
    NIfTI, DICOM series as DICOM series.

    Args:
        model: a run directory (or loaded model) trained for ``job``; ``None`` with ``self_training``.
        job: ``denoise`` or ``super_resolve``; a model trained for another job is refused.
        self_training: instead of ``model``, train one model per scan on that scan alone
            (``--self``, :mod:`medsynth.synthesis.self_supervised`) and apply it.
        factor: super-resolve only: slices per thick slice; default from the voxel size.
        ensemble: average this many samples per output (default: the model's ``ensemble``).
        flips: average over flipped copies of the input (``2 ** dims`` passes); default: the
            model config's ``job.flip_ensemble``.
        keep_study: a DICOM result becomes a derived series in its source's study (patient and
            study attributes kept, ReferencedSeriesSequence to the source) rather than a new,
            de-identified study; it is then as identifying as the source.
    """
    check_count("--batch-size", batch_size, MAX_BATCH)
    if factor is not None:
        check_count("--factor", factor, MAX_FACTOR)
    input_path, output_path = Path(input_path), Path(output_path)
    check_separate(output_path, [input_path])
    sources = find_input_images(input_path)
    single_file = input_path.is_file() and is_nifti(input_path) and is_nifti(output_path)
    if not single_file and is_nifti(output_path):
        raise MedsynthError(f"{display(output_path)}: a NIfTI file name, but {display(input_path)} is a folder or a "
                            "DICOM series; give an output folder")
    if keep_study:
        _check_keep_study(sources)
    if (model is None) == (self_training is None):
        raise MedsynthError("give either --model (a trained run) or --self (train on each scan), not both or neither")
    if self_training is not None:
        self_training.check()
        check_keep_model(self_training, input_path, output_path, len(sources))
        if len(sources) > 1:  # one scan is checked as its training starts
            check_self_scans(sources, job, self_training, factor)
        trained = None
    else:
        trained = model if isinstance(model, TrainedModel) else TrainedModel.load(model, device)
        trained.require_job(job)
        options = trained.sample_options(steps=steps, sampler=sampler, ensemble=ensemble, flips=flips)
    if single_file:
        output_path.parent.mkdir(parents=True, exist_ok=True)
        targets = [output_path]
    else:
        prepare_output_dir(output_path, input_path)
        targets = _targets(sources, input_path, output_path)
    written = []
    lock = contextlib.nullcontext() if single_file else folder_lock(output_path, "output folder")
    with lock:  # two runs into one folder would leave a mix of both
        for source, target in show_progress(list(zip(sources, targets, strict=True)), desc=job.replace("_", "-"),
                                            unit="image", enabled=progress):
            image = source.read()
            if self_training is not None:  # the model is loaded in memory: a temporary run may go
                with self_run_dir(self_training, source, len(sources)) as run_dir:
                    trained = train_self(image, source, job, self_training, run_dir, factor=factor, device=device,
                                         progress=progress)
                options = trained.sample_options(steps=steps, sampler=sampler, ensemble=ensemble, flips=flips)
            result = _restore_one(trained, image, job, seed=output_seed(seed, source.name),
                                  batch_size=batch_size, factor=factor, options=options)
            if not single_file:
                target = inside_output(output_path, target.relative_to(output_path))
            if source.series is None:
                written.append(write_nifti(result, target))
            else:
                written.append(write_dicom_series(
                    result, target, uid_seed=f"{source.name}/{seed}",
                    series_description=result.meta["series_description"][:64],
                    derived_from=source.series if keep_study else None,
                    derivation=f"medsynth {job.replace('_', '-')} with a {trained.family} model "
                               f"({trained.run_dir.name}), seed {seed}"))
    return written


def _check_keep_study(sources: list[ImageSource]) -> None:
    """``--keep-study`` needs DICOM inputs whose study and series are identified."""
    series = [s for s in sources if s.series is not None]
    if not series:
        raise MedsynthError("--keep-study: no DICOM series among the inputs; a NIfTI result has no study to join")
    for source in series:
        header = source.series.headers[0]
        missing = [k for k in ("StudyInstanceUID", "SeriesInstanceUID") if not header.get(k)]
        if missing:
            raise MedsynthError(f"{display(source.path)}: --keep-study needs {' and '.join(missing)}, which this "
                                "series lacks")


def _targets(sources: list[ImageSource], input_path: Path, output_path: Path) -> list[Path]:
    """Where each output goes: the same path relative to the input folder, NIfTI as ``.nii.gz``.

    Two inputs that would land on one output (``scan.nii`` and ``scan.nii.gz``, or a series
    named like a file beside it) get distinct names (``scan_2.nii.gz``), with a warning: an
    output never overwrites another of the same run.
    """
    base = input_path if input_path.is_dir() else input_path.parent
    targets, taken = [], set()
    for source in sources:
        if source.series is None:
            relative = source.path.relative_to(base)
            folder, stem, suffix = relative.parent, nifti_stem(relative), ".nii.gz"
        else:
            location = source.path if source.path.is_dir() else source.path.parent
            folder, stem, suffix = location.relative_to(base), source.name, ""
        target, count = output_path / folder / f"{stem}{suffix}", 1
        while str(target).casefold() in taken:  # casefold: one file on case-insensitive file systems
            count += 1
            target = output_path / folder / f"{stem}_{count}{suffix}"
        if count > 1:
            log.warning("%s: another input has the same output name; writing it to %s", display(source.path),
                        display(target))
        taken.add(str(target).casefold())
        targets.append(target)
    return targets


def restored_axis(trained: TrainedModel) -> int:
    """The volume axis (RAS) that a super-resolution model restores."""
    config = trained.config
    if config.spatial_dims == 3:
        return config.job.degrade_axis % 3
    return plane_axes(config.data.slice_axis, config.job.degrade_axis)[0]


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


def _in_other_plane(trained: TrainedModel, condition: np.ndarray, *, seed: int, batch_size: int,
                    options: SampleOptions) -> np.ndarray:
    """A 2D super-resolution model run on the other plane that contains its restored axis.

    The model restores one patch axis; swapping the slice axis with the third axis keeps the
    restored axis where the model expects it while the slices now cross the volume the other way.
    """
    slice_axis = trained.config.data.slice_axis
    _, other = plane_axes(slice_axis, trained.config.job.degrade_axis)
    swapped = np.ascontiguousarray(np.swapaxes(condition, slice_axis, other))
    out = run_on_volume(trained, swapped[None], seed=seed + OTHER_PLANE_SEED, batch_size=batch_size, options=options)
    return np.swapaxes(out, slice_axis, other)


def _undo_rician_mean(out: np.ndarray, noisy: np.ndarray, zero: float, name: str) -> np.ndarray:
    """A self-supervised denoiser's output is the Rician mean of each voxel: map it back to the signal
    with the noise level measured on the scan, over the voxels well above the noise floor.

    ``zero`` is where intensity 0 (no signal) lies in model space: the scaling's low percentile is
    not zero, and a Rician mean is measured from zero (inverting from the percentile left the
    background at that percentile, a flat offset that cost SSIM)."""
    sigma = estimate_noise_sigma(noisy, mask=out > SIGNAL_FLOOR)
    log.info("%s: noise level %.4f of the intensity range (estimated); Rician bias removed", name, sigma)
    return rician_mean_inverse(out - zero, sigma) + zero


def _restore_one(trained: TrainedModel, image: MedicalImage, job: str, *, seed: int, batch_size: int,
                 factor: int | None, options: SampleOptions) -> MedicalImage:
    x, space = to_model_space(image, trained.config)
    description = f"medsynth {job.replace('_', '-')} ({trained.family})"
    if job == "denoise":
        out = run_on_volume(trained, x[None], seed=seed, batch_size=batch_size, options=options)
        low, high = space.scaling["low"], space.scaling["high"]
        magnitude = trained.config.data.self_supervised and trained.config.job.noise == "rician"
        if magnitude:
            out = _undo_rician_mean(out, x, -low / (high - low), image.name)
        result = from_model_space(out, space, series_description=description)
        values = result.array + _beyond_range(image.array, space)
        if magnitude and image.array.min() >= 0:  # a magnitude image: the signal is never negative
            values = np.maximum(values, 0.0)
        return result.with_array(values.astype(np.float32))
    if x.ndim != 3:
        raise MedsynthError(f"{image.name}: super-resolution needs a 3D volume, got a 2D image")
    axis = restored_axis(trained)
    spacing = ras_spacing(image, space.orientation)
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
    if x.size * factor > MAX_VOXELS:
        raise MedsynthError(f"{image.name}: --factor {factor} would make {x.size * factor} voxels, more than the limit "
                            f"of {MAX_VOXELS}")
    condition = thick_to_fine(x, axis, factor, trained.config.job.interpolation) if factor > 1 else x
    out = run_on_volume(trained, condition[None], seed=seed, batch_size=batch_size, options=options)
    if trained.config.job.fuse_planes and trained.config.spatial_dims == 2:
        out = (out + _in_other_plane(trained, condition, seed=seed, batch_size=batch_size, options=options)) / 2
    affine = fine_affine(ras_affine(image, space.orientation), axis, factor)
    result = from_model_space(out, space, affine=affine, series_description=description)
    beyond = _beyond_range(to_ras(image)[0], space)  # linear: no overshoot around a bright voxel
    if factor > 1:
        beyond = thick_to_fine(beyond, axis, factor)
    return result.with_array((result.array + beyond).astype(np.float32))


def _beyond_range(array: np.ndarray, space: ModelSpace) -> np.ndarray:
    """What lies beyond the model's intensity range (CT window, MR percentiles), which the model saw
    clipped: restoration adds it on top of the model's output, so bone, air and the brightest MR
    voxels keep their excess and the output is continuous at the bounds (keeping the whole input
    value there instead left the brightest noisy voxels of an MR scan untouched)."""
    low, high = space.scaling["low"], space.scaling["high"]
    return array - np.clip(array, low, high)
