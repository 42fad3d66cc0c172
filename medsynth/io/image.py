"""The in-memory image type: voxels plus the geometry that places them in the patient.

Also the one place for the limits and checks that every reader shares: the largest image and
header medsynth reads, the geometry it accepts, and which files it opens at all.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import nibabel as nib
import numpy as np

from medsynth.errors import MedsynthError

#: Largest number of voxels medsynth allocates for one image (1 Gi voxels = 4 GiB in float32).
MAX_VOXELS = 1024**3
#: Largest header medsynth reads from one file: a NIfTI header with its extensions (``vox_offset``),
#: any DICOM element other than pixel data, and everything before a DICOM file's pixel data.
MAX_HEADER_BYTES = 64 * 1024**2
#: Voxel sizes medsynth accepts, in mm (0.1 micrometre to 10 m): anything else is a corrupt header.
MIN_VOXEL_MM, MAX_VOXEL_MM = 1e-4, 1e4
#: Largest distance from the world origin of an image's origin, in mm (1 km).
MAX_POSITION_MM = 1e6
#: float32 holds every integer up to this magnitude exactly, and not all above it.
FLOAT32_EXACT_INT = 2**24


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


def as_float32(array: np.ndarray, source: str) -> np.ndarray:
    """``array`` as float32, refusing integers that float32 would round (beyond 2**24 in magnitude).

    Floating-point data is rounded to float32 like any image; integer data must come through exactly.
    """
    if array.dtype.kind in "iu" and array.size:
        low, high = int(array.min()), int(array.max())
        worst = low if -low > high else high
        if abs(worst) > FLOAT32_EXACT_INT:
            raise MedsynthError(f"{source}: holds integer value {worst}, which float32 voxels cannot store exactly "
                                f"(beyond +-{FLOAT32_EXACT_INT})")
    return np.asarray(array, dtype=np.float32)


def check_voxels(array: np.ndarray, source: str) -> None:
    """Refuse arrays that no later step can use: empty, oversized, 1D in disguise or non-finite."""
    if array.size == 0:
        raise MedsynthError(f"{source}: image is empty (shape {array.shape})")
    if array.size > MAX_VOXELS:
        raise MedsynthError(f"{source}: image has {array.size} voxels, more than the limit of {MAX_VOXELS}")
    if sum(n > 1 for n in array.shape) < 2:
        raise MedsynthError(f"{source}: image of shape {array.shape} has fewer than two axes longer than one voxel; "
                            "medsynth expects 2D or 3D images")
    if np.issubdtype(array.dtype, np.floating):
        bad = int(array.size - np.count_nonzero(np.isfinite(array)))
        if bad:
            raise MedsynthError(f"{source}: image contains {bad} non-finite voxels (NaN or Inf)")


def check_spacing(spacing: np.ndarray, source: str, what: str = "voxel spacing") -> None:
    """Refuse voxel sizes that are not finite or lie outside [MIN_VOXEL_MM, MAX_VOXEL_MM]."""
    spacing = np.asarray(spacing, dtype=np.float64)
    if not np.all(np.isfinite(spacing)) or np.any(spacing < MIN_VOXEL_MM) or np.any(spacing > MAX_VOXEL_MM):
        raise MedsynthError(f"{source}: {what} {np.asarray(spacing).tolist()} mm is outside {MIN_VOXEL_MM:g}.."
                            f"{MAX_VOXEL_MM:g} mm (corrupt geometry)")


def check_position(position: np.ndarray, source: str, what: str = "origin") -> None:
    """Refuse positions that are not finite or lie more than MAX_POSITION_MM from the world origin."""
    position = np.asarray(position, dtype=np.float64)
    if not np.all(np.isfinite(position)) or np.any(np.abs(position) > MAX_POSITION_MM):
        raise MedsynthError(f"{source}: {what} {position.tolist()} mm is not within {MAX_POSITION_MM:g} mm of the "
                            "world origin (corrupt geometry)")


def check_affine(affine: np.ndarray, source: str) -> None:
    """Refuse geometry that cannot place voxels in space: non-finite, absurd or degenerate spacing, far origin."""
    affine = np.asarray(affine, dtype=np.float64)
    if not np.all(np.isfinite(affine)):
        raise MedsynthError(f"{source}: affine contains NaN or Inf")
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    degenerate = f"{source}: degenerate geometry (voxel spacing {np.round(spacing, 6).tolist()} mm)"
    if np.any(spacing <= 0):
        raise MedsynthError(degenerate)
    check_spacing(spacing, source)
    check_position(affine[:3, 3], source)
    if abs(np.linalg.det(affine[:3, :3])) < 1e-12 * float(np.prod(spacing)):  # spacing is bounded: no overflow
        raise MedsynthError(degenerate)
