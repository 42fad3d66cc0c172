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
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_dataset, read_partial, read_preamble
from pydicom.tag import BaseTag
from pydicom.uid import DeflatedExplicitVRLittleEndian

from medsynth.errors import MedsynthError, describe
from medsynth.io.dicom_frames import frame_planes, is_multi_frame, number_of_frames
from medsynth.io.dicom_geometry import (
    LPS_TO_RAS,
    Plane,
    SliceGeometry,
    plane_spacing,
    rescaled,
    single_slice_thickness,
    slice_geometry,
)
from medsynth.io.files import check_regular_file, file_problem, safe_name
from medsynth.io.image import (
    MAX_HEADER_BYTES,
    MAX_VOXELS,
    MedicalImage,
    check_affine,
    check_voxels,
)

log = logging.getLogger("medsynth")

DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"
SEGMENTATION_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
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
    """What :func:`scan_dicom` found: the series, files that looked like DICOM but failed, and
    DICOM SEG files (label maps, read only where labels are expected)."""

    series: list[DicomSeries]
    unreadable: dict[Path, str]
    segmentations: list[Path] = field(default_factory=list)


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


def read_dicom(path: Path, pixel_bytes: int | None = None) -> FileDataset:
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
    segmentations: list[Path] = []
    for path in paths:
        if not looks_like_dicom(path):
            continue
        try:
            ds = read_dicom(path)
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
        if sop_class == SEGMENTATION_SOP_CLASS:  # label maps, not images: the caller decides
            segmentations.append(path)
            continue
        if not is_image or sop_class == DICOMDIR_SOP_CLASS:
            log.debug("skipping non-image DICOM %s", path)
            continue
        uid = str(ds.get("SeriesInstanceUID", "") or f"no-series-uid:{path.parent}")
        series = by_uid.setdefault(uid, DicomSeries(uid))
        series.files.append(path)
        series.headers.append(ds)
    return DicomScan(list(by_uid.values()), unreadable, segmentations)


def _check_same(name: str, wheres: list[str], keyword: str, values: list, describe_value: Callable = str) -> None:
    first = values[0]
    for where, value in zip(wheres, values, strict=True):
        if not _equal(value, first):
            raise MedsynthError(f"{where}: {keyword} {describe_value(value)} differs from the rest of series "
                                f"'{name}' ({describe_value(first)}); medsynth reads one grid per series")


def _equal(a, b) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return a is not None and b is not None and np.allclose(a, b, atol=1e-4)
    return a == b


def read_dicom_series(series: DicomSeries) -> MedicalImage:
    """Stack the planes of ``series`` into a 3D image ``(columns, rows, slices)`` in RAS+ space.

    A series is single-frame files (one plane each) or one enhanced multi-frame file (Enhanced
    MR/CT, Legacy Converted Enhanced, multi-frame MR: :mod:`medsynth.io.dicom_frames`). A series
    of one plane gets a slice axis of SpacingBetweenSlices (else SliceThickness, else 1 mm), as
    dcm2niix does. A plane whose pixel data cannot be decoded is dropped only if it was at either
    end of the stack (with a warning); a gap inside the stack is an error.

    Raises:
        MedsynthError: inconsistent grid (size, orientation, pixel spacing), planes sharing a
            position (several volumes in one series), uneven slice spacing, colour images,
            missing geometry in a multi-plane series, undecodable pixel data.
    """
    if not series.files:
        raise MedsynthError(f"series {series.uid}: no files")
    files, headers = series.files, series.headers
    for path, ds in zip(files, headers, strict=True):
        if int(ds.get("SamplesPerPixel", 1) or 1) != 1:
            raise MedsynthError(f"{path}: colour DICOM (SamplesPerPixel={ds.SamplesPerPixel}) is not supported")
    multi = [(p, ds) for p, ds in zip(files, headers, strict=True) if is_multi_frame(ds)]
    if multi and len(files) > 1:
        raise MedsynthError(f"{multi[0][0]}: a multi-frame file in series '{series.name}' with {len(files) - 1} "
                            "other file(s); medsynth reads one multi-frame file per series")
    _check_same(series.name, [str(p) for p in files], "image size (Rows, Columns)",
                [(int(ds.Rows), int(ds.Columns)) for ds in headers])
    planes = frame_planes(files[0], headers[0], _decoder(files[0], headers[0])) if multi else \
        [_file_plane(p, ds) for p, ds in zip(files, headers, strict=True)]
    rows, cols = int(headers[0].Rows), int(headers[0].Columns)
    if rows < 1 or cols < 1 or rows * cols * len(planes) > MAX_VOXELS:
        raise MedsynthError(f"{files[0]}: declared size {rows}x{cols}x{len(planes)} is empty or larger than "
                            f"{MAX_VOXELS} voxels")
    array, affine_lps, used = _stack(series.name, planes, stored_order=bool(multi))
    affine = LPS_TO_RAS @ affine_lps
    source = str(series.location)
    check_affine(affine, source)
    check_voxels(array, source)
    meta = {"source": source, "name": series.name, "format": "dicom", "modality": series.modality,
            "series_description": series.description, "series_number": series.number,
            "num_files": len(files) if not multi else 1}
    if multi:
        meta["num_frames"] = used
    return MedicalImage(array, affine, meta)


