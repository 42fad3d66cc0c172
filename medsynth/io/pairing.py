"""Pair images with their label maps by name, and check that a label map fits its image."""

from __future__ import annotations

import os
import re
from dataclasses import replace

import numpy as np

from medsynth.errors import MedsynthError
from medsynth.io.dicom_seg import segmented_series
from medsynth.io.discovery import ImageSource, find_images
from medsynth.io.image import MedicalImage

#: nnU-Net names image channels ``case_0000``; their label is ``case``.
_CHANNEL_SUFFIX = re.compile(r"_\d{4}$")
#: Largest affine difference (mm, per matrix entry) at which a label is still on the image grid.
AFFINE_TOLERANCE_MM = 1e-3
#: Largest label value: the largest a NIfTI uint32 label map holds.
MAX_LABEL = 2**32 - 1


def pair_labels(images: list[ImageSource], labels_path: str | os.PathLike) -> list[tuple[ImageSource, ImageSource]]:
    """Match every image to its label map under ``labels_path``: a DICOM SEG that references the
    image's DICOM series, else the label map of the same name.

    Names are compared after stripping an nnU-Net channel suffix (``case_0000`` -> ``case``). The
    label sources read their values exactly (``ImageSource.label``), not as float32.

    Raises:
        MedsynthError: an image has no label map of its name.
    """
    found = find_images(labels_path, segmentations=True)
    labels = {source.name: replace(source, label=True) for source in found}
    by_series = {uid: source for source in found if source.segmentation for uid in segmented_series(source.path)}
    pairs = []
    for image in images:
        label = (by_series.get(image.series.uid) if image.series is not None else None) or labels.get(image.name) or \
            labels.get(_CHANNEL_SUFFIX.sub("", image.name))
        if label is None:
            raise MedsynthError(f"{image.path}: no label map named '{image.name}' under {labels_path} "
                                "(labels are matched to images by file stem)")
        pairs.append((image, label))
    return pairs


def check_label(label: MedicalImage, image: MedicalImage, num_classes: int | None = None) -> MedicalImage:
    """Return ``label`` as an integer label map after checking it belongs to ``image``.

    The values are kept exactly: uint8 up to 255, int32 up to 2**31 - 1 (torch has no full uint16/
    uint32 support), int64 up to ``MAX_LABEL`` (written to NIfTI as uint32). Larger values are refused.

    Args:
        label: the label map (any numeric dtype holding whole numbers).
        image: the image it annotates.
        num_classes: if given, values must lie in ``[0, num_classes)``.

    Raises:
        MedsynthError: different shape or affine, non-integer, negative or too large values, or
            values outside ``num_classes``.
    """
    where = label.meta.get("source", "label")
    if label.array.shape != image.array.shape:
        raise MedsynthError(f"{where}: label shape {label.array.shape} differs from image shape "
                            f"{image.array.shape} ({image.meta.get('source', 'image')})")
    if not np.allclose(label.affine, image.affine, atol=AFFINE_TOLERANCE_MM):
        worst = float(np.max(np.abs(label.affine - image.affine)))
        raise MedsynthError(f"{where}: label affine differs from its image's by up to {worst:.4g} mm "
                            f"({image.meta.get('source', 'image')}); resample the label onto the image grid")
    values = label.array
    if values.dtype.kind not in "iub" and not np.array_equal(values, np.round(values)):
        raise MedsynthError(f"{where}: label map holds non-integer values; expected class indices 0, 1, 2, ...")
    low, high = (values.min().item(), values.max().item()) if values.size else (0, 0)
    if low < 0:
        raise MedsynthError(f"{where}: label map holds negative value {low:.0f}")
    if high > MAX_LABEL:
        raise MedsynthError(f"{where}: label value {high:.0f} is larger than the largest label medsynth stores "
                            f"({MAX_LABEL})")
    if num_classes is not None and high >= num_classes:
        raise MedsynthError(f"{where}: label value {high:.0f} is outside the {num_classes} classes "
                            f"(0..{num_classes - 1})")
    dtype = np.uint8 if high <= np.iinfo(np.uint8).max else np.int32 if high <= np.iinfo(np.int32).max else np.int64
    return MedicalImage(values.astype(dtype), label.affine.copy(), dict(label.meta))
