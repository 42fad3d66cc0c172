"""Shared fixtures: small DICOM series built with pydicom alone, independent of medsynth's writer."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from medsynth.io.image import MedicalImage

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def require_tool(name: str) -> str:
    """Path of an external tool; skip without it, except in CI where its absence is a failure."""
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is required in CI (.ci/run installs it)")
        pytest.skip(f"{name} not installed (Debian package: apt-get install {name})")
    return path


@dataclass
class SeriesSpec:
    """Geometry and content of a synthetic DICOM series (LPS world, like DICOM itself)."""

    rows: int = 6
    columns: int = 5
    slices: int = 4
    row_cosine: tuple[float, ...] = (1.0, 0.0, 0.0)
    column_cosine: tuple[float, ...] = (0.0, 1.0, 0.0)
    pixel_spacing: tuple[float, float] = (0.8, 0.6)  # (between rows, between columns)
    slice_step: float = 2.5  # along the normal; negative = files run downwards
    origin: tuple[float, ...] = (-20.0, 10.0, 5.0)
    slope: float = 1.0
    intercept: float = 0.0
    modality: str = "MR"
    description: str = "T1 axial"
    number: int = 3
    seed: int = 0

    @property
    def normal(self) -> np.ndarray:
        return np.cross(self.row_cosine, self.column_cosine)

    def stored(self) -> np.ndarray:
        """Stored pixel values, shape (slices, rows, columns)."""
        shape = (self.slices, self.rows, self.columns)
        return np.random.default_rng(self.seed).integers(0, 1000, shape).astype(np.int16)

    def expected(self) -> MedicalImage:
        """The image medsynth should read: (columns, rows, slices) in RAS+, slices ascending along the normal."""
        values = self.stored().astype(np.float32) * np.float32(self.slope) + np.float32(self.intercept)
        array = np.transpose(values, (2, 1, 0))
        step = self.normal * self.slice_step
        first = np.asarray(self.origin, dtype=float)
        if self.slice_step < 0:  # files run against the normal: the lowest one comes first
            array = array[:, :, ::-1]
            first = first + (self.slices - 1) * step
            step = -step
        lps = np.eye(4)
        lps[:3, 0] = np.asarray(self.row_cosine) * self.pixel_spacing[1]
        lps[:3, 1] = np.asarray(self.column_cosine) * self.pixel_spacing[0]
        lps[:3, 2] = step
        lps[:3, 3] = first
        return MedicalImage(np.ascontiguousarray(array), LPS_TO_RAS @ lps, {"modality": self.modality})


def write_series(folder: Path, spec: SeriesSpec, suffix: str = ".dcm", shuffle: bool = True) -> list[Path]:
    """Write ``spec`` as one file per slice with random names and shuffled InstanceNumbers."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(spec.seed + 1)
    stored = spec.stored()
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    instance_numbers = rng.permutation(spec.slices) + 1 if shuffle else np.arange(spec.slices) + 1
    paths = []
    for k in range(spec.slices):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.4" if spec.modality == "MR" else \
            "1.2.840.10008.5.1.4.1.1.2"
        ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
        ds.PatientName = "Doe^Jane"
        ds.PatientID = "PID-12345"
        ds.PatientBirthDate = "19700101"
        ds.AccessionNumber = "ACC-999"
        ds.InstitutionName = "St Example Hospital"
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.Modality = spec.modality
        ds.SeriesDescription = spec.description
        ds.SeriesNumber = spec.number
        ds.InstanceNumber = int(instance_numbers[k])
        ds.ImageOrientationPatient = [f"{v:.6f}" for v in (*spec.row_cosine, *spec.column_cosine)]
        position = np.asarray(spec.origin) + k * spec.slice_step * spec.normal
        ds.ImagePositionPatient = [f"{v:.6f}" for v in position]
        ds.PixelSpacing = [f"{v:.6f}" for v in spec.pixel_spacing]
        ds.SliceThickness = f"{abs(spec.slice_step):.6f}"
        ds.Rows, ds.Columns = spec.rows, spec.columns
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleSlope, ds.RescaleIntercept = f"{spec.slope:g}", f"{spec.intercept:g}"
        ds.PixelData = stored[k].tobytes()
        path = folder / f"{rng.integers(1e9):09d}{suffix}"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def oblique_spec(**overrides) -> SeriesSpec:
    """A tilted, non-isotropic series whose files run against the slice normal."""
    angle_a, angle_b = np.deg2rad(20.0), np.deg2rad(-12.0)
    row = np.array([np.cos(angle_a), np.sin(angle_a), 0.0])
    col = np.array([-np.sin(angle_a) * np.cos(angle_b), np.cos(angle_a) * np.cos(angle_b), np.sin(angle_b)])
    values = dict(row_cosine=tuple(row), column_cosine=tuple(col), pixel_spacing=(0.7, 1.1), slice_step=-3.0,
                  origin=(12.5, -30.25, 41.0), slope=0.5, intercept=-100.0, description="oblique t2", number=7)
    values.update(overrides)
    return SeriesSpec(**values)


def run_dcm2niix(series_folder: Path, out_folder: Path) -> nib.Nifti1Image:
    """Convert one series folder with dcm2niix and load its single NIfTI output."""
    tool = require_tool("dcm2niix")
    out_folder.mkdir(parents=True, exist_ok=True)
    subprocess.run([tool, "-z", "n", "-b", "n", "-f", "ref", "-o", str(out_folder), str(series_folder)],
                   check=True, capture_output=True)
    outputs = sorted(out_folder.glob("ref*.nii"))
    assert len(outputs) == 1, f"dcm2niix wrote {outputs}"
    return nib.load(outputs[0])


def canonical(array: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reorient to the closest RAS+ axis order, so two conversions compare voxel by voxel."""
    image = nib.as_closest_canonical(nib.Nifti1Image(np.asarray(array, dtype=np.float32), affine))
    return np.asarray(image.dataobj, dtype=np.float64), image.affine


@pytest.fixture
def pydicom_file():
    from medsynth.data.samples import pydicom_test_file

    return pydicom_test_file


@pytest.fixture(scope="session")
def mni():
    """The real MNI152 template and tissue labels (2 mm), loaded once."""
    from medsynth.data.samples import mni152

    return mni152()


def dcmread(path: Path) -> pydicom.Dataset:
    return pydicom.dcmread(path)
