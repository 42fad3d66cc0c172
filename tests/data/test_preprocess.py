from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch

from medsynth.data.preprocess import preprocessing
from medsynth.io import MedicalImage, write_nifti

# voxel axes run Left, Inferior, Anterior (LIA) with 1.5 x 2 x 3 mm voxels
LIA_AFFINE = np.array([
    [-1.5, 0.0, 0.0, 20.0],
    [0.0, 0.0, 3.0, -10.0],
    [0.0, -2.0, 0.0, 15.0],
    [0.0, 0.0, 0.0, 1.0],
])


def _write_case(tmp_path, modality="MR", shape=(12, 10, 6), affine=LIA_AFFINE):
    rng = np.random.default_rng(0)
    image = rng.normal(300.0, 50.0, shape).astype(np.float32)
    label = np.zeros(shape, np.uint8)
    label[(slice(2, 9), slice(3, 8), slice(1, 5))[: len(shape)]] = 2
    label[(slice(4, 6), slice(4, 6), slice(2, 4))[: len(shape)]] = 1
    write_nifti(MedicalImage(image, affine, {"modality": modality}), tmp_path / "image.nii.gz")
    write_nifti(MedicalImage(label, affine), tmp_path / "label.nii.gz", dtype=np.uint8)
    return {"image": str(tmp_path / "image.nii.gz"), "label": str(tmp_path / "label.nii.gz")}


def test_orientation_spacing_size_and_labels(tmp_path):
    paths = _write_case(tmp_path)
    out = preprocessing(label_key="label", spacing_mm=2.0, size=(16, 12, 10))(paths)
    for key in ("image", "label"):
        assert out[key].shape == (1, 16, 12, 10)
        assert out[key].dtype == torch.float32
        assert nib.aff2axcodes(out[key].affine.numpy()) == ("R", "A", "S")
        np.testing.assert_allclose(out[key].pixdim.numpy(), [2.0, 2.0, 2.0])
    label = out["label"].numpy()
    assert set(np.unique(label)) == {0.0, 1.0, 2.0}
    assert "intensity_scaling" not in out["label"].meta
    image = out["image"]
    assert float(image.min()) == 0.0 and float(image.max()) == 1.0
    assert image.meta["intensity_scaling"]["kind"] == "percentile"
    assert 150.0 < image.meta["intensity_scaling"]["low"] < 300.0 < image.meta["intensity_scaling"]["high"] < 450.0


def test_without_spacing_or_size_only_reorients(tmp_path):
    paths = _write_case(tmp_path)
    out = preprocessing(label_key="label")(paths)
    # LIA -> RAS: axis order (x, z, y) becomes (x, y, z)
    assert out["image"].shape == (1, 12, 6, 10)
    np.testing.assert_allclose(out["image"].pixdim.numpy(), [1.5, 3.0, 2.0])
    original = nib.load(paths["label"]).get_fdata()
    reoriented = out["label"][0].numpy()
    assert reoriented.sum() == original.sum()
    # the world position of a labelled voxel is unchanged
    i, j, k = np.argwhere(original == 1)[0]
    world = LIA_AFFINE @ [i, j, k, 1.0]
    voxel = np.linalg.solve(out["label"].affine.numpy(), world)[:3]
    assert reoriented[tuple(np.round(voxel).astype(int))] == 1.0


def test_ct_file_is_windowed_by_its_modality(tmp_path):
    paths = _write_case(tmp_path, modality="CT")
    out = preprocessing(window="brain")({"image": paths["image"]})
    assert out["image"].meta["modality"] == "CT"
    assert out["image"].meta["intensity_scaling"] == {"kind": "ct_window", "low": 0.0, "high": 80.0}
    forced = preprocessing(modality="MR")({"image": paths["image"]})
    assert forced["image"].meta["intensity_scaling"]["kind"] == "percentile"


def test_two_dimensional_images(tmp_path):
    paths = _write_case(tmp_path, shape=(12, 10), affine=np.diag([-1.0, 1.5, 1.0, 1.0]))
    out = preprocessing(label_key="label", spacing_mm=(2.0, 2.0), size=8)(paths)
    assert out["image"].shape == out["label"].shape == (1, 8, 8)
    assert set(np.unique(out["label"].numpy())) <= {0.0, 1.0, 2.0}
    np.testing.assert_allclose(out["image"].pixdim.numpy()[:2], [2.0, 2.0])
    assert out["image"].affine[0, 0] > 0  # flipped to R


def test_label_key_must_differ_from_image_keys():
    with pytest.raises(ValueError, match="label key 'image'"):
        preprocessing(keys=("image",), label_key="image")
