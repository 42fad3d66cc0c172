"""medsynth's readers behind MONAI's ``ImageReader`` interface, for ``LoadImage(d)`` pipelines."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch
from monai.data import ImageReader, MetaTensor
from monai.utils import MetaKeys, SpaceKeys, ensure_tuple

from medsynth.errors import MedsynthError
from medsynth.io.discovery import read_image
from medsynth.io.files import is_nifti
from medsynth.io.image import MedicalImage


def monai_meta(image: MedicalImage) -> dict:
    """The meta dict MONAI's readers produce, for ``image`` (RAS affine, no channel axis)."""
    return {
        MetaKeys.AFFINE: image.affine.copy(),
        MetaKeys.ORIGINAL_AFFINE: image.affine.copy(),
        MetaKeys.SPATIAL_SHAPE: np.asarray(image.array.shape),
        MetaKeys.SPACE: SpaceKeys.RAS,
        MetaKeys.ORIGINAL_CHANNEL_DIM: float("nan"),
        "modality": image.meta.get("modality", "unknown"),
        "source": image.meta.get("source", ""),
        "filename_or_obj": image.meta.get("source", ""),
    }


def to_metatensor(image: MedicalImage) -> MetaTensor:
    """``image`` as a channel-first ``(1, *spatial)`` MetaTensor, as ``LoadImage`` + ``EnsureChannelFirst`` give."""
    meta = monai_meta(image)
    meta[MetaKeys.ORIGINAL_CHANNEL_DIM] = "no_channel"
    affine = torch.as_tensor(meta.pop(MetaKeys.AFFINE))
    return MetaTensor(torch.as_tensor(np.asarray(image.array))[None], affine=affine, meta=meta)


class MedsynthReader(ImageReader):
    """Read NIfTI files and DICOM series (file or folder) with medsynth's checks and geometry.

    Use it as ``LoadImaged(keys=["image", "label"], reader=MedsynthReader())``: the result is a
    MONAI ``MetaTensor`` whose ``affine`` is the RAS+ voxel-to-world matrix that medsynth
    computes (the same one it writes to NIfTI), with ``modality`` and ``source`` in its meta.
    Errors are :class:`~medsynth.errors.MedsynthError` with a one-line message.
    """

    def verify_suffix(self, filename: Sequence[os.PathLike | str] | os.PathLike | str) -> bool:
        return all(is_nifti(f) or os.path.isdir(f) or str(f).lower().endswith(".dcm") for f in ensure_tuple(filename))

    def read(self, data: Sequence[os.PathLike | str] | os.PathLike | str, **kwargs) -> list[MedicalImage]:
        return [read_image(path) for path in ensure_tuple(data)]

    def get_data(self, img: list[MedicalImage] | MedicalImage) -> tuple[np.ndarray, dict]:
        images = ensure_tuple(img)
        first = images[0]
        for other in images[1:]:
            if other.array.shape != first.array.shape or not np.allclose(other.affine, first.affine, atol=1e-3):
                raise MedsynthError(f"{other.meta.get('source')}: grid differs from {first.meta.get('source')}; "
                                    "cannot stack them as channels")
        meta = monai_meta(first)
        meta[MetaKeys.ORIGINAL_CHANNEL_DIM] = float("nan") if len(images) == 1 else 0
        array = first.array if len(images) == 1 else np.stack([i.array for i in images], axis=0)
        return array, meta
