"""Enhanced (multi-frame) DICOM: the frames of one file as image planes.

Enhanced MR/CT Image Storage and their Legacy Converted variants keep each frame's geometry and
rescaling in functional groups (DICOM PS3.3 C.7.6.16): Plane Position, Plane Orientation, Pixel
Measures and Pixel Value Transformation, per frame or shared by all frames, with the top-level
attributes as a fallback. Older multi-frame images (MR, NM) with one top-level position get
their frames stacked along the normal at SpacingBetweenSlices. A file whose frames form several
volumes (stacks, temporal positions, echoes, b-values) is refused with the count, as is a
series of one volume per series; dcm2niix writes such files as one NIfTI per volume.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset

from medsynth.errors import MedsynthError
from medsynth.io.dicom_geometry import (
    Plane,
    SliceGeometry,
    plane_spacing,
    rescaled,
    single_slice_thickness,
    slice_geometry,
)
from medsynth.io.image import MAX_VOXELS

#: the functional groups that hold a frame's geometry and rescaling, and the keywords read from them
FRAME_GROUPS = ("PlanePositionSequence", "PlaneOrientationSequence", "PixelMeasuresSequence",
                "PixelValueTransformationSequence")
FRAME_KEYWORDS = ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "SliceThickness",
                  "SpacingBetweenSlices", "RescaleSlope", "RescaleIntercept")


def number_of_frames(ds: Dataset) -> int:
    return int(ds.get("NumberOfFrames", 1) or 1)


def is_multi_frame(ds: Dataset) -> bool:
    """More than one frame, or an enhanced image (functional groups) of any frame count."""
    return number_of_frames(ds) > 1 or "PerFrameFunctionalGroupsSequence" in ds


def _first(group: Dataset | None, keyword: str) -> Dataset | None:
    sequence = group.get(keyword) if group is not None else None
    return sequence[0] if sequence else None


def functional_item(ds: Dataset, frame: Dataset | None, keyword: str) -> Dataset | None:
    """The first item of ``keyword`` in the frame's per-frame functional groups, else in the shared ones."""
    shared = ds.get("SharedFunctionalGroupsSequence")
    return _first(frame, keyword) or _first(shared[0] if shared else None, keyword)


def _frame_header(ds: Dataset, frame: Dataset | None) -> Dataset:
    """The frame's geometry and rescaling keywords in one data set: functional groups over top level."""
    header = Dataset()
    for keyword in FRAME_KEYWORDS:
        if keyword in ds:
            header[ds.data_element(keyword).tag] = ds.data_element(keyword)
    for sequence in FRAME_GROUPS:
        item = functional_item(ds, frame, sequence)
        for keyword in FRAME_KEYWORDS if item is not None else ():
            if keyword in item:
                header[item.data_element(keyword).tag] = item.data_element(keyword)
    return header


def _volume(ds: Dataset, frame: Dataset | None) -> tuple[str, ...]:
    """What tells the volumes of a file apart: stack, temporal position, echo time, b-value."""
    content = functional_item(ds, frame, "FrameContentSequence")
    echo = functional_item(ds, frame, "MREchoSequence")
    diffusion = functional_item(ds, frame, "MRDiffusionSequence")
    values = (content.get("StackID") if content else None, content.get("TemporalPositionIndex") if content else None,
              echo.get("EffectiveEchoTime") if echo else None, diffusion.get("DiffusionBValue") if diffusion else None)
    return tuple("" if v is None else str(v) for v in values)


def _check_one_volume(path: Path, ds: Dataset, frames: list[Dataset | None]) -> None:
    keys = [_volume(ds, frame) for frame in frames]
    distinct = sorted(set(keys))
    if len(distinct) > 1:
        names = ("stacks", "temporal positions", "echo times", "b-values")
        varying = [name for k, name in enumerate(names) if len({key[k] for key in keys}) > 1]
        raise MedsynthError(f"{path}: its {len(frames)} frames form {len(distinct)} volumes ({', '.join(varying)}); "
                            "medsynth reads one 3D volume per series: split it first (dcm2niix writes one NIfTI "
                            "per volume)")


def frame_planes(path: Path, ds: Dataset, decode: Callable[[], np.ndarray]) -> list[Plane]:
    """The frames of the multi-frame file ``path`` (scanned header ``ds``) as planes, in stored order.

    Args:
        decode: returns every frame's stored values, ``(frames, rows, columns)`` (decoded once).

    Raises:
        MedsynthError: per-frame groups that do not match NumberOfFrames, several volumes in the
            file, or invalid geometry in a frame.
    """
    count = number_of_frames(ds)
    if count < 1 or count * int(ds.Rows) * int(ds.Columns) > MAX_VOXELS:
        raise MedsynthError(f"{path}: NumberOfFrames {count} of {ds.Rows}x{ds.Columns} is empty or larger than "
                            f"{MAX_VOXELS} voxels")
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    frames: list[Dataset | None] = list(per_frame) if per_frame else [None] * count
    if len(frames) != count:
        raise MedsynthError(f"{path}: {len(frames)} per-frame functional groups for NumberOfFrames {count}")
    _check_one_volume(path, ds, frames)
    planes = []
    for k, frame in enumerate(frames):
        header, where = _frame_header(ds, frame), f"{path} (frame {k + 1})"
        geometry = slice_geometry(header, where)
        planes.append(Plane(where, geometry, single_slice_thickness(header, where),
                            partial(_frame_pixels, decode, k, header, where),
                            None if geometry is not None else plane_spacing(header, where)))
    shared_position = not any(functional_item(ds, f, "PlanePositionSequence") for f in frames)
    if count > 1 and shared_position and planes[0].geometry is not None:  # older multi-frame: one position
        planes = _stacked_along_normal(planes, path)
    return planes


def _stacked_along_normal(planes: list[Plane], path: Path) -> list[Plane]:
    """Frames sharing the top-level position, placed one SpacingBetweenSlices apart along the normal."""
    step = planes[0].thickness
    if step is None:
        raise MedsynthError(f"{path}: {len(planes)} frames share one ImagePositionPatient and no "
                            "SpacingBetweenSlices or SliceThickness says how far apart they lie")
    first = planes[0].geometry
    return [Plane(p.where, SliceGeometry(first.row_cosine, first.column_cosine, first.pixel_spacing,
                                         first.position + k * step * first.normal), p.thickness, p.pixels)
            for k, p in enumerate(planes)]


def _frame_pixels(decode: Callable[[], np.ndarray], index: int, header: Dataset, where: str) -> np.ndarray:
    return rescaled(decode()[index], header, where)
