"""DICOM series discovery and reading with pydicom.

Slices are grouped by SeriesInstanceUID, ordered by their position along the slice normal (not
by file name or InstanceNumber), rescaled with RescaleSlope/Intercept, and placed in RAS+ world
space with the affine built from ImageOrientationPatient, ImagePositionPatient and PixelSpacing
(the same construction as dcm2niix and nibabel's DICOM notes). MONAI's ``PydicomReader`` is not
used: it orders slices by InstanceNumber and takes slice spacing from the z coordinate only,
which is wrong for sagittal, coronal and oblique series.
"""

from __future__ import annotations

import logging
import os
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_dataset, read_partial, read_preamble
from pydicom.tag import BaseTag
from pydicom.uid import DeflatedExplicitVRLittleEndian

from medsynth.errors import MedsynthError, describe
from medsynth.io.files import check_regular_file, file_problem, safe_name
from medsynth.io.image import (
    MAX_HEADER_BYTES,
    MAX_VOXELS,
    MedicalImage,
    as_float32,
    check_affine,
    check_position,
    check_spacing,
    check_voxels,
)

log = logging.getLogger("medsynth")

#: DICOM (LPS+) to NIfTI (RAS+) world axes.
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"
#: Relative tolerance on slice spacing before a series is called unevenly spaced.
SPACING_TOLERANCE = 0.01


@dataclass
class DicomSeries:
    """The files of one series (one SeriesInstanceUID) with their headers, unsorted."""

    uid: str
    files: list[Path] = field(default_factory=list)
    headers: list[Dataset] = field(default_factory=list)

    @property
    def description(self) -> str:
        return str(self.headers[0].get("SeriesDescription", "") or "")

    @property
    def number(self) -> str:
        value = self.headers[0].get("SeriesNumber", "")
        return "" if value is None else str(value)

    @property
    def modality(self) -> str:
        return str(self.headers[0].get("Modality", "") or "unknown")

    @property
    def name(self) -> str:
        """Output name: series number and description (dcm2niix's ``%s_%d``), else modality; header-safe."""
        parts = [p for p in (self.number, self.description or self.modality) if p]
        return safe_name("_".join(parts), fallback="series")

    @property
    def location(self) -> Path:
        """The file of a one-file series, else the folder that holds all its files."""
        if len(self.files) == 1:
            return self.files[0]
        return Path(os.path.commonpath([str(f.parent) for f in self.files]))


@dataclass
class DicomScan:
    """What :func:`scan_dicom` found: the series, and files that looked like DICOM but failed."""

    series: list[DicomSeries]
    unreadable: dict[Path, str]


#: every header element medsynth reads, converted while scanning so that corrupt values are reported there
HEADER_KEYWORDS = ("Rows", "Columns", "NumberOfFrames", "SamplesPerPixel", "BitsAllocated", "PixelSpacing",
                   "ImagerPixelSpacing", "ImageOrientationPatient", "ImagePositionPatient", "SliceThickness",
                   "SpacingBetweenSlices", "RescaleSlope", "RescaleIntercept", "SeriesInstanceUID",
                   "SeriesDescription", "SeriesNumber", "Modality", "SOPClassUID")


#: (7FE0,0008) Float Pixel Data, (7FE0,0009) Double Float Pixel Data, (7FE0,0010) Pixel Data
PIXEL_TAGS = frozenset({0x7FE00008, 0x7FE00009, 0x7FE00010})
UNDEFINED_LENGTH = 0xFFFFFFFF


class _Refused(Exception):
    """A DICOM element or inflated data set beyond medsynth's limits; the message says which."""


#: pydicom's ``stop_when`` callback: (tag, VR, value length) -> stop before this element
StopWhen = Callable[[BaseTag, str | None, int], bool]


def _element_guard(pixel_bytes: int | None, stop_at_group: int | None = None) -> StopWhen:
    """A pydicom ``stop_when`` callback that refuses elements longer than their limit before they are read.

    Pixel data may hold ``pixel_bytes`` plus ``MAX_HEADER_BYTES``; any other element
    ``MAX_HEADER_BYTES``. With ``pixel_bytes=None`` parsing stops at the pixel data; with
    ``stop_at_group`` it stops at the first element of another group (the file meta group).
    """
    def stop_when(tag: BaseTag, vr: str | None, length: int) -> bool:
        if stop_at_group is not None and tag >> 16 != stop_at_group:
            return True
        if tag in PIXEL_TAGS:
            if pixel_bytes is None:
                return True
            limit = pixel_bytes + MAX_HEADER_BYTES
        else:
            limit = MAX_HEADER_BYTES
        if length != UNDEFINED_LENGTH and length > limit:
            raise _Refused(f"element ({tag >> 16:04X},{tag & 0xFFFF:04X}) declares {length} bytes, more than the "
                           f"{limit}-byte limit (corrupt or hostile file)")
        return False

    return stop_when


