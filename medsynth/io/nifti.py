"""NIfTI-1/2 reading and writing with nibabel, geometry kept."""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path
from typing import BinaryIO

import nibabel as nib
import numpy as np

from medsynth.errors import MedsynthError, describe
from medsynth.io.files import atomic_path, check_regular_file, nifti_stem
from medsynth.io.image import (
    MAX_HEADER_BYTES,
    MAX_VOXELS,
    MedicalImage,
    as_float32,
    check_affine,
    check_voxels,
)


def read_nifti(path: str | os.PathLike, exact: bool = False) -> MedicalImage:
    """Read a 2D or 3D NIfTI file (``.nii`` or ``.nii.gz``) in RAS+ world space.

    Trailing singleton dimensions (e.g. ``(X, Y, Z, 1)``) are dropped. The affine is nibabel's
    choice of sform/qform. Scaling (``scl_slope``/``scl_inter``) is applied.

    Voxels come back as float32, except with ``exact`` (used for label maps): then integer data keeps
    its stored integer type (scaled data comes back as float64), so label values of any size survive.
    Without ``exact``, integer data beyond +-2**24 is refused: float32 would round it.

    Raises:
        MedsynthError: the file is not a regular file or cannot be parsed; its header or extensions
            exceed ``MAX_HEADER_BYTES``; it has fewer than 2 or more than 3 non-trivial dimensions,
            complex or RGB voxels, an unusable affine, too many voxels, NaN/Inf voxels, or (without
            ``exact``) integers float32 cannot hold.
    """
    path = Path(path)
    check_regular_file(path)
    _check_header_size(path)
    try:
        img = nib.load(path)
        shape = tuple(int(s) for s in img.shape)
        dtype = img.header.get_data_dtype()
    except Exception as err:  # nibabel raises many types for corrupt headers
        raise MedsynthError(f"{path}: cannot read NIfTI ({describe(err)})") from None
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise MedsynthError(f"{path}: not a NIfTI image")
    if dtype.fields is not None or dtype.kind not in "iuf":
        kind = "RGB/structured" if dtype.fields is not None else str(dtype)
        raise MedsynthError(f"{path}: voxel type {kind} is not supported; medsynth reads real-valued scalar images")
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) > 3:
        raise MedsynthError(f"{path}: image has {len(shape)} dimensions {shape}; medsynth expects 2D or 3D images "
                            "(split 4D series into 3D volumes first)")
    if len(shape) < 2:
        raise MedsynthError(f"{path}: image has {len(shape)} dimension(s) {shape}; medsynth expects 2D or 3D images")
    if any(s < 1 for s in shape) or int(np.prod(shape, dtype=np.int64)) > MAX_VOXELS:
        raise MedsynthError(f"{path}: declared shape {shape} is empty or larger than {MAX_VOXELS} voxels")
    _check_declared_size(img, path, shape)
    affine = np.asarray(img.affine, dtype=np.float64)
    check_affine(affine, str(path))
    try:
        proxy = img.dataobj
        unscaled_integers = dtype.kind in "iu" and proxy.slope == 1 and proxy.inter == 0
        if exact or unscaled_integers:  # the stored values themselves; checked before any rounding
            array = np.asarray(proxy).reshape(shape)
        else:
            array = np.asarray(proxy, dtype=np.float32).reshape(shape)
    except Exception as err:
        raise MedsynthError(f"{path}: cannot read NIfTI voxel data ({describe(err)})") from None
    if not exact:
        array = as_float32(array, str(path))
    check_voxels(array, str(path))
    meta = {"source": str(path), "name": nifti_stem(path), "format": "nifti",
            "modality": _modality_from_description(img.header)}
    return MedicalImage(array, affine, meta)


#: gzip cannot compress better than about 1032:1, so a .nii.gz holds at most this many bytes per stored byte
GZIP_MAX_RATIO = 1100
#: NIfTI-1 and NIfTI-2 headers by ``sizeof_hdr``: numpy type and byte offset of ``vox_offset``
_HEADER_LAYOUTS = {348: ("f4", 108), 540: ("i8", 168)}


def _open_stream(path: Path) -> BinaryIO:
    """The file's NIfTI bytes: gunzipped as they are read (never all at once) for ``.gz``."""
    name = path.name.lower()
    if name.endswith((".bz2", ".zst")):
        raise MedsynthError(f"{path}: compressed NIfTI other than .nii.gz is not supported")
    return gzip.open(path, "rb") if name.endswith(".gz") else open(path, "rb")


def _check_header_size(path: Path) -> None:
    """Refuse a ``vox_offset`` or header extensions larger than ``MAX_HEADER_BYTES`` before nibabel reads them.

    nibabel reads every extension up to ``vox_offset`` into memory (and, once an extension's size runs
    past ``vox_offset`` or is below 8, everything to the end of the file); in a ``.nii.gz`` a few MB
    can expand to GBs of extensions. The header and each extension's 8-byte head are read here from
    a bounded stream; every extension must end within ``vox_offset``. Files that are not NIfTI-1/2
    are left to nibabel to report.
    """
    try:
        with _open_stream(path) as stream:
            head = stream.read(544)
            layout = None
            for order in "<>":
                sizeof_hdr = int(np.frombuffer(head[:4], f"{order}i4")[0]) if len(head) >= 4 else 0
                if sizeof_hdr in _HEADER_LAYOUTS and len(head) >= sizeof_hdr + 4:
                    layout = order, sizeof_hdr, *_HEADER_LAYOUTS[sizeof_hdr]
                    break
            if layout is None:
                return
            order, sizeof_hdr, code, field = layout
            vox_offset = float(np.frombuffer(head, f"{order}{code}", count=1, offset=field)[0])
            first = sizeof_hdr + 4  # header, then 4 bytes of extension flags
            if not first <= vox_offset <= MAX_HEADER_BYTES:
                raise MedsynthError(f"{path}: NIfTI vox_offset {vox_offset:g} is outside {first}..{MAX_HEADER_BYTES} "
                                    "bytes (corrupt header, or header extensions too large to read)")
            position = first
            if head[sizeof_hdr] == 0:
                return
            stream.seek(position)
            while vox_offset - position >= 16:  # nibabel's loop over the extensions
                ext = stream.read(8)
                if len(ext) < 8:
                    return  # truncated: nibabel reports it
                esize = int(np.frombuffer(ext, f"{order}i4", count=1)[0])
                if esize < 8 or position + esize > vox_offset:  # nibabel would then read to the end of the file
                    raise MedsynthError(f"{path}: NIfTI header extension at byte {position} declares {esize} bytes, "
                                        f"which do not end within the header's {vox_offset:g} bytes (corrupt)")
                position += esize
                stream.seek(position)
    except MedsynthError:
        raise
    except (OSError, EOFError, ValueError, zlib.error) as err:
        raise MedsynthError(f"{path}: cannot read NIfTI ({describe(err)})") from None


