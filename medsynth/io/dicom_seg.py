"""Label maps as DICOM Segmentation (SEG) objects: written with highdicom, read back as label maps.

A label map on the grid of a DICOM image series becomes one binary SEG file with one segment per
class (background excluded), named by the model's class names and referencing the series it
segments. Reading goes the other way: every segment's frames are placed with the SEG's own
functional-group geometry (like any enhanced multi-frame file) and combined into one label map
whose value is the segment number.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from medsynth.errors import MedsynthError, describe, display
from medsynth.io.dicom_frames import frame_planes, functional_item, number_of_frames
from medsynth.io.dicom_geometry import LPS_TO_RAS, Plane
from medsynth.io.dicom_read import SEGMENTATION_SOP_CLASS, read_dicom
from medsynth.io.files import atomic_path
from medsynth.io.image import MAX_VOXELS, MedicalImage


def write_dicom_seg(label: MedicalImage, series_folder: str | os.PathLike, target: str | os.PathLike,
                    labels: dict[str, int], uid_seed: str | None = None) -> Path:
    """Write ``label`` (on the grid of the DICOM series in ``series_folder``) as a binary SEG file.

    Args:
        label: integer label map ``(columns, rows, slices)``, the grid of the series' slices.
        series_folder: the image series it segments (one file per slice, as medsynth writes).
        target: the SEG file to write (atomically).
        labels: class name -> value; value 0 is background and gets no segment.
        uid_seed: derive the SEG's UIDs from this (same seed, same file).

    Raises:
        MedsynthError: the series and the label map do not match, or highdicom refuses the object.
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes

    import medsynth

    sources = sorted((pydicom.dcmread(p) for p in Path(series_folder).iterdir() if p.is_file()),
                     key=lambda ds: int(ds.InstanceNumber))
    array = label.array[..., None] if label.array.ndim == 2 else label.array
    frames = np.stack([array[:, :, k].T for k in range(array.shape[2])]).astype(np.uint16)
    if len(sources) != frames.shape[0] or (int(sources[0].Rows), int(sources[0].Columns)) != frames.shape[1:]:
        raise MedsynthError(f"{display(target)}: the label map {frames.shape} does not match the series in "
                            f"{display(series_folder)} ({len(sources)} x {sources[0].Rows} x {sources[0].Columns})")
    algorithm = hd.AlgorithmIdentificationSequence(name="medsynth", family=codes.cid7162.ArtificialIntelligence,
                                                   version=medsynth.__version__)
    segments = [hd.seg.SegmentDescription(segment_number=value, segment_label=name,
                                          segmented_property_category=codes.SCT.Tissue,
                                          segmented_property_type=codes.SCT.Tissue,
                                          algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
                                          algorithm_identification=algorithm)
                for name, value in sorted(labels.items(), key=lambda item: item[1]) if value > 0]

    def uid(part: str) -> str:
        return generate_uid(entropy_srcs=[uid_seed, part]) if uid_seed is not None else generate_uid()

    try:
        seg = hd.seg.Segmentation(
            source_images=sources, pixel_array=frames, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=segments, series_instance_uid=uid("seg-series"), series_number=9002,
            sop_instance_uid=uid("seg-instance"), instance_number=1, manufacturer="medsynth",
            manufacturer_model_name="medsynth", software_versions=medsynth.__version__,
            device_serial_number="none", omit_empty_frames=False, series_description="medsynth labels")
    except (ValueError, TypeError) as err:
        raise MedsynthError(f"{display(target)}: cannot make a DICOM SEG ({describe(err)})") from None
    try:
        with atomic_path(target) as tmp:
            seg.save_as(tmp)
    except OSError as err:
        raise MedsynthError(f"{display(target)}: cannot write ({err.strerror or err})") from None
    return Path(target)


def is_segmentation(ds: Dataset) -> bool:
    sop_class = str(ds.get("SOPClassUID", "") or ds.get("file_meta", Dataset()).get("MediaStorageSOPClassUID", ""))
    return sop_class == SEGMENTATION_SOP_CLASS