class _Inflated:
    """The data set of a deflated DICOM file, inflated in bounded chunks as the parser reads it.

    pydicom inflates a deflated file's whole data set in one ``zlib.decompress`` call, so a few MB
    can become GBs before any check. This stream inflates only as far as the parser reads (a header
    scan stops at the pixel data) and refuses to go past ``limit`` bytes. It keeps the last
    ``KEEP`` bytes for pydicom's short rewinds; seeking further back starts the inflation again.
    """

    CHUNK = 1 << 16
    KEEP = 1 << 20

    def __init__(self, fp: BinaryIO, limit: int, name: str) -> None:
        self._fp, self._start, self._limit, self.name = fp, fp.tell(), limit, name
        self.refused: str | None = None
        self._pos = 0
        self._restart()

    def _restart(self) -> None:
        self._fp.seek(self._start)
        self._inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        self._window = bytearray()  # inflated bytes from stream offset self._window_start on
        self._window_start = 0
        self._done = False

    def _fill(self, end: int) -> None:
        """Inflate until the window reaches ``end`` or the data ends; refuse data beyond the limit."""
        end = min(end, self._limit + 1)  # one byte past the limit tells whether there is more
        while self._window_start + len(self._window) < end and not self._done:
            data = self._inflater.unconsumed_tail or self._fp.read(self.CHUNK)
            out = self._inflater.decompress(data, self.CHUNK)
            self._window += out
            self._done = self._inflater.eof or not (out or data)
            drop = self._pos - self.KEEP - self._window_start
            if drop > 0:
                del self._window[:drop]
                self._window_start += drop
        if self._window_start + len(self._window) > self._limit:
            self.refused = (f"deflated data set inflates to more than {self._limit} bytes, beyond what its image can "
                            "need (corrupt or hostile file)")
            raise _Refused(self.refused)

    def read(self, size: int | None = -1) -> bytes:
        if self._pos < self._window_start:
            self._restart()
        end = self._limit + 1 if size is None or size < 0 else self._pos + size
        self._fill(end)
        start = self._pos - self._window_start
        data = bytes(self._window[start:end - self._window_start]) if start < len(self._window) else b""
        self._pos += len(data)
        return data

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        if whence == os.SEEK_END:
            self._fill(self._limit + 1)
            base = self._window_start + len(self._window)
        else:
            base = self._pos if whence == os.SEEK_CUR else 0
        if base + offset < 0:
            raise ValueError("negative seek position")
        self._pos = base + offset
        return self._pos

    def tell(self) -> int:
        return self._pos


class _Capped:
    """A file whose reads never ask for more than it holds: pydicom passes corrupt element lengths
    straight to ``read``, and Python allocates the size asked for before reading."""

    def __init__(self, fp: BinaryIO) -> None:
        self._fp, self.name, self._size = fp, fp.name, os.fstat(fp.fileno()).st_size

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            return self._fp.read()
        return self._fp.read(max(0, min(size, self._size - self._fp.tell())))

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self._fp.seek(offset, whence)

    def tell(self) -> int:
        return self._fp.tell()


def _read_dicom(path: Path, pixel_bytes: int | None = None) -> FileDataset:
    """Parse ``path`` with pydicom within bounds: up to its pixel data, or whole with ``pixel_bytes``.

    Elements longer than ``MAX_HEADER_BYTES`` (pixel data: ``pixel_bytes + MAX_HEADER_BYTES``) are
    refused before they are read, and no read asks for more than the file holds. A deflated file
    (transfer syntax 1.2.840.10008.1.2.1.99) is inflated as it is parsed, never past
    ``MAX_HEADER_BYTES`` plus ``pixel_bytes``. Only regular files are opened.

    Raises:
        MedsynthError: ``path`` is not a regular file.
        _Refused: an element or the inflated data beyond its limit.
        Exception: whatever pydicom raises for a file it cannot parse.
    """
    check_regular_file(path)
    force = path.suffix.lower() == ".dcm"
    with open(path, "rb") as fp:
        try:
            preamble = read_preamble(fp, False)
            meta = read_dataset(_Capped(fp), False, True, stop_when=_element_guard(None, stop_at_group=0x0002))
        except InvalidDicomError:  # no DICM prefix: pydicom guesses the encoding (with force)
            preamble, meta = None, Dataset()
        if meta.get("TransferSyntaxUID") != DeflatedExplicitVRLittleEndian:
            fp.seek(0)
            return read_partial(_Capped(fp), stop_when=_element_guard(pixel_bytes), force=force)
        stream = _Inflated(fp, MAX_HEADER_BYTES + (pixel_bytes or 0), str(path))
        try:
            dataset = read_dataset(stream, False, True, stop_when=_element_guard(pixel_bytes))
        except Exception:
            if stream.refused:  # pydicom rewraps some errors inside sequences
                raise _Refused(stream.refused) from None
            raise
    ds = FileDataset(str(path), dataset, preamble, FileMetaDataset(meta), False, True)
    ds.set_original_encoding(False, True, dataset.original_character_set)
    return ds


