"""medsynth's reader inside MONAI pipelines, and its agreement with MONAI's own NIfTI reader."""

from __future__ import annotations

import numpy as np
from monai.data import load_decathlon_datalist
from monai.transforms import EnsureChannelFirstd, LoadImaged

from medsynth.io import MedicalImage, write_nifti
from medsynth.io.convert import convert
from medsynth.io.monai_reader import MedsynthReader
from tests.conftest import SeriesSpec, oblique_spec, write_series


def test_load_imaged_on_dicom_series(tmp_path):
    spec = oblique_spec()
    write_series(tmp_path / "s", spec)
    data = EnsureChannelFirstd("image")(LoadImaged("image", reader=MedsynthReader())({"image": str(tmp_path / "s")}))
    expected = spec.expected()
    assert tuple(data["image"].shape) == (1, *expected.array.shape)
    np.testing.assert_allclose(data["image"].affine.numpy(), expected.affine, atol=1e-4)
    np.testing.assert_array_equal(data["image"][0].numpy(), expected.array)
    assert data["image"].meta["modality"] == "MR"


def test_same_affine_as_monai_nibabel_reader(tmp_path):
    affine = np.array([[0.0, 0.0, -2.0, 10.0], [1.5, 0.0, 0.0, -3.0], [0.0, 0.8, 0.0, 4.0], [0, 0, 0, 1]])
    array = np.random.default_rng(1).random((4, 5, 6)).astype(np.float32)
    write_nifti(MedicalImage(array, affine), tmp_path / "x.nii.gz")
    ours = LoadImaged("image", reader=MedsynthReader())({"image": str(tmp_path / "x.nii.gz")})["image"]
    monai = LoadImaged("image", reader="NibabelReader")({"image": str(tmp_path / "x.nii.gz")})["image"]
    np.testing.assert_allclose(ours.affine.numpy(), monai.affine.numpy())
    np.testing.assert_array_equal(ours.numpy(), monai.numpy())


def test_convert_datalist_loads_in_monai(tmp_path):
    write_series(tmp_path / "in" / "a", SeriesSpec(description="a", number=1))
    write_series(tmp_path / "in" / "b", oblique_spec(description="b", number=2))
    convert(tmp_path / "in", tmp_path / "out", progress=False)
    items = load_decathlon_datalist(str(tmp_path / "out" / "dataset.json"), data_list_key="training")
    assert len(items) == 2
    for item in items:
        loaded = LoadImaged("image")(item)
        assert loaded["image"].ndim == 3 and np.isfinite(loaded["image"].numpy()).all()
