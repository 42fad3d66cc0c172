"""One DICOM image plane: its orientation, position and pixel spacing in LPS+ patient space (mm),
read and checked, and its stored values rescaled to real-world units."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset

from medsynth.errors import MedsynthError
from medsynth.io.image import as_float32, check_position, check_spacing

#: DICOM (LPS+) to NIfTI (RAS+) world axes.
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def floats(ds: Dataset, keyword: str, count: int, where: str | Path) -> np.ndarray | None:
    """``count`` finite numbers from ``ds.<keyword>``; ``None`` when absent or empty."""
    value = ds.get(keyword)
    if value is None or value == "":
        return None
    try:
        values = np.array([float(v) for v in (value if isinstance(value, (list, tuple, pydicom.multival.MultiValue))
                                              else [value])], dtype=np.float64)
    except (TypeError, ValueError):
        raise MedsynthError(f"{where}: {keyword} is not numeric ({value!r})") from None
    if values.size != count or not np.all(np.isfinite(values)):
        raise MedsynthError(f"{where}: {keyword} must hold {count} finite numbers, got {value!r}")
    return values


@dataclass
class SliceGeometry:
    """Where one image plane lies in patient space (LPS, mm)."""

    row_cosine: np.ndarray  # direction of increasing column index (LPS)
    column_cosine: np.ndarray  # direction of increasing row index (LPS)
    pixel_spacing: np.ndarray  # (between rows, between columns) in mm
    position: np.ndarray  # ImagePositionPatient (LPS, mm)

    @property
    def normal(self) -> np.ndarray:
        return np.cross(self.row_cosine, self.column_cosine)


def slice_geometry(ds: Dataset, path: str | Path) -> SliceGeometry | None:
    """The plane of ``ds`` (a file, or a functional-group item holding the same keywords); ``None``
    without ImageOrientationPatient or ImagePositionPatient."""
    orientation = floats(ds, "ImageOrientationPatient", 6, path)
    position = floats(ds, "ImagePositionPatient", 3, path)
    if orientation is None or position is None:
        return None
    spacing = plane_spacing(ds, path)
    if spacing is None:
        raise MedsynthError(f"{path}: PixelSpacing is missing")
    check_position(position, str(path), "ImagePositionPatient")
    row, col = orientation[:3], orientation[3:]
    if abs(np.linalg.norm(row) - 1) > 1e-2 or abs(np.linalg.norm(col) - 1) > 1e-2 or abs(row @ col) > 1e-2:
        raise MedsynthError(f"{path}: ImageOrientationPatient is not two orthogonal unit vectors "
                            f"({orientation.tolist()})")
    row, col = row / np.linalg.norm(row), col / np.linalg.norm(col)
    return SliceGeometry(row, col, spacing, position)


def plane_spacing(ds: Dataset, path: str | Path) -> np.ndarray | None:
    """PixelSpacing (else ImagerPixelSpacing) of ``ds``, checked positive and in range; ``None`` if absent."""
    spacing = floats(ds, "PixelSpacing", 2, path)
    if spacing is None:
        spacing = floats(ds, "ImagerPixelSpacing", 2, path)
    if spacing is None:
        return None
    if np.any(spacing <= 0):
        raise MedsynthError(f"{path}: PixelSpacing must be positive, got {spacing.tolist()}")
    check_spacing(spacing, str(path), "PixelSpacing")
    return spacing


@dataclass
class Plane:
    """One image plane of a series: a single-frame file, or one frame of a multi-frame file.

    Attributes:
        where: the file, and the frame for a multi-frame file (for messages).
        geometry: where the plane lies; ``None`` when the file has no patient geometry.
        thickness: slice spacing (mm) for a series of this one plane, if the header gives one.
        pixels: decodes the plane: rescaled float32 ``(columns, rows)``.
    """

    where: str
    geometry: SliceGeometry | None
    thickness: float | None
    pixels: Callable[[], np.ndarray]
    spacing: np.ndarray | None = None  # PixelSpacing of a plane without geometry, if given


def single_slice_thickness(ds: Dataset, path: str | Path) -> float | None:
    """SpacingBetweenSlices, else SliceThickness (mm, positive), else ``None``: the slice axis of a one-plane series."""
    for keyword in ("SpacingBetweenSlices", "SliceThickness"):
        values = floats(ds, keyword, 1, path)
        if values is not None and values[0] > 0:
            check_spacing(values, str(path), keyword)
            return float(values[0])
    return None


def rescaled(pixels: np.ndarray, ds: Dataset, where: str) -> np.ndarray:
    """``pixels`` (2D) as float32 ``(columns, rows)``, rescaled with ``ds``'s RescaleSlope/Intercept."""
    slope = floats(ds, "RescaleSlope", 1, where)
    intercept = floats(ds, "RescaleIntercept", 1, where)
    out = as_float32(pixels, where)
    if slope is not None and slope[0] != 1:
        out *= np.float32(slope[0])
    if intercept is not None and intercept[0] != 0:
        out += np.float32(intercept[0])
    return out.T