def looks_like_dicom(path: Path) -> bool:
    """True for files with the ``DICM`` magic at byte 128, or named ``*.dcm``; never opens a non-regular file."""
    if path.suffix.lower() == ".dcm":
        return True
    if file_problem(path):
        return False
    try:
        with open(path, "rb") as handle:
            head = handle.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def scan_dicom(paths: list[Path]) -> DicomScan:
    """Read the headers of ``paths`` and group image files into series.

    Files that are not DICOM are ignored; DICOM files that are not images (DICOMDIR, structured
    reports, RT plans) are skipped; files that look like DICOM but cannot be parsed are returned
    in ``unreadable`` with the reason.
    """
    by_uid: dict[str, DicomSeries] = {}
    unreadable: dict[Path, str] = {}
    for path in paths:
        if not looks_like_dicom(path):
            continue
        try:
            ds = _read_dicom(path)
            for keyword in HEADER_KEYWORDS:  # pydicom converts values on first access: a corrupt one fails here
                ds.get(keyword)
            is_image = "Rows" in ds and "Columns" in ds
            if is_image:
                int(ds.Rows), int(ds.Columns), int(ds.get("NumberOfFrames", 1) or 1)
                int(ds.get("SamplesPerPixel", 1) or 1), int(ds.get("BitsAllocated", 16) or 16)
            sop_class = str(ds.get("SOPClassUID", "") or ds.file_meta.get("MediaStorageSOPClassUID", ""))
        except Exception as err:  # pydicom raises many types on corrupt headers
            unreadable[path] = describe(err)
            continue
        if not is_image or sop_class == DICOMDIR_SOP_CLASS:
            log.debug("skipping non-image DICOM %s", path)
            continue
        uid = str(ds.get("SeriesInstanceUID", "") or f"no-series-uid:{path.parent}")
        series = by_uid.setdefault(uid, DicomSeries(uid))
        series.files.append(path)
        series.headers.append(ds)
    return DicomScan(list(by_uid.values()), unreadable)


def _floats(ds: Dataset, keyword: str, count: int, where: Path) -> np.ndarray | None:
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
class _SliceGeometry:
    row_cosine: np.ndarray  # direction of increasing column index (LPS)
    column_cosine: np.ndarray  # direction of increasing row index (LPS)
    pixel_spacing: np.ndarray  # (between rows, between columns) in mm
    position: np.ndarray  # ImagePositionPatient (LPS, mm)

    @property
    def normal(self) -> np.ndarray:
        return np.cross(self.row_cosine, self.column_cosine)


def _slice_geometry(ds: Dataset, path: Path) -> _SliceGeometry | None:
    orientation = _floats(ds, "ImageOrientationPatient", 6, path)
    position = _floats(ds, "ImagePositionPatient", 3, path)
    spacing = _floats(ds, "PixelSpacing", 2, path)
    if spacing is None:
        spacing = _floats(ds, "ImagerPixelSpacing", 2, path)
    if orientation is None or position is None:
        return None
    if spacing is None:
        raise MedsynthError(f"{path}: PixelSpacing is missing")
    if np.any(spacing <= 0):
        raise MedsynthError(f"{path}: PixelSpacing must be positive, got {spacing.tolist()}")
    check_spacing(spacing, str(path), "PixelSpacing")
    check_position(position, str(path), "ImagePositionPatient")
    row, col = orientation[:3], orientation[3:]
    if abs(np.linalg.norm(row) - 1) > 1e-2 or abs(np.linalg.norm(col) - 1) > 1e-2 or abs(row @ col) > 1e-2:
        raise MedsynthError(f"{path}: ImageOrientationPatient is not two orthogonal unit vectors "
                            f"({orientation.tolist()})")
    row, col = row / np.linalg.norm(row), col / np.linalg.norm(col)
    return _SliceGeometry(row, col, spacing, position)


