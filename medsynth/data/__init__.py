"""Data layer: preprocessing, intensity normalisation, degradations and 2D slicing as MONAI transforms."""

from medsynth.data.degradations import (
    RandImageNoised,
    RandKSpaceTruncationd,
    RandLowDoseCTd,
    RandThickSlicesd,
    gaussian_noise,
    interpolate_slabs,
    kspace_truncation,
    low_dose_ct_noise,
    rician_noise,
    thick_slices,
)
from medsynth.data.intensity import (
    CT_WINDOWS,
    ModalityNormalize,
    ModalityNormalized,
    denormalize,
    intensity_scaling,
    window_bounds,
)
from medsynth.data.preprocess import preprocessing
from medsynth.data.slicing import ExtractSlicesd, assemble_volume, slice_affine

__all__ = [
    "CT_WINDOWS",
    "ExtractSlicesd",
    "ModalityNormalize",
    "ModalityNormalized",
    "RandImageNoised",
    "RandKSpaceTruncationd",
    "RandLowDoseCTd",
    "RandThickSlicesd",
    "assemble_volume",
    "denormalize",
    "gaussian_noise",
    "intensity_scaling",
    "interpolate_slabs",
    "kspace_truncation",
    "low_dose_ct_noise",
    "preprocessing",
    "rician_noise",
    "slice_affine",
    "thick_slices",
    "window_bounds",
]