def referenced_series(ds: Dataset) -> set[str]:
    """The SeriesInstanceUIDs a SEG segments (ReferencedSeriesSequence)."""
    return {str(item.get("SeriesInstanceUID", "")) for item in ds.get("ReferencedSeriesSequence", [])} - {""}


def segmented_series(path: str | os.PathLike) -> set[str]:
    """The SeriesInstanceUIDs the SEG file ``path`` segments (its header only is read)."""
    try:
        return referenced_series(read_dicom(Path(path)))
    except Exception:  # an unreadable SEG pairs with nothing; reading it later says why
        return set()


def read_dicom_seg(path: str | os.PathLike) -> MedicalImage:
    """A binary or fractional SEG file as one label map: value = segment number, 0 elsewhere.

    Raises:
        MedsynthError: not a SEG, or its frames cannot be placed (see :func:`frame_planes`).
    """
    path = Path(path)
    try:
        header = read_dicom(path)  # bounded, up to the pixel data
        if not is_segmentation(header):
            raise MedsynthError(f"{display(path)}: not a DICOM SEG")
        voxels = int(header.Rows) * int(header.Columns) * number_of_frames(header)
        if voxels > MAX_VOXELS:
            raise MedsynthError(f"{display(path)}: {voxels} voxels, more than {MAX_VOXELS}")
        ds = read_dicom(path, (voxels * int(header.get("BitsAllocated", 8) or 8) + 7) // 8)
        pixels = ds.pixel_array
    except MedsynthError:
        raise
    except Exception as err:
        raise MedsynthError(f"{display(path)}: cannot read as DICOM SEG ({describe(err)})") from None
    pixels = pixels[None] if pixels.ndim == 2 else pixels
    per_frame = ds.get("PerFrameFunctionalGroupsSequence") or [None] * len(pixels)
    identified = [functional_item(ds, frame, "SegmentIdentificationSequence") for frame in per_frame]
    if any(item is None for item in identified):
        raise MedsynthError(f"{display(path)}: a frame without SegmentIdentificationSequence")
    segment_of = [int(item.ReferencedSegmentNumber) for item in identified]
    planes = frame_planes(path, ds, lambda: pixels)
    positions: dict[tuple[float, ...], tuple[Plane, np.ndarray]] = {}
    for plane, segment, frame in zip(planes, segment_of, pixels, strict=True):
        key = tuple(np.round(plane.geometry.position, 3))
        _, combined = positions.setdefault(key, (plane, np.zeros(frame.shape, np.uint16)))
        combined[frame > 0] = segment
    first = next(iter(positions.values()))[0].geometry
    ordered = sorted(positions.values(), key=lambda item: float(item[0].geometry.position @ first.normal))
    distances = np.array([float(plane.geometry.position @ first.normal) for plane, _ in ordered])
    if len(distances) > 2 and np.ptp(np.diff(distances)) > 1e-2 * abs(float(np.median(np.diff(distances)))) + 1e-3:
        raise MedsynthError(f"{display(path)}: its frames do not tile an evenly spaced grid (empty frames "
                            "omitted?); medsynth reads SEGs that keep every frame")
    array = np.stack([combined.T for _, combined in ordered], axis=-1)
    lps = np.eye(4)
    lps[:3, 0] = first.row_cosine * first.pixel_spacing[1]
    lps[:3, 1] = first.column_cosine * first.pixel_spacing[0]
    start, stop = ordered[0][0].geometry.position, ordered[-1][0].geometry.position
    lps[:3, 2] = (stop - start) / (len(ordered) - 1) if len(ordered) > 1 else \
        first.normal * (ordered[0][0].thickness or 1.0)
    lps[:3, 3] = start
    return MedicalImage(array, LPS_TO_RAS @ lps, {"source": str(path), "format": "dicom-seg",
                                                  "referenced_series": sorted(referenced_series(ds))})
