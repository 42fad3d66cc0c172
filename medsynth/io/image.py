"""The in-memory image type: voxels plus the geometry that places them in the patient."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import nibabel as nib
import numpy as np

from medsynth.errors import MedsynthError

#: Largest number of voxels medsynth allocates for one image (1 Gi voxels = 4 GiB in float32).
MAX_VOXELS = 1024**3


@dataclass
class MedicalImage:
    """A 2D or 3D image with its voxel-to-world affine.

    Attributes:
        array: voxel values, shape ``(X, Y)`` or ``(X, Y, Z)``, indexed like nibabel
            (``array[i, j, k]`` sits at ``affine @ [i, j, k, 1]``). No channel axis.
        affine: 4x4 voxel-to-world matrix in millimetres, world axes RAS+ (the NIfTI and
            nibabel convention: +x towards the patient's Right, +y Anterior, +z Superior;
            DICOM's LPS+ is converted on reading).
        meta: small metadata dict: ``modality`` ("MR", "CT", ...), ``source`` (path it was read
            from), ``series_description``, and reader-specific extras.
    """

    array: np.ndarray
    affine: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.affine = np.asarray(self.affine, dtype=np.float64)
        if self.affine.shape != (4, 4):
            raise ValueError(f"affine must be 4x4, got {self.affine.shape}")
        if self.array.ndim not in (2, 3):
            raise ValueError(f"array must be 2D or 3D, got shape {self.array.shape}")

    @property
    def spatial_dims(self) -> int:
        return self.array.ndim

    @property
    def spacing_mm(self) -> tuple[float, ...]:
        """Voxel size along each array axis, in millimetres."""
        norms = np.linalg.norm(self.affine[:3, :3], axis=0)
        return tuple(float(s) for s in norms[: self.array.ndim])

    @property
    def axcodes(self) -> tuple[str, ...]:
        """Closest anatomical direction of each array axis, e.g. ``("R", "A", "S")``."""
        return tuple(nib.aff2axcodes(self.affine))[: max(self.array.ndim, 3)]

    @property
    def name(self) -> str:
        """Short name used for output files (set by the reader)."""
        return str(self.meta.get("name", "image"))

    def with_array(self, array: np.ndarray, **meta: Any) -> MedicalImage:
        """Same geometry, new voxels (e.g. a model output); ``meta`` entries are updated."""
        if array.shape != self.array.shape:
            raise ValueError(f"new array shape {array.shape} differs from {self.array.shape}")
        return MedicalImage(array, self.affine.copy(), {**self.meta, **meta})


def check_voxels(array: np.ndarray, source: str) -> None:
    """Refuse arrays that no later step can use: empty, oversized or non-finite."""
    if array.size == 0:
        raise MedsynthError(f"{source}: image is empty (shape {array.shape})")
    if array.size > MAX_VOXELS:
        raise MedsynthError(f"{source}: image has {array.size} voxels, more than the limit of {MAX_VOXELS}")
    if np.issubdtype(array.dtype, np.floating):
        bad = int(array.size - np.count_nonzero(np.isfinite(array)))
        if bad:
            raise MedsynthError(f"{source}: image contains {bad} non-finite voxels (NaN or Inf)")


def check_affine(affine: np.ndarray, source: str) -> None:
    """Refuse geometry that cannot place voxels in space (non-finite, zero or degenerate spacing)."""
    affine = np.asarray(affine, dtype=np.float64)
    if not np.all(np.isfinite(affine)):
        raise MedsynthError(f"{source}: affine contains NaN or Inf")
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    if np.any(spacing <= 0) or abs(np.linalg.det(affine[:3, :3])) < 1e-12 * float(np.prod(spacing)):
        raise MedsynthError(f"{source}: degenerate geometry (voxel spacing {np.round(spacing, 6).tolist()} mm)")
