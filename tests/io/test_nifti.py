from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pytest

from medsynth.errors import MedsynthError
from medsynth.io import MedicalImage, read_nifti, write_nifti


def _affine() -> np.ndarray:
    affine = np.array([[0.0, -1.2, 0.0, 30.0], [0.9, 0.0, 0.0, -20.0], [0.0, 0.0, 3.0, 7.5], [0, 0, 0, 1]])
    return affine


@pytest.mark.parametrize("shape", [(6, 5), (6, 5, 4)], ids=["2d", "3d"])
@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_round_trip(tmp_path, shape, suffix):
    array = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    path = write_nifti(MedicalImage(array, _affine(), {"modality": "CT"}), tmp_path / f"x{suffix}")
    back = read_nifti(path)
    np.testing.assert_array_equal(back.array, array)
    np.testing.assert_allclose(back.affine, _affine())
    assert back.meta["modality"] == "CT" and back.name == "x"
    assert back.spacing_mm == pytest.approx((0.9, 1.2, 3.0)[: len(shape)])


def test_trailing_singleton_dimensions_are_dropped(tmp_path):
    nib.save(nib.Nifti1Image(np.ones((4, 3, 2, 1), np.float32), np.eye(4)), tmp_path / "x.nii.gz")
    assert read_nifti(tmp_path / "x.nii.gz").array.shape == (4, 3, 2)


@pytest.mark.parametrize("array, message", [
    (np.ones((4, 3, 2, 5), np.float32), "4 dimensions"),
    (np.ones((7,), np.float32), "expects 2D or 3D"),
    (np.array([[[np.nan, 1.0], [1.0, np.inf]]], np.float32), "2 non-finite"),
])
def test_bad_arrays(tmp_path, array, message):
    nib.save(nib.Nifti1Image(array, np.eye(4)), tmp_path / "bad.nii.gz")
    with pytest.raises(MedsynthError, match=message) as err:
        read_nifti(tmp_path / "bad.nii.gz")
    assert str(tmp_path / "bad.nii.gz") in str(err.value)


def test_zero_spacing_is_refused(tmp_path):
    image = nib.Nifti1Image(np.ones((3, 3, 3), np.float32), None)
    image.header.set_sform(np.diag([1.0, 0.0, 1.0, 1.0]), code=1)
    image.header.set_qform(None, code=0)
    nib.save(image, tmp_path / "z.nii")
    with pytest.raises(MedsynthError, match="degenerate geometry"):
        read_nifti(tmp_path / "z.nii")


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_corrupt_files(tmp_path, damage):
    path = tmp_path / "c.nii.gz"
    nib.save(nib.Nifti1Image(np.random.default_rng(0).random((20, 20, 20), np.float32), np.eye(4)), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if damage == "truncate" else gzip.compress(b"\x01" * 400))
    with pytest.raises(MedsynthError, match="cannot read NIfTI") as err:
        read_nifti(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_failed_write_leaves_old_file_and_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "x.nii.gz"
    write_nifti(MedicalImage(np.zeros((2, 2, 2), np.float32), np.eye(4)), target)
    before = target.read_bytes()

    def disk_full(image, path):
        path.write_bytes(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(nib, "save", disk_full)
    with pytest.raises(MedsynthError, match="No space left"):
        write_nifti(MedicalImage(np.ones((2, 2, 2), np.float32), np.eye(4)), target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.nii.gz"] and target.read_bytes() == before


@pytest.mark.parametrize("values, dtype, kept", [
    ([0, 70_000], None, np.uint32), ([0, 3_000_000_000], None, np.uint32), ([-5, 40_000], None, np.int32),
    ([0, 65_535], np.uint16, np.uint16),
])
def test_write_nifti_keeps_integer_values(tmp_path, values, dtype, kept):
    array = np.array(values * 2, np.int64).reshape(2, 2)
    path = write_nifti(MedicalImage(array, np.eye(4)), tmp_path / "x.nii.gz", dtype=dtype)
    written = nib.load(path)
    assert written.get_data_dtype() == kept
    np.testing.assert_array_equal(np.asarray(written.dataobj), array)


@pytest.mark.parametrize("values, dtype", [
    (np.array([0, 70_000]), np.int16), (np.array([0, 2**40]), None), (np.array([0.5, 1.0]), np.uint8),
    (np.array([0, 2**24 + 1]), np.float32), (np.array([1e300, 0.0]), np.float32), (np.array([np.nan, 1.0]), np.uint8),
])
def test_write_nifti_refuses_values_its_type_would_change(tmp_path, values, dtype):
    with pytest.raises(MedsynthError, match="x.nii.gz.*without changing them|x.nii.gz.*fit no NIfTI"):
        write_nifti(MedicalImage(np.tile(values, (2, 1)), np.eye(4)), tmp_path / "x.nii.gz", dtype=dtype)
    assert not (tmp_path / "x.nii.gz").exists()