def _file_plane(path: Path, ds: Dataset) -> Plane:
    geometry = slice_geometry(ds, path)
    return Plane(str(path), geometry, single_slice_thickness(ds, path), lambda: _pixels(path, ds),
                 None if geometry is not None else plane_spacing(ds, path))


def _stack(name: str, planes: list[Plane], stored_order: bool) -> tuple[np.ndarray, np.ndarray, int]:
    """The planes sorted along their normal and stacked: voxels, LPS affine, planes used.

    Without patient geometry, one plane is placed axially; so are the frames of one file
    (``stored_order``), in their stored order. Files without geometry cannot be ordered.
    """
    geometries = [plane.geometry for plane in planes]
    if any(g is None for g in geometries):
        missing = next(p for p in planes if p.geometry is None)
        if len(planes) > 1 and not (stored_order and all(g is None for g in geometries)):
            raise MedsynthError(f"{missing.where}: ImageOrientationPatient/ImagePositionPatient missing in a "
                                f"{len(planes)}-plane series; cannot place its slices in space")
        log.warning("%s: no patient geometry (ImageOrientationPatient/ImagePositionPatient); using an axial "
                    "identity orientation%s", planes[0].where,
                    " and the stored frame order" if len(planes) > 1 else "")
        step = planes[0].thickness or 1.0
        planes = [Plane(p.where, SliceGeometry(np.array([1.0, 0, 0]), np.array([0, 1.0, 0]),
                                               p.spacing if p.spacing is not None else np.ones(2),
                                               np.array([0, 0, k * step])), p.thickness, p.pixels, p.spacing)
                  for k, p in enumerate(planes)]
        geometries = [plane.geometry for plane in planes]
    orientations = [np.concatenate([g.row_cosine, g.column_cosine]) for g in geometries]
    wheres = [plane.where for plane in planes]
    _check_same(name, wheres, "ImageOrientationPatient", orientations, lambda v: np.round(v, 5).tolist())
    _check_same(name, wheres, "PixelSpacing", [g.pixel_spacing for g in geometries], lambda v: np.round(v, 5).tolist())

    normal = geometries[0].normal
    distances = np.array([g.position @ normal for g in geometries])
    order = np.argsort(distances, kind="stable")
    planes = [planes[i] for i in order]
    distances = distances[order]
    if len(planes) > 1:
        gaps = np.diff(distances)
        if np.min(gaps) < 1e-3:
            i = int(np.argmin(gaps))
            shared = sum(abs(d - distances[i]) < 1e-3 for d in distances)
            raise MedsynthError(f"{planes[i + 1].where}: {shared} planes of series '{name}' share one position "
                                f"({distances[i]:.3f} mm along the normal): the series holds several volumes "
                                "(echoes, time points or a localizer); medsynth expects one 3D volume per series")
        _check_even(name, planes, distances)

    slices, kept, first_error = [], [], None
    for index, plane in enumerate(planes):
        try:
            slices.append(plane.pixels())
            kept.append(index)
        except MedsynthError as err:
            if len(planes) == 1:
                raise
            first_error = first_error or str(err)
            log.warning("%s", err)
    if not kept:
        raise MedsynthError(f"{planes[0].where}: no plane of series '{name}' has readable pixel data "
                            f"(first: {first_error})")
    if len(kept) < len(planes):
        inner = [i for i in range(kept[0], kept[-1] + 1) if i not in kept]
        if inner:
            raise MedsynthError(f"{planes[inner[0]].where}: unreadable plane inside series '{name}'; converting "
                                "without it would leave a gap in the volume")
        dropped = [planes[i].where for i in range(len(planes)) if i not in kept]
        log.warning("series '%s': dropped %d unreadable end plane(s) (%s); the rest is evenly spaced",
                    name, len(dropped), ", ".join(dropped))
        planes = [planes[i] for i in kept]

    array = np.stack(slices, axis=-1)  # (columns, rows, slices)
    first, last = planes[0].geometry, planes[-1].geometry
    affine_lps = np.eye(4)
    affine_lps[:3, 0] = first.row_cosine * first.pixel_spacing[1]
    affine_lps[:3, 1] = first.column_cosine * first.pixel_spacing[0]
    if len(planes) > 1:
        affine_lps[:3, 2] = (last.position - first.position) / (len(planes) - 1)
    else:
        affine_lps[:3, 2] = first.normal * (planes[0].thickness or 1.0)
    affine_lps[:3, 3] = first.position
    return array, affine_lps, len(planes)


