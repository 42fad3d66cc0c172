"""medsynth's DICOM geometry and voxels against the reference converter dcm2niix.

Both results are reoriented to the closest RAS+ axis order (dcm2niix flips rows), then compared:
affine within 1e-3 mm, voxels within half the rescale step.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from medsynth.io import MedicalImage, read_image, write_dicom_series
from tests.conftest import SeriesSpec, canonical, oblique_spec, run_dcm2niix, write_series


def assert_matches_dcm2niix(image: MedicalImage, series_folder, tmp_path, value_tolerance: float) -> None:
    reference = run_dcm2niix(series_folder, tmp_path / "dcm2niix")
    ours, our_affine = canonical(image.array, image.affine)
    theirs, their_affine = canonical(np.asarray(reference.get_fdata()).reshape(reference.shape[:3]), reference.affine)
    assert ours.shape == theirs.shape
    np.testing.assert_allclose(our_affine, their_affine, atol=1e-3)
    np.testing.assert_allclose(ours, theirs, atol=value_tolerance, rtol=1e-6)


@pytest.mark.parametrize("spec", [SeriesSpec(), oblique_spec(),
                                  SeriesSpec(row_cosine=(0, 1, 0), column_cosine=(0, 0, -1), slice_step=4.0)],
                         ids=["axial", "oblique_nonisotropic", "sagittal"])
def test_synthetic_series(tmp_path, spec):
    write_series(tmp_path / "series", spec)
    assert_matches_dcm2niix(read_image(tmp_path / "series"), tmp_path / "series", tmp_path, 1e-4)


@pytest.mark.parametrize("name", ["dicomdirtests/98892001/CT5N", "MR_small.dcm", "CT_small.dcm"])
def test_real_pydicom_data(tmp_path, pydicom_file, name):
    source = pydicom_file(name)
    folder = tmp_path / "series"
    if source.is_dir():
        shutil.copytree(source, folder)
    else:
        folder.mkdir()
        shutil.copy(source, folder)
    assert_matches_dcm2niix(read_image(folder), folder, tmp_path, 1e-3)


def test_written_series_round_trips_through_dcm2niix(tmp_path, mni):
    """medsynth's writer, checked by an independent reader: an oblique crop of the real MNI template."""
    t1, _ = mni
    affine = np.eye(4)
    affine[:3, :3] = Rotation.from_euler("xyz", [10, -15, 30], degrees=True).as_matrix() @ np.diag([1.0, 1.2, 2.5])
    affine[:3, 3] = [-40.0, 12.5, 3.0]
    image = MedicalImage(t1.array[20:60, 30:70, 40:52], affine, {"modality": "MR"})
    write_dicom_series(image, tmp_path / "written")
    slope = 1.0 / 65534
    assert_matches_dcm2niix(image, tmp_path / "written", tmp_path, slope)


def test_written_ct_is_lossless_in_dcm2niix(tmp_path, mni):
    t1, _ = mni
    hu = np.round(t1.array[::3, ::3, 30:40] * 2000 - 1000)
    image = MedicalImage(hu, t1.affine, {"modality": "CT"})
    write_dicom_series(image, tmp_path / "ct")
    assert_matches_dcm2niix(image, tmp_path / "ct", tmp_path, 0.0)
