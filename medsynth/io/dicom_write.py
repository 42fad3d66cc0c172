"""Write a 3D image as a DICOM series (one MR or CT Image Storage file per slice).

By default the output is built from scratch, never copied from a source file, so no
patient-identifying attribute can leak into it: patient and study attributes are present but
empty (type 2), all UIDs are new, ImageType is ``DERIVED\\SECONDARY`` and PatientIdentityRemoved
is ``YES``. With ``derived_from`` (restoration's ``--keep-study``) it is instead a derived series
in the source's study: the source's patient and study attributes (``KEPT_FROM_SOURCE``) and
frame of reference are copied, and the series references the source series.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pydicom.valuerep import format_number_as_ds

from medsynth.errors import MedsynthError
from medsynth.io.dicom_geometry import LPS_TO_RAS
from medsynth.io.dicom_read import DicomSeries
from medsynth.io.files import atomic_path
from medsynth.io.image import MedicalImage

SOP_CLASSES = {"MR": "1.2.840.10008.5.1.4.1.1.4", "CT": "1.2.840.10008.5.1.4.1.1.2"}
INT16 = np.iinfo(np.int16)


def _ds(value: float) -> str:
    """A decimal string of at most 16 characters, as precise as DICOM's DS allows."""
    return format_number_as_ds(float(value))


def _rescale(array: np.ndarray) -> tuple[float, float]:
    """Slope and intercept that map ``array`` into int16 losslessly if it is integer-valued."""
    low, high = float(array.min()), float(array.max())
    if np.all(np.round(array) == array) and low >= INT16.min and high <= INT16.max:
        return 1.0, 0.0
    if high == low:
        return 1.0, low
    slope = (high - low) / (INT16.max - INT16.min - 2)
    intercept = (high + low) / 2
    # DS holds 16 characters: use the rounded values so reading back applies exactly these.
    return float(_ds(slope)), float(_ds(intercept))


def write_dicom_series(
    image: MedicalImage,
    folder: str | os.PathLike,
    *,
    series_description: str = "medsynth synthetic",
    modality: str | None = None,
    series_number: int = 9001,
    uid_seed: str | None = None,
    derived_from: DicomSeries | None = None,
    derivation: str = "",
) -> Path:
    """Write ``image`` as a DICOM series into ``folder`` (created atomically, replaced if present).

    Geometry comes from ``image.affine`` (RAS+, converted to DICOM LPS+): one file per slice
    along the third array axis, ``ImagePositionPatient`` of slice ``k`` = origin + ``k`` times
    the third affine column. Voxels are stored as int16 with one RescaleSlope/Intercept for the
    whole series (lossless for integer data such as CT HU, else within ``slope / 2``).

    Args:
        image: 2D or 3D image (2D is written as one slice).
        folder: output folder for the series files (``IM00001.dcm`` ...).
        series_description: SeriesDescription; synthetic data should say so.
        modality: ``"MR"`` or ``"CT"`` (default: ``image.meta["modality"]`` if CT, else MR).
        series_number: SeriesNumber.
        uid_seed: if given, UIDs are derived from it deterministically (same seed, same files);
            otherwise they are random.
        derived_from: the source series of a restored image: the output joins its study (patient
            and study attributes, StudyInstanceUID and FrameOfReferenceUID kept, a new
            SeriesInstanceUID) and lists it in ReferencedSeriesSequence. Identifying data is then
            copied on purpose: the output is as private as the source.
        derivation: DerivationDescription of a derived series (what was done to the source).

    Raises:
        MedsynthError: the affine has in-plane shear (not representable in DICOM) or the
            folder cannot be written.
    """
    array = image.array[..., None] if image.array.ndim == 2 else image.array
    modality = (modality or ("CT" if image.meta.get("modality") == "CT" else "MR")).upper()
    if modality not in SOP_CLASSES:
        raise MedsynthError(f"{folder}: cannot write modality {modality!r} as DICOM (MR or CT only)")
    lps = LPS_TO_RAS @ image.affine
    col_step, row_step, slice_step = lps[:3, 0], lps[:3, 1], lps[:3, 2]
    dx, dy = np.linalg.norm(col_step), np.linalg.norm(row_step)
    row_cosine, column_cosine = col_step / dx, row_step / dy
    if abs(row_cosine @ column_cosine) > 1e-4:
        raise MedsynthError(f"{folder}: the image affine has in-plane shear; DICOM cannot represent it")
    normal = np.cross(row_cosine, column_cosine)
    thickness = float(np.linalg.norm(slice_step))

    def uid(*parts: object) -> str:
        return generate_uid(entropy_srcs=[uid_seed, *map(str, parts)]) if uid_seed is not None else generate_uid()

    study_uid, series_uid, frame_uid = uid("study"), uid("series"), uid("frame-of-reference")
    kept = _kept_from(derived_from) if derived_from is not None else {}
    study_uid = kept.get("StudyInstanceUID", study_uid)
    frame_uid = kept.get("FrameOfReferenceUID", frame_uid)
    slope, intercept = _rescale(array)
    stored = np.clip(np.round((array.astype(np.float64) - intercept) / slope), INT16.min, INT16.max).astype(np.int16)
    low, high = np.percentile(array, [0.5, 99.5]) if array.size else (0.0, 1.0)
    description = "".join(ch if ch.isprintable() else " " for ch in series_description)[:64]
    try:
        with atomic_path(folder) as tmp:
            tmp.mkdir()
            for k in range(array.shape[2]):
                position = lps[:3, 3] + k * slice_step
                ds = _slice_dataset(modality)
                if derived_from is not None:
                    _make_derived(ds, kept, derived_from, derivation, position, normal)
                ds.SOPInstanceUID = uid("instance", k)
                ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
                ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study_uid, series_uid, frame_uid
                ds.SeriesNumber = series_number
                ds.InstanceNumber = k + 1
                ds.SeriesDescription = description
                ds.ImageOrientationPatient = [_ds(v) for v in (*row_cosine, *column_cosine)]
                ds.ImagePositionPatient = [_ds(v) for v in position]
                ds.PixelSpacing = [_ds(dy), _ds(dx)]
                ds.SliceThickness = _ds(thickness)
                ds.SliceLocation = _ds(position @ normal)
                if modality == "MR":
                    ds.SpacingBetweenSlices = _ds(thickness)
                ds.Rows, ds.Columns = array.shape[1], array.shape[0]
                ds.RescaleSlope, ds.RescaleIntercept = _ds(slope), _ds(intercept)
                # DICOM forbids window widths < 1
                ds.WindowCenter, ds.WindowWidth = _ds((low + high) / 2), _ds(max(high - low, 1.0))
                ds.PixelData = np.ascontiguousarray(stored[:, :, k].T).tobytes()
                ds.save_as(tmp / f"IM{k + 1:05d}.dcm", enforce_file_format=True)
    except OSError as err:
        raise MedsynthError(f"{folder}: cannot write DICOM series ({err.strerror or err})") from None
    return Path(folder)


