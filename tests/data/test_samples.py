"""The bundled real data is what the docs say it is."""

from __future__ import annotations

import numpy as np

from medsynth.data.samples import write_sample_data
from medsynth.io import find_images


def test_mni152_tissue_labels_have_t1_contrast(mni):
    t1, labels = mni
    assert t1.array.shape == labels.array.shape == (99, 117, 95)
    np.testing.assert_array_equal(t1.affine, labels.affine)
    assert set(np.unique(labels.array)) == {0, 1, 2}
    means = [float(t1.array[labels.array == k].mean()) for k in range(3)]
    assert means[0] < means[1] < means[2], means  # T1: background < grey matter < white matter
    fractions = [float(np.mean(labels.array == k)) for k in (1, 2)]
    assert all(0.05 < f < 0.3 for f in fractions), fractions


def test_write_sample_data(tmp_path):
    paths = write_sample_data(tmp_path)
    names = sorted(s.name for s in find_images(paths["dicom"]))
    assert names == ["1_CT", "1_MNI152_T1_template", "1_MR", "5_SmartScore_-_Gated_0.5_sec"]
    assert [s.name for s in find_images(paths["labels"])] == ["mni152_t1"]
