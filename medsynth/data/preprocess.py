"""The standard preprocessing chain, from file paths to normalised, resampled MetaTensors."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence

import torch
from monai.transforms import (
    Compose,
    EnsureChannelFirstd,
    EnsureTyped,
    LoadImaged,
    Orientationd,
    ResizeWithPadOrCropd,
    Spacingd,
)

from medsynth.data.intensity import ModalityNormalized, Window
from medsynth.io.monai_reader import MedsynthReader


def load_images(keys: list[str]) -> LoadImaged:
    """``LoadImaged`` with medsynth's reader, without the notes MONAI prints while it registers its
    other readers (an optional GPU DICOM decoder that medsynth does not use)."""
    plugin_log = logging.getLogger("monai.data.nvimgcodec_pydicom_plugin")
    level = plugin_log.level
    plugin_log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*NvImgCodec.*")
            return LoadImaged(keys, reader=MedsynthReader(), image_only=True)
    finally:
        plugin_log.setLevel(level)


def preprocessing(
    keys: Sequence[str] = ("image",),
    label_key: str | None = None,
    spacing_mm: float | Sequence[float] | None = None,
    size: int | Sequence[int] | None = None,
    modality: str | None = None,
    window: Window = "soft_tissue",
    lower: float = 0.5,
    upper: float = 99.5,
    nonzero: bool = False,
    load: bool = True,
    normalize: bool = True,
) -> Compose:
    """MONAI transforms that load, reorient, resample, normalise and crop/pad a sample.

    The chain, on a dict of paths (NIfTI files or DICOM series folders):
    ``LoadImaged`` (:class:`~medsynth.io.monai_reader.MedsynthReader`) -> ``EnsureChannelFirstd`` ->
    ``Orientationd("RAS")`` -> ``Spacingd`` (if ``spacing_mm``; bilinear for images, nearest for the
    label) -> :class:`~medsynth.data.intensity.ModalityNormalized` (images only) ->
    ``ResizeWithPadOrCropd`` (if ``size``; symmetric, zero padding, i.e. the normalised minimum) ->
    float32. Labels are never intensity-normalised and keep their integer values.

    Args:
        keys: keys of the image paths.
        label_key: key of the label map path, if any.
        spacing_mm: target voxel size in mm, one value for all axes or one per spatial axis.
        size: target spatial shape, one value for all axes or one per spatial axis.
        modality: force the normalisation rule ("CT" or other); default each image's meta.
        window, lower, upper, nonzero: see :class:`~medsynth.data.intensity.ModalityNormalize`.
        load: start from paths (``LoadImaged`` + ``EnsureChannelFirstd``); ``False`` for dicts that
            already hold channel-first MetaTensors (e.g. from :func:`medsynth.io.monai_reader.to_metatensor`).
        normalize: ``False`` keeps the original intensities (a caller that scales from part of
            the image, e.g. the training slabs, does it itself).

    Returns:
        A ``Compose`` mapping ``{key: path}`` to ``{key: MetaTensor (C, *spatial)}``.
    """
    image_keys = list(keys)
    if not image_keys:
        raise ValueError("preprocessing needs at least one image key")
    if label_key is not None and label_key in image_keys:
        raise ValueError(f"label key {label_key!r} is also listed as an image key")
    all_keys = image_keys + ([label_key] if label_key is not None else [])
    transforms = [load_images(all_keys), EnsureChannelFirstd(all_keys)] if load else []
    transforms.append(Orientationd(all_keys, axcodes="RAS", labels=None))
    if spacing_mm is not None:
        modes = ["bilinear"] * len(image_keys) + (["nearest"] if label_key is not None else [])
        transforms.append(Spacingd(all_keys, pixdim=spacing_mm, mode=modes))
    if normalize:
        transforms.append(ModalityNormalized(image_keys, modality, window, lower, upper, nonzero))
    if size is not None:
        transforms.append(ResizeWithPadOrCropd(all_keys, spatial_size=size))
    transforms.append(EnsureTyped(all_keys, dtype=torch.float32, track_meta=True))
    return Compose(transforms)