def _check_declared_size(img: nib.Nifti1Image, path: Path, shape: tuple[int, ...]) -> None:
    """Refuse headers that declare more voxel bytes than the file can hold, before anything is allocated
    (a corrupt or hostile header must not make the reader reserve gigabytes)."""
    declared = int(np.prod(shape, dtype=np.int64)) * img.header.get_data_dtype().itemsize
    stored = path.stat().st_size
    compressed = path.suffix.lower() == ".gz"
    available = stored * GZIP_MAX_RATIO if compressed else stored - int(img.header.get_data_offset())
    if declared > available:
        raise MedsynthError(f"{path}: header declares {declared} bytes of voxel data, more than the "
                            f"{stored}-byte file can hold (truncated or corrupt)")


#: on-disk types written as they are; other integer arrays get the smallest of these that holds them
_KEPT_DTYPES = tuple(np.dtype(t) for t in (np.uint8, np.int8, np.uint16, np.int16, np.uint32, np.int32, np.float32))


def _disk_dtype(array: np.ndarray, where: str) -> np.dtype:
    """The NIfTI type ``write_nifti`` stores ``array`` as by default, refusing integers no NIfTI-1 type holds."""
    if array.dtype in _KEPT_DTYPES:
        return array.dtype
    if array.dtype.kind in "iub":
        low, high = (int(array.min()), int(array.max())) if array.size else (0, 0)
        for dtype in _KEPT_DTYPES[:-1]:
            if np.iinfo(dtype).min <= low and high <= np.iinfo(dtype).max:
                return dtype
        raise MedsynthError(f"{where}: integer values {low}..{high} fit no NIfTI integer type medsynth writes "
                            "(8 to 32 bits)")
    if array.dtype.kind != "f":
        raise MedsynthError(f"{where}: cannot write {array.dtype} voxels to NIfTI")
    return np.dtype(np.float32)


def _convert(array: np.ndarray, dtype: np.dtype, where: str) -> np.ndarray:
    """``array`` as ``dtype``, refusing any value that changes (floats to float32: rounding only)."""
    if array.dtype == dtype:
        return array
    if array.dtype.kind == "c":
        raise MedsynthError(f"{where}: cannot write complex voxels to NIfTI")
    with np.errstate(invalid="ignore", over="ignore"):
        converted = array.astype(dtype)
        if array.dtype.kind == "f" and dtype.kind == "f":
            changed = not np.array_equal(np.isfinite(converted), np.isfinite(array))
        else:
            changed = not np.array_equal(converted, array)
    if changed:
        low, high = np.nanmin(array), np.nanmax(array)
        raise MedsynthError(f"{where}: values {low}..{high} cannot be stored as {dtype} without changing them")
    return converted


def write_nifti(image: MedicalImage, path: str | os.PathLike, dtype: np.dtype | type | None = None) -> Path:
    """Write ``image`` to ``path`` atomically with its affine as both sform and qform.

    Args:
        image: the image to write.
        path: target file, ``.nii`` or ``.nii.gz``.
        dtype: on-disk data type. By default uint8, int8, uint16, int16, uint32, int32 and float32
            arrays keep their type, other integer arrays get the smallest of these that holds their
            values, and other floats become float32.

    Raises:
        MedsynthError: the values cannot be stored in ``dtype`` unchanged (floats may be rounded to
            float32, never made infinite), or the file cannot be written.
    """
    path = Path(path)
    array = np.asarray(image.array)
    target = np.dtype(dtype) if dtype is not None else _disk_dtype(array, str(path))
    array = _convert(array, target, str(path))
    nii = nib.Nifti1Image(array, image.affine, dtype=target)
    nii.header.set_sform(image.affine, code="scanner")
    nii.header.set_qform(image.affine, code="scanner")
    nii.header.set_xyzt_units(xyz="mm")
    modality = image.meta.get("modality")
    if modality:
        nii.header["descrip"] = f"medsynth modality={modality}"[:79].encode("ascii", "ignore")
    try:
        with atomic_path(path) as tmp:
            nib.save(nii, tmp)
    except OSError as err:
        raise MedsynthError(f"{path}: cannot write NIfTI ({err.strerror or err})") from None
    return path


def _modality_from_description(header: nib.Nifti1Header) -> str:
    """Recover the modality medsynth stores in ``descrip``; "unknown" for other files."""
    descrip = bytes(header["descrip"]).split(b"\x00")[0].decode("ascii", "ignore")
    for token in descrip.split():
        if token.startswith("modality="):
            return token.split("=", 1)[1] or "unknown"
    return "unknown"