def _check_even(name: str, planes: list[Plane], distances: np.ndarray) -> None:
    gaps = np.diff(distances)
    median = float(np.median(gaps))
    worst = int(np.argmax(np.abs(gaps - median)))
    if abs(gaps[worst] - median) > SPACING_TOLERANCE * median + 1e-3:
        raise MedsynthError(f"{planes[worst + 1].where}: uneven slice spacing in series '{name}' ({gaps[worst]:.3f} "
                            f"mm here, {median:.3f} mm typical); missing planes or a mixed series")


def _decoded(path: Path, header: Dataset, frames: int) -> np.ndarray:
    """The stored pixel values of ``path``: ``(rows, columns)``, or ``(frames, rows, columns)``.

    ``header`` is the file's scanned header: its Rows, Columns, BitsAllocated and frame count
    bound how much pixel data the file may hold (and inflate to) before anything is read.
    """
    bits = min(max(int(header.get("BitsAllocated", 16) or 16), 1), 64)
    pixel_bytes = int(header.Rows) * int(header.Columns) * ((bits + 7) // 8) * frames
    try:
        ds = read_dicom(path, pixel_bytes)
        if not any(tag in ds for tag in PIXEL_TAGS):
            raise ValueError("no pixel data")
        pixels = ds.pixel_array
    except MedsynthError:
        raise
    except Exception as err:
        raise MedsynthError(f"{path}: cannot decode pixel data{_codec_hint(header)} ({describe(err)})") from None
    expected = (int(ds.Rows), int(ds.Columns)) if frames == 1 else (frames, int(ds.Rows), int(ds.Columns))
    if pixels.shape != expected:
        raise MedsynthError(f"{path}: pixel data shape {pixels.shape} does not match "
                            f"{'Rows x Columns' if frames == 1 else 'NumberOfFrames x Rows x Columns'}")
    return pixels


def _codec_hint(header: Dataset) -> str:
    """`` in <transfer syntax>`` and what decodes it, for a compressed file."""
    syntax = getattr(getattr(header, "file_meta", None), "get", lambda _: None)("TransferSyntaxUID")
    # is_compressed raises on a UID that is not a transfer syntax (a corrupt header): ask that first
    if not getattr(syntax, "is_transfer_syntax", False) or not syntax.is_compressed:
        return ""
    return (f" in {syntax.name} ({syntax}); medsynth decodes compressed DICOM with python-gdcm, installed with "
            "it (pip install python-gdcm)")


def _pixels(path: Path, header: Dataset) -> np.ndarray:
    """Decoded, rescaled pixels of one single-frame file, transposed to ``(columns, rows)``, float32."""
    return rescaled(_decoded(path, header, 1), header, str(path))


def _decoder(path: Path, header: Dataset) -> Callable[[], np.ndarray]:
    """Decodes every frame of a multi-frame file once, on first use: ``(frames, rows, columns)``."""
    cache: list[np.ndarray] = []

    def decode() -> np.ndarray:
        if not cache:
            cache.append(_decoded(path, header, number_of_frames(header)))
        return cache[0]

    return decode
