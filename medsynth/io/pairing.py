"""Pair images with their label maps by name, and check that a label map fits its image."""

from __future__ import annotations

import os
import re

import numpy as np

from medsynth.errors import MedsynthError
from medsynth.io.discovery import ImageSource, find_images
from medsynth.io.image import MedicalImage

#: nnU-Net names image channels ``case_0000``; their label is ``case``.
_CHANNEL_SUFFIX = re.compile(r"_\d{4}$")
#: Largest affine difference (mm, per matrix entry) at which a label is still on the image grid.
AFFINE_TOLERANCE_MM = 1e-3


def pair_labels(images: list[ImageSource], labels_path: str | os.PathLike) -> list[tuple[ImageSource, ImageSource]]:
    """Match every image to the label map of the same name under ``labels_path``.

    Names are compared after stripping an nnU-Net channel suffix (``case_0000`` -> ``case``).

    Raises:
        MedsynthError: an image has no label map of its name.
    """
    labels = {source.name: source for source in find_images(labels_path)}
    pairs = []
    for image in images:
        label = labels.get(image.name) or labels.get(_CHANNEL_SUFFIX.sub("", image.name))
        if label is None:
            raise MedsynthError(f"{image.path}: no label map named '{image.name}' under {labels_path} "
                                "(labels are matched to images by file stem)")
        pairs.append((image, label))
    return pairs


def check_label(label: MedicalImage, image: MedicalImage, num_classes: int | None = None) -> MedicalImage:
    """Return ``label`` as an integer label map after checking it belongs to ``image``.

    Args:
        label: the label map (any numeric dtype holding whole numbers).
        image: the image it annotates.
        num_classes: if given, values must lie in ``[0, num_classes)``.

    Raises:
        MedsynthError: different shape or affine, non-integer or negative values, or values
            outside ``num_classes``.
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
    if not np.array_equal(values, np.round(values)):
        raise MedsynthError(f"{where}: label map holds non-integer values; expected class indices 0, 1, 2, ...")
    low, high = int(values.min()), int(values.max())
    if low < 0:
        raise MedsynthError(f"{where}: label map holds negative value {low}")
    if num_classes is not None and high >= num_classes:
        raise MedsynthError(f"{where}: label value {high} is outside the {num_classes} classes (0..{num_classes - 1})")
    dtype = np.uint8 if high < 256 else np.int32
    return MedicalImage(values.astype(dtype), label.affine.copy(), dict(label.meta))
