from __future__ import annotations

import numpy as np
import pytest

from medsynth.errors import MedsynthError
from medsynth.io import MedicalImage, find_images, write_nifti
from medsynth.io.pairing import check_label, pair_labels


def _write(path, array, affine=None):
    write_nifti(MedicalImage(np.asarray(array, np.float32), np.eye(4) if affine is None else affine), path)


def test_pairs_by_stem_and_nnunet_channel_suffix(tmp_path):
    for name in ("case_a_0000", "case_b"):
        _write(tmp_path / "images" / f"{name}.nii.gz", np.zeros((3, 3, 3)))
    for name in ("case_a", "case_b", "unused"):
        _write(tmp_path / "labels" / f"{name}.nii.gz", np.zeros((3, 3, 3)))
    pairs = pair_labels(find_images(tmp_path / "images"), tmp_path / "labels")
    assert [(i.name, label.name) for i, label in pairs] == [("case_a_0000", "case_a"), ("case_b", "case_b")]


def test_missing_label_names_the_image(tmp_path):
    _write(tmp_path / "images" / "lonely.nii.gz", np.zeros((3, 3, 3)))
    _write(tmp_path / "labels" / "other.nii.gz", np.zeros((3, 3, 3)))
    with pytest.raises(MedsynthError, match="lonely"):
        pair_labels(find_images(tmp_path / "images"), tmp_path / "labels")


def test_check_label_accepts_integer_floats():
    image = MedicalImage(np.zeros((4, 4, 2), np.float32), np.eye(4))
    label = check_label(MedicalImage(np.array([0.0, 1.0, 2.0] * 10 + [0, 0], np.float32).reshape(4, 4, 2), np.eye(4)),
                        image, num_classes=3)
    assert label.array.dtype == np.uint8 and label.array.max() == 2


@pytest.mark.parametrize("label, classes, message", [
    (MedicalImage(np.zeros((4, 4, 3)), np.eye(4)), None, "shape"),
    (MedicalImage(np.zeros((4, 4, 2)), np.diag([1.0, 1.0, 1.5, 1.0])), None, "affine differs"),
    (MedicalImage(np.full((4, 4, 2), 0.5), np.eye(4)), None, "non-integer"),
    (MedicalImage(np.full((4, 4, 2), -1.0), np.eye(4)), None, "negative"),
    (MedicalImage(np.full((4, 4, 2), 3.0), np.eye(4)), 3, "outside the 3 classes"),
])
def test_check_label_refuses(label, classes, message):
    image = MedicalImage(np.zeros((4, 4, 2), np.float32), np.eye(4), {"source": "img.nii.gz"})
    label.meta["source"] = "lab.nii.gz"
    with pytest.raises(MedsynthError, match=message) as err:
        check_label(label, image, num_classes=classes)
    assert "lab.nii.gz" in str(err.value)


def test_label_values_keep_their_value_and_too_large_ones_are_refused():
    image = MedicalImage(np.zeros((2, 2, 1), np.float32), np.eye(4))
    for value, dtype in [(255, np.uint8), (70_000, np.int32), (3_000_000_000, np.int64)]:
        label = check_label(MedicalImage(np.array([[[0], [value]], [[1], [2]]], np.float64), np.eye(4)), image)
        assert label.array.dtype == dtype and label.array.max() == value
    with pytest.raises(MedsynthError, match="larger than the largest label"):
        check_label(MedicalImage(np.full((2, 2, 1), 2.0**33), np.eye(4), {"source": "lab.nii"}), image)
