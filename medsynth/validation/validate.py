"""``medsynth validate REAL_DIR SYNTH_DIR``: how close is a folder of synthetic images to real ones?

Both folders are read like training data (NIfTI or DICOM, reoriented to RAS, intensities scaled
to [0, 1] per image), cut into 2D slices along the axial axis (or kept as 3D volumes with
``spatial_dims=3``), brought onto one grid, and measured with the functions ``medsynth compare``
uses (:mod:`medsynth.validation.compare_measure`): KID with a 95% interval and FID with its
validity flag in three feature spaces, MS-SSIM diversity beside the real images', calibrated
memorization (needs ``--train``: the real folder must then be held out from the generator's
training), intensity distances per label class when both label folders are given, and paired
PSNR/SSIM when synthetic files have the names of real ones (restored copies of them).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from medsynth.device import resolve_device
from medsynth.errors import MedsynthError, check_count
from medsynth.io.files import check_separate, prepare_output_dir, write_json
from medsynth.training.dataset import load_volumes
from medsynth.training.experiment import DataConfig
from medsynth.validation import compare_measure as measure
from medsynth.validation.feature_spaces import build_feature_spaces
from medsynth.validation.features import load_feature_extractor, train_feature_network
from medsynth.validation.fidelity import psnr, ssim
from medsynth.validation.realism import (
    ImageSet,
    common_shape,
    diversity,
    foreground_slices,
    intensity_distances,
    stack_images,
)
from medsynth.validation.unpaired import MIN_IMAGES

#: why memorization is not measured without ``--train``
NO_TRAIN = ("not measured: pass --train (the generator's real training images; REAL_DIR must be held out "
            "from them) to calibrate nearest-training distances on the real images")


def load_image_set(folder: str | os.PathLike, labels: str | os.PathLike | None = None, *, spatial_dims: int = 2,
                   slice_axis: int = 2, min_foreground: float = 0.15, shape: tuple[int, ...] | None = None) -> ImageSet:
    """Images (and labels) of a folder as one :class:`ImageSet`.

    2D: slices along ``slice_axis`` whose foreground (label > 0, else image > 0.05) covers at
    least ``min_foreground``; 2D image files are taken whole. 3D: whole volumes. Everything is
    centred on ``shape`` (default: the most common shape), padding or cropping.
    """
    volumes = load_volumes(DataConfig(images=str(folder), labels=None if labels is None else str(labels)), spatial_dims)
    images, maps, names = [], [], []
    for volume in volumes:
        if spatial_dims == 3:
            images.append(volume.image[0])
            maps.append(None if volume.label is None else volume.label[0])
            names.append(volume.name)
            continue
        depth = volume.image.shape[1 + slice_axis]
        label = None if volume.label is None else volume.label[0]
        indices = [0] if depth == 1 else foreground_slices(volume.image[0], label, slice_axis, min_foreground)
        for index in indices:
            images.append(volume.image[0].select(slice_axis, index))
            maps.append(None if label is None else label.select(slice_axis, index))
            names.append(f"{volume.name}:{index}" if depth > 1 else volume.name)
    if len(images) < MIN_IMAGES:
        raise MedsynthError(f"{folder}: {len(images)} usable {'slices' if spatial_dims == 2 else 'volumes'} "
                            f"(foreground >= {min_foreground}); the measures need at least {MIN_IMAGES} "
                            "(KID's bootstrap interval)")
    shape = shape or common_shape(images)
    stacked_labels = None if any(m is None for m in maps) else stack_images(maps, shape).round().long()
    return ImageSet(stack_images(images, shape), stacked_labels, names)


def paired_fidelity(real: ImageSet, synthetic: ImageSet) -> dict | None:
    """PSNR/SSIM of synthetic images against the real images of the same name (e.g. ``medsynth denoise``
    output against clean originals), or None when no names match. Each image carries its own
    intensity scaling to [0, 1], so this measures structure more than absolute units."""
    index = {name: k for k, name in enumerate(real.names)}
    pairs = [(index[name], k) for k, name in enumerate(synthetic.names) if name in index]
    if not pairs:
        return None
    scores = [(psnr(synthetic.images[k, 0].numpy(), real.images[r, 0].numpy()),
               ssim(synthetic.images[k, 0].numpy(), real.images[r, 0].numpy())) for r, k in pairs]
    return {"pairs": len(pairs), "psnr": float(np.mean([p for p, _ in scores])),
            "ssim": float(np.mean([s for _, s in scores]))}


#: Most training steps of medsynth's feature network (300 by default).
MAX_FEATURE_STEPS = 10**6


def check_validate_options(spatial_dims: int, feature_steps: int) -> None:
    """Refuse ``--dims`` other than 2 or 3 and ``--feature-steps`` outside [1, MAX_FEATURE_STEPS].

    Raises:
        MedsynthError: naming the option.
    """
    if isinstance(spatial_dims, bool) or spatial_dims not in (2, 3):
        raise MedsynthError(f"--dims {spatial_dims}: use 2 (slices) or 3 (volumes)")
    check_count("--feature-steps", feature_steps, MAX_FEATURE_STEPS)


def validate(real_dir: str | os.PathLike, synth_dir: str | os.PathLike, out: str | os.PathLike, *,
             labels: str | os.PathLike | None = None, synth_labels: str | os.PathLike | None = None,
             train_dir: str | os.PathLike | None = None, train_labels: str | os.PathLike | None = None,
             features: str | os.PathLike | None = None, spatial_dims: int = 2, feature_steps: int = 300,
             device: str = "auto", progress: bool = True) -> Path:
    """Measure ``synth_dir`` against ``real_dir``; write ``out/metrics.json`` and ``out/report.html``.

    Args:
        labels, synth_labels: label maps of the real and synthetic images (intensity distance per class;
            the feature network learns to segment them; memorization on condition residuals).
        train_dir, train_labels: the generator's real training data: the memorization check's reference
            and realism's "real training" row; the feature network is trained on it (default: ``real_dir``,
            and then memorization is not measured).
        features: a TorchScript feature extractor or a saved medsynth feature network; default: train one.
    Returns:
        The path of ``report.html``.
    """
    from medsynth.validation.report import write_validation_report

    check_validate_options(spatial_dims, feature_steps)
    inputs = (real_dir, synth_dir, labels, synth_labels, train_dir, train_labels, features)
    check_separate(out, inputs, "report folder")
    if train_dir is not None and Path(train_dir).resolve() == Path(real_dir).resolve():
        raise MedsynthError(f"--train {train_dir}: the same folder as REAL_DIR; memorization is calibrated on real "
                            "images held out from training, so leave --train out or give the training folder")
    target = resolve_device(device)
    began = time.perf_counter()
    real = load_image_set(real_dir, labels, spatial_dims=spatial_dims)
    shape = tuple(real.images.shape[2:])
    synthetic = load_image_set(synth_dir, synth_labels, spatial_dims=spatial_dims, shape=shape)
    train = None if train_dir is None else load_image_set(train_dir, train_labels, spatial_dims=spatial_dims,
                                                          shape=shape)
    reference = train or real
    extractor = load_feature_extractor(features, target) if features else None
    out = prepare_output_dir(out, *inputs)
    classes = int(max(int(s.labels.max()) for s in (real, synthetic, reference) if s.labels is not None) + 1) \
        if reference.labels is not None else 0
    if extractor is None:
        extractor = train_feature_network(list(reference.images),
                                          None if reference.labels is None else list(reference.labels),
                                          num_classes=classes, steps=feature_steps, device=target, progress=progress)
    class_names = ["background"] + [f"label_{k}" for k in range(1, classes)] if classes else None
    realism = measure.realism(build_feature_spaces(extractor, spatial_dims), real, train, {"synthetic": synthetic})
    memorization = None if train is None else measure.memorization(extractor, train, real, synthetic, classes)
    metrics = {"n_real": len(real), "n_synthetic": len(synthetic), "realism": realism.as_dict(),
               "ms_ssim": {"synthetic": diversity(synthetic.images), "real": diversity(real.images)},
               "intensity_wasserstein": intensity_distances(real, synthetic, class_names),
               "memorization": ({"measured": False, "reason": NO_TRAIN} if memorization is None
                                else memorization.as_dict())}
    paired = paired_fidelity(real, synthetic)
    if paired:
        metrics["fidelity"] = paired
    report = {"real": str(real_dir), "synthetic": str(synth_dir),
              "train": None if train_dir is None else str(train_dir), "spatial_dims": spatial_dims,
              "shape": list(shape),
              "feature_network": {"description": extractor.description, **extractor.config},
              "metrics": metrics, "seconds": round(time.perf_counter() - began, 1)}
    if not features:
        extractor.save(out / "feature_network")
    write_json(out / "metrics.json", report)
    return write_validation_report(out, report, real, synthetic, train, realism, memorization)
