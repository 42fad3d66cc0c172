"""Shared by the reliability tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medsynth.io import MedicalImage, write_nifti


def write_axial_slices(folder: Path, mni: tuple, positions: list[int], suffix: str = ".nii") -> tuple[Path, Path]:
    """Axial MNI152 slices at ``positions`` as 2D NIfTI images (``folder/in``) and label maps (``folder/lab``)."""
    image, label = mni
    for k, z in enumerate(positions):
        affine = image.affine.copy()
        affine[:3, 3] = (image.affine @ [0, 0, z, 1])[:3]
        write_nifti(MedicalImage(image.array[..., z], affine, {"modality": "MR"}), folder / "in" / f"s{k}{suffix}")
        write_nifti(MedicalImage(label.array[..., z].astype(np.uint8), affine), folder / "lab" / f"s{k}{suffix}")
    return folder / "in", folder / "lab"
