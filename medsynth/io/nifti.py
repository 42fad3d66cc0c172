"""NIfTI-1/2 reading and writing with nibabel, geometry kept."""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np

from medsynth.errors import MedsynthError, describe
from medsynth.io.files import atomic_path, nifti_stem
from medsynth.io.image import MAX_VOXELS, MedicalImage, check_affine, check_voxels


def read_nifti(path: str | os.PathLike) -> MedicalImage:
    """Read a 2D or 3D NIfTI file (``.nii`` or ``.nii.gz``) as float32 voxels in RAS+ world space.

    Trailing singleton dimensions (e.g. ``(X, Y, Z, 1)``) are dropped. The affine is nibabel's
    choice of sform/qform. Scaling (``scl_slope``/``scl_inter``) is applied.

    Raises:
        MedsynthError: the file cannot be parsed, has 1 or more than 3 non-trivial dimensions,
            an unusable affine, too many voxels, or NaN/Inf voxels.
    """
    path = Path(path)
    try:
        img = nib.load(path)
        shape = tuple(int(s) for s in img.shape)
    except Exception as err:  # nibabel raises many types for corrupt headers
        raise MedsynthError(f"{path}: cannot read NIfTI ({describe(err)})") from None
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise MedsynthError(f"{path}: not a NIfTI image")
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
        array = np.asarray(img.dataobj, dtype=np.float32).reshape(shape)
    except Exception as err:
        raise MedsynthError(f"{path}: cannot read NIfTI voxel data ({describe(err)})") from None
    check_voxels(array, str(path))
    meta = {"source": str(path), "name": nifti_stem(path), "format": "nifti",
            "modality": _modality_from_description(img.header)}
    return MedicalImage(array, affine, meta)


#: gzip cannot compress better than about 1032:1, so a .nii.gz holds at most this many bytes per stored byte
GZIP_MAX_RATIO = 1100


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


def write_nifti(image: MedicalImage, path: str | os.PathLike, dtype: np.dtype | type | None = None) -> Path:
    """Write ``image`` to ``path`` atomically with its affine as both sform and qform.

    Args:
        image: the image to write.
        path: target file, ``.nii`` or ``.nii.gz``.
        dtype: on-disk data type; default float32 (labels: pass ``np.uint8``/``np.int16``).
    """
    path = Path(path)
    array = np.asarray(image.array)
    if dtype is not None:
        array = array.astype(dtype)
    elif array.dtype not in (np.uint8, np.int16, np.int32, np.float32):
        array = array.astype(np.float32)
    nii = nib.Nifti1Image(array, image.affine)
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