def _check_same(series: DicomSeries, keyword: str, values: list, describe_value: Callable = str) -> None:
    first = values[0]
    for path, value in zip(series.files, values, strict=True):
        if not _equal(value, first):
            raise MedsynthError(f"{path}: {keyword} {describe_value(value)} differs from the rest of series "
                                f"'{series.name}' ({describe_value(first)}); medsynth reads one grid per series")


def _equal(a, b) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return a is not None and b is not None and np.allclose(a, b, atol=1e-4)
    return a == b


def read_dicom_series(series: DicomSeries) -> MedicalImage:
    """Stack the slices of ``series`` into a 3D image ``(columns, rows, slices)`` in RAS+ space.

    A series of one slice gets a slice axis of SpacingBetweenSlices (else SliceThickness, else
    1 mm), as dcm2niix does. A slice whose pixel data cannot be decoded is dropped only if it
    was at either end of the stack (with a warning); a gap inside the stack is an error.

    Raises:
        MedsynthError: inconsistent grid (size, orientation, pixel spacing), slices sharing a
            position (several volumes in one series), uneven slice spacing, multi-frame or
            colour images, missing geometry in a multi-slice series, undecodable pixel data.
    """
    if not series.files:
        raise MedsynthError(f"series {series.uid}: no files")
    files, headers = series.files, series.headers
    for path, ds in zip(files, headers, strict=True):
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        if frames > 1:
            raise MedsynthError(f"{path}: multi-frame (enhanced) DICOM with {frames} frames is not supported; "
                                "convert it to single-frame files (e.g. with dcm2niix) first")
        if int(ds.get("SamplesPerPixel", 1) or 1) != 1:
            raise MedsynthError(f"{path}: colour DICOM (SamplesPerPixel={ds.SamplesPerPixel}) is not supported")
    _check_same(series, "image size (Rows, Columns)", [(int(ds.Rows), int(ds.Columns)) for ds in headers])
    rows, cols = int(headers[0].Rows), int(headers[0].Columns)
    if rows < 1 or cols < 1 or rows * cols * len(files) > MAX_VOXELS:
        raise MedsynthError(f"{files[0]}: declared size {rows}x{cols}x{len(files)} is empty or larger than "
                            f"{MAX_VOXELS} voxels")

    geometries = [_slice_geometry(ds, path) for path, ds in zip(files, headers, strict=True)]
    if any(g is None for g in geometries):
        if len(files) > 1:
            missing = next(p for p, g in zip(files, geometries, strict=True) if g is None)
            raise MedsynthError(f"{missing}: ImageOrientationPatient/ImagePositionPatient missing in a "
                                f"{len(files)}-file series; cannot place its slices in space")
        log.warning("%s: no patient geometry (ImageOrientationPatient/ImagePositionPatient); using an "
                    "axial identity orientation", files[0])
        spacing = _floats(headers[0], "PixelSpacing", 2, files[0])
        if spacing is None:
            spacing = _floats(headers[0], "ImagerPixelSpacing", 2, files[0])
        spacing = np.ones(2) if spacing is None else spacing
        check_spacing(spacing, str(files[0]), "PixelSpacing")
        geometries = [_SliceGeometry(np.array([1.0, 0, 0]), np.array([0, 1.0, 0]), spacing, np.zeros(3))]
    orientations = [np.concatenate([g.row_cosine, g.column_cosine]) for g in geometries]
    _check_same(series, "ImageOrientationPatient", orientations, lambda v: np.round(v, 5).tolist())
    _check_same(series, "PixelSpacing", [g.pixel_spacing for g in geometries], lambda v: np.round(v, 5).tolist())

    normal = geometries[0].normal
    distances = np.array([g.position @ normal for g in geometries])
    order = np.argsort(distances, kind="stable")
    files = [files[i] for i in order]
    headers = [headers[i] for i in order]
    geometries = [geometries[i] for i in order]
    distances = distances[order]

    if len(files) > 1:
        gaps = np.diff(distances)
        if np.min(gaps) < 1e-3:
            i = int(np.argmin(gaps))
            shared = sum(abs(d - distances[i]) < 1e-3 for d in distances)
            raise MedsynthError(f"{files[i + 1]}: {shared} slices of series '{series.name}' share one position "
                                f"({distances[i]:.3f} mm along the normal): the series holds several volumes "
                                "(echoes, time points or a localizer); medsynth expects one 3D volume per series")
        _check_even(series.name, files, distances)

    slices, kept = [], []
    for index, (path, ds) in enumerate(zip(files, headers, strict=True)):
        try:
            slices.append(_pixels(path, ds))
            kept.append(index)
        except MedsynthError as err:
            if len(files) == 1:
                raise
            log.warning("%s", err)
    if not kept:
        raise MedsynthError(f"{files[0]}: no slice of series '{series.name}' has readable pixel data")
    if len(kept) < len(files):
        dropped = [files[i] for i in range(len(files)) if i not in kept]
        inner = [i for i in range(kept[0], kept[-1] + 1) if i not in kept]
        if inner:
            raise MedsynthError(f"{files[inner[0]]}: unreadable slice inside series '{series.name}'; converting "
                                "without it would leave a gap in the volume")
        log.warning("series '%s': dropped %d unreadable end slice(s) (%s); the rest is evenly spaced",
                    series.name, len(dropped), ", ".join(str(p) for p in dropped))
        files = [files[i] for i in kept]
        geometries = [geometries[i] for i in kept]
        headers = [headers[i] for i in kept]

    array = np.stack(slices, axis=-1)  # (columns, rows, slices)
    first = geometries[0]
    affine_lps = np.eye(4)
    affine_lps[:3, 0] = first.row_cosine * first.pixel_spacing[1]
    affine_lps[:3, 1] = first.column_cosine * first.pixel_spacing[0]
    if len(files) > 1:
        affine_lps[:3, 2] = (geometries[-1].position - first.position) / (len(files) - 1)
    else:
        affine_lps[:3, 2] = first.normal * _single_slice_thickness(headers[0], files[0])
    affine_lps[:3, 3] = first.position
    affine = LPS_TO_RAS @ affine_lps
    source = str(series.location)
    check_affine(affine, source)
    check_voxels(array, source)
    meta = {"source": source, "name": series.name, "format": "dicom", "modality": series.modality,
            "series_description": series.description, "series_number": series.number,
            "num_files": len(files)}
    return MedicalImage(array, affine, meta)


