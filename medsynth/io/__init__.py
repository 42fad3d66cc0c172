"""I/O layer: find, read and write NIfTI files and DICOM series with their geometry."""

from medsynth.io.dicom_read import DicomSeries, read_dicom_series, scan_dicom
from medsynth.io.dicom_write import write_dicom_series
from medsynth.io.discovery import ImageSource, find_images, find_input_images, read_image
from medsynth.io.image import MedicalImage
from medsynth.io.nifti import read_nifti, write_nifti

__all__ = [
    "DicomSeries",
    "ImageSource",
    "MedicalImage",
    "find_images",
    "find_input_images",
    "read_dicom_series",
    "read_image",
    "read_nifti",
    "scan_dicom",
    "write_dicom_series",
    "write_nifti",
]