def _slice_dataset(modality: str) -> Dataset:
    """Attributes shared by every slice: empty patient/study identity, image pixel module."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = SOP_CLASSES[modality]
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.ImplementationClassUID = pydicom.uid.PYDICOM_IMPLEMENTATION_UID
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = SOP_CLASSES[modality]
    ds.ImageType = ["DERIVED", "SECONDARY"] + (["AXIAL"] if modality == "CT" else ["OTHER"])
    # Patient and study identity: required (type 2) but empty; nothing comes from a source.
    ds.PatientName = ""
    ds.PatientID = ""
    ds.PatientBirthDate = ""
    ds.PatientSex = ""
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = "medsynth: built from scratch, no source attributes"
    ds.StudyDate = ""
    ds.StudyTime = ""
    ds.ReferringPhysicianName = ""
    ds.StudyID = ""
    ds.AccessionNumber = ""
    ds.StudyDescription = "medsynth"
    ds.Modality = modality
    ds.Laterality = ""
    ds.PatientPosition = ""
    ds.Manufacturer = "medsynth"
    ds.PositionReferenceIndicator = ""
    ds.ContentDate = ""
    ds.ContentTime = ""
    ds.BurnedInAnnotation = "NO"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    if modality == "MR":
        ds.ScanningSequence = "RM"
        ds.SequenceVariant = "NONE"
        ds.ScanOptions = ""
        ds.MRAcquisitionType = ""
        ds.RepetitionTime = ""
        ds.EchoTime = ""
        ds.EchoTrainLength = ""
    else:
        ds.KVP = ""
        ds.AcquisitionNumber = ""
        ds.RescaleType = "HU"
    return ds


#: patient and study attributes a derived series copies from its source (with the two UIDs that
#: put it in the source's study and frame of reference)
KEPT_FROM_SOURCE = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "PatientAge", "StudyInstanceUID",
                    "StudyDate", "StudyTime", "StudyID", "AccessionNumber", "ReferringPhysicianName",
                    "StudyDescription", "FrameOfReferenceUID", "PatientPosition", "PositionReferenceIndicator")


def _kept_from(source: DicomSeries) -> dict[str, object]:
    header = source.headers[0]
    return {k: header.data_element(k).value for k in KEPT_FROM_SOURCE if k in header and header.data_element(k)
            is not None}


def _make_derived(ds: Dataset, kept: dict[str, object], source: DicomSeries, derivation: str,
                  position: np.ndarray, normal: np.ndarray) -> None:
    """Turn a from-scratch slice at ``position`` into a slice of a series derived from ``source``,
    in its study: SourceImageSequence names the source instance nearest along the slice normal,
    ReferencedSeriesSequence (Common Instance Reference) the source series and its instances."""
    for keyword, value in kept.items():
        setattr(ds, keyword, value)
    del ds.PatientIdentityRemoved
    del ds.DeidentificationMethod
    ds.DerivationDescription = "".join(ch if ch.isprintable() else " " for ch in derivation)[:1024]
    instances = [_instance(header) for header in source.headers]
    distances = [abs((_position(header) - position) @ normal) if _position(header) is not None else np.inf
                 for header in source.headers]
    ds.SourceImageSequence = [_instance(source.headers[int(np.argmin(distances))])]
    reference = Dataset()
    reference.SeriesInstanceUID = str(source.uid)
    reference.ReferencedInstanceSequence = instances
    ds.ReferencedSeriesSequence = [reference]


def _instance(header: Dataset) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = str(header.get("SOPClassUID", "") or "")
    item.ReferencedSOPInstanceUID = str(header.get("SOPInstanceUID", "") or "")
    return item


def _position(header: Dataset) -> np.ndarray | None:
    try:
        return np.array([float(v) for v in header.ImagePositionPatient], dtype=np.float64)
    except (AttributeError, TypeError, ValueError):
        return None