def _check_even(name: str, files: list[Path], distances: np.ndarray) -> None:
    gaps = np.diff(distances)
    median = float(np.median(gaps))
    worst = int(np.argmax(np.abs(gaps - median)))
    if abs(gaps[worst] - median) > SPACING_TOLERANCE * median + 1e-3:
        raise MedsynthError(f"{files[worst + 1]}: uneven slice spacing in series '{name}' ({gaps[worst]:.3f} mm "
                            f"here, {median:.3f} mm typical); missing slices or a mixed series")


def _single_slice_thickness(ds: Dataset, path: Path) -> float:
    for keyword in ("SpacingBetweenSlices", "SliceThickness"):
        values = _floats(ds, keyword, 1, path)
        if values is not None and values[0] > 0:
            check_spacing(values, str(path), keyword)
            return float(values[0])
    return 1.0


def _pixels(path: Path, header: Dataset) -> np.ndarray:
    """Decoded, rescaled pixels of one file, transposed to ``(columns, rows)``, float32.

    ``header`` is the file's scanned header: its Rows, Columns and BitsAllocated bound how much
    pixel data the file may hold (and inflate to) before anything is read.
    """
    bits = min(max(int(header.get("BitsAllocated", 16) or 16), 1), 64)
    pixel_bytes = int(header.Rows) * int(header.Columns) * ((bits + 7) // 8)
    try:
        ds = _read_dicom(path, pixel_bytes)
        if not any(tag in ds for tag in PIXEL_TAGS):
            raise ValueError("no pixel data")
        pixels = ds.pixel_array
    except MedsynthError:
        raise
    except Exception as err:
        raise MedsynthError(f"{path}: cannot decode pixel data ({describe(err)})") from None
    if pixels.ndim != 2 or pixels.shape != (int(ds.Rows), int(ds.Columns)):
        raise MedsynthError(f"{path}: pixel data shape {pixels.shape} does not match Rows x Columns")
    slope = _floats(ds, "RescaleSlope", 1, path)
    intercept = _floats(ds, "RescaleIntercept", 1, path)
    out = as_float32(pixels, str(path))
    if slope is not None and slope[0] != 1:
        out *= np.float32(slope[0])
    if intercept is not None and intercept[0] != 0:
        out += np.float32(intercept[0])
    return out.T
