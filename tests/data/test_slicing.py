from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.data.utils import list_data_collate

from medsynth.data.slicing import ExtractSlicesd, assemble_volume, slice_affine

# an oblique, permuted affine with non-isotropic spacing and an offset
AFFINE = np.array([
    [0.0, 0.0, 2.5, -30.0],
    [0.9 * np.cos(0.3), -0.8 * np.sin(0.3), 0.0, 12.0],
    [0.9 * np.sin(0.3), 0.8 * np.cos(0.3), 0.0, 4.0],
    [0.0, 0.0, 0.0, 1.0],
])
SHAPE = (5, 6, 7)


def _volume(channels: int = 2, seed: int = 0) -> MetaTensor:
    array = np.random.default_rng(seed).uniform(0.5, 1.0, (channels, *SHAPE)).astype(np.float32)
    return MetaTensor(torch.as_tensor(array), affine=torch.as_tensor(AFFINE), meta={"modality": "MR"})


def _index(axis: int, k: int) -> tuple:
    index = [slice(None)] * 4
    index[axis + 1] = k
    return tuple(index)


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_round_trip_is_exact(axis):
    volume = _volume()
    label = MetaTensor(torch.randint(0, 3, (1, *SHAPE)).float(), affine=torch.as_tensor(AFFINE))
    samples = ExtractSlicesd(["image", "label"], axis=axis)({"image": volume, "label": label, "case": "a"})
    assert len(samples) == SHAPE[axis]
    for key, original in (("image", volume), ("label", label)):
        slices = [s[key] for s in samples]
        assert all(s.shape == (original.shape[0], *np.delete(SHAPE, axis)) for s in slices)
        indices = [s.meta["slice_index"] for s in slices]
        rebuilt = assemble_volume(slices, indices, axis, slices[0].meta["volume_shape"])
        assert isinstance(rebuilt, MetaTensor)
        assert torch.equal(rebuilt.as_tensor(), original.as_tensor())
        np.testing.assert_array_equal(rebuilt.affine.numpy(), AFFINE)
    assert all(s["case"] == "a" for s in samples)
    assert samples[0]["image"].meta["modality"] == "MR" and samples[0]["image"].meta["slice_axis"] == axis


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_slice_affine_places_pixels_where_the_voxels_were(axis):
    samples = ExtractSlicesd("image", axis=axis)({"image": _volume()})
    rng = np.random.default_rng(1)
    for sample in samples:
        image = sample["image"]
        k = image.meta["slice_index"]
        np.testing.assert_array_equal(image.meta["volume_affine"].numpy(), AFFINE)
        for _ in range(5):
            i, j = (int(rng.integers(0, n)) for n in image.shape[1:])
            voxel = np.insert([i, j], axis, k)
            expected = AFFINE @ [*voxel, 1.0]
            np.testing.assert_allclose(image.affine.numpy() @ [i, j, 0.0, 1.0], expected, atol=1e-9)
            assert torch.equal(image.as_tensor()[:, i, j], _volume().as_tensor()[(slice(None), *voxel)])


def test_slice_affine_is_invertible_and_keeps_spacing():
    for axis in range(3):
        affine = slice_affine(AFFINE, axis, 3)
        assert abs(np.linalg.det(affine)) == pytest.approx(abs(np.linalg.det(AFFINE)))
        in_plane = [a for a in range(3) if a != axis]
        np.testing.assert_allclose(np.linalg.norm(affine[:3, :2], axis=0), np.linalg.norm(AFFINE[:3, in_plane], axis=0))


def test_empty_slices_are_skipped():
    volume = _volume()
    volume[_index(2, 0)] = 0.0
    volume[_index(2, 4)] = 0.0
    samples = ExtractSlicesd("image", axis=2)({"image": volume})
    assert [s["image"].meta["slice_index"] for s in samples] == [1, 2, 3, 5, 6]
    kept_all = ExtractSlicesd("image", axis=2, skip_empty=False)({"image": volume})
    assert len(kept_all) == SHAPE[2]


def test_label_foreground_decides_with_threshold():
    volume = _volume(channels=1)
    label = torch.zeros(1, *SHAPE)
    label[0, 0, 0, 1] = 1  # one of 30 pixels: fraction 1/30
    label[0, :, :3, 3] = 2  # half of the slice
    data = {"image": volume, "label": label}
    any_foreground = ExtractSlicesd(["image", "label"], skip_empty_key="label")(data)
    assert [s["image"].meta["slice_index"] for s in any_foreground] == [1, 3]
    assert isinstance(any_foreground[0]["label"], torch.Tensor) and any_foreground[0]["label"].shape == (1, 5, 6)
    mostly = ExtractSlicesd(["image", "label"], skip_empty_key="label", min_foreground=0.1)(data)
    assert [s["image"].meta["slice_index"] for s in mostly] == [3]


def test_slices_are_copies():
    volume = _volume()
    samples = ExtractSlicesd("image", axis=1)({"image": volume})
    samples[0]["image"].fill_(-1.0)
    assert float(volume.min()) > 0.0


def test_assemble_from_a_collated_batch_with_background():
    volume = _volume()
    volume[_index(2, 2)] = 0.0
    samples = ExtractSlicesd("image", axis=2)({"image": volume})
    batch = list_data_collate(samples)["image"]
    assert batch.shape == (6, 2, 5, 6)
    background = torch.full((2, *SHAPE), 7.0)
    rebuilt = assemble_volume(batch, batch.meta["slice_index"].tolist(), 2, SHAPE, background=background)
    assert torch.all(rebuilt[_index(2, 2)] == 7.0)
    keep = [k for k in range(SHAPE[2]) if k != 2]
    assert torch.equal(rebuilt.as_tensor()[:, :, :, keep], volume.as_tensor()[:, :, :, keep])
    assert torch.all(background == 7.0)


def test_assemble_numpy_slices_fills_zeros():
    slices = [np.full((1, 3, 4), float(k + 1), np.float32) for k in range(2)]
    volume = assemble_volume(slices, [1, 3], axis=1, shape=(3, 5, 4))
    assert isinstance(volume, np.ndarray) and volume.shape == (1, 3, 5, 4)
    np.testing.assert_array_equal(volume[0, :, [0, 2, 4]], 0.0)
    np.testing.assert_array_equal(volume[0, :, 1], 1.0)
    np.testing.assert_array_equal(volume[0, :, 3], 2.0)


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="axis"):
        ExtractSlicesd("image", axis=3)
    with pytest.raises(ValueError, match="label: spatial shape"):
        ExtractSlicesd(["image", "label"])({"image": _volume(), "label": torch.zeros(1, 5, 6, 8)})
    with pytest.raises(ValueError, match="3D volume"):
        ExtractSlicesd("image")({"image": torch.zeros(1, 5, 6)})
    with pytest.raises(ValueError, match="2 slices but 1 indices"):
        assemble_volume([np.zeros((1, 2, 2))] * 2, [0], 0, (2, 2, 2))
