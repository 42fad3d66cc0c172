"""Self-supervised training data: the scan's own pairs, and what is refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medsynth.errors import MedsynthError
from medsynth.io import MedicalImage, find_input_images, write_nifti
from medsynth.training.experiment import experiment_from_dict
from medsynth.training.self_supervised import neighbor_pairs, plane_axes, self_supervised_sources


def _config(job: str, images, **job_options):
    section = {"name": job, **job_options}
    if job == "super_resolve":
        section.update({"factor": [4, 4], "degrade_axis": 1})
    return experiment_from_dict({"job": section, "family": "gan", "spatial_dims": 2,
                                 "data": {"images": str(images), "self_supervised": True, "patch_size": [32, 32],
                                          "slice_axis": 0}})


def test_plane_axes_name_the_restored_and_the_third_axis():
    assert plane_axes(0, 1) == (2, 1) and plane_axes(0, 0) == (1, 2)
    assert plane_axes(1, 1) == (2, 0) and plane_axes(2, -1) == (1, 0)


def test_super_resolution_pairs_are_in_plane_slices_degraded_along_each_in_plane_axis(tmp_path):
    # thick axis z (index 2): the model restores z on slices along x (slice_axis 0, patch axis 1)
    array = np.random.default_rng(0).random((40, 48, 6)).astype(np.float32) * 100
    write_nifti(MedicalImage(array, np.diag([1.0, 1.0, 4.0, 1.0]), {"modality": "MR"}), tmp_path / "scan.nii.gz")
    sampler, parts = self_supervised_sources(_config("super_resolve", tmp_path / "scan.nii.gz"))
    assert parts["validation"] == [] and parts["test"] == []  # no split: the scan is the training set
    shapes = [tuple(v.image.shape[1:]) for v in parts["train"]]
    # slices along the slice axis are the scan's z slices; the degraded patch axis (volume axis 2)
    # holds x in one copy and y in the other
    assert shapes == [(6, 48, 40), (6, 40, 48)]
    scaling = parts["train"][0].scaling
    normalised = ((torch.as_tensor(array) - scaling["low"]) / (scaling["high"] - scaling["low"])).clamp(0, 1)
    for k in range(6):
        assert torch.allclose(parts["train"][0].image[0, k], normalised[:, :, k].T, atol=1e-6)
        assert torch.allclose(parts["train"][1].image[0, k], normalised[:, :, k], atol=1e-6)
    patches, _ = sampler.sample(4, torch.Generator().manual_seed(0))
    assert patches.shape == (4, 1, 32, 32)


def test_self_supervised_data_refuses_what_it_cannot_learn_from(tmp_path):
    flat = MedicalImage(np.ones((40, 40), dtype=np.float32), np.eye(4), {"modality": "MR"})
    write_nifti(flat, tmp_path / "flat.nii.gz")
    with pytest.raises(MedsynthError, match="2D image"):
        self_supervised_sources(_config("denoise", tmp_path / "flat.nii.gz"))
    small = MedicalImage(np.random.default_rng(0).random((20, 40, 8)).astype(np.float32), np.eye(4), {})
    write_nifti(small, tmp_path / "small" / "small.nii.gz")
    with pytest.raises(MedsynthError, match="too small"):
        self_supervised_sources(_config("super_resolve", tmp_path / "small"))
    write_nifti(small, tmp_path / "small" / "other.nii.gz")
    with pytest.raises(MedsynthError, match="one scan, found 2"):
        self_supervised_sources(_config("denoise", tmp_path / "small"))
    one = find_input_images(tmp_path / "small")[:1]  # one scan of the folder, given: past the count check
    with pytest.raises(MedsynthError, match="too small"):
        self_supervised_sources(_config("denoise", tmp_path / "small"), one)


@pytest.mark.parametrize("data, job, problem", [
    ({"self_supervised": True}, {"name": "denoise"}, "one scan"),  # no data.images
    ({"self_supervised": True, "images": "x"}, {"name": "generate"}, "denoise or super_resolve"),
    ({"self_supervised": True, "images": "x"}, {"name": "super_resolve", "factor": [2, 4]}, "one thick_slices"),
    ({}, {"name": "denoise", "fuse_planes": True}, "fuse_planes"),
])
def test_self_supervised_configs_are_checked(data, job, problem):
    with pytest.raises(MedsynthError, match=problem):
        experiment_from_dict({"job": job, "spatial_dims": 2, "data": {"patch_size": [32, 32], **data}})


def test_neighbor_pairs_take_adjacent_voxels_of_each_cell():
    h, w = 8, 10
    rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    image = (rows * 100 + cols).float()[None, None].repeat(3, 2, 1, 1)
    first, second = neighbor_pairs(image, torch.Generator().manual_seed(0))
    assert first.shape == second.shape == (3, 2, h // 2, w // 2)
    for a, b in ((first, second),):
        r1, c1, r2, c2 = a // 100, a % 100, b // 100, b % 100
        assert torch.equal(r1 // 2, torch.arange(h // 2)[:, None].expand_as(r1))  # both from the same cell
        assert torch.equal(r2 // 2, r1 // 2) and torch.equal(c2 // 2, c1 // 2)
        assert torch.equal((r1 - r2).abs() + (c1 - c2).abs(), torch.ones_like(r1))  # adjacent, never diagonal
    assert torch.equal(first[:, 0], first[:, 1])  # channels share the choice
    draws = torch.stack([neighbor_pairs(image, torch.Generator().manual_seed(s))[0] for s in range(20)])
    assert len(torch.unique(draws % 2 + 2 * ((draws // 100) % 2))) == 4  # every position of a cell is drawn
    with pytest.raises(ValueError, match="even"):
        neighbor_pairs(torch.zeros(1, 1, 7, 8), torch.Generator())
