"""Train, validation and test are disjoint, and training never sees a validation or test voxel: not in a
patch, not in a normalisation statistic, not in a preview picture."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml

from medsynth.errors import MedsynthError
from medsynth.io import MedicalImage, write_nifti
from medsynth.training import Trainer, load_experiment
from medsynth.training.dataset import PARTS, Volume, load_volumes, slab_bounds, split_volumes, training_sources
from medsynth.training.experiment import DataConfig
from tests.training.test_trainer import TINY_MODEL, TINY_TRAIN

DEPTH = 40


def striped_volume(folder, eval_value: float = 0.0):
    """A volume whose axial slice z holds the value z + 1 (so a patch tells where it came from);
    with ``eval_value``, the validation and test slices hold that value instead."""
    data = DataConfig(images=str(folder))
    values = np.arange(1, DEPTH + 1, dtype=np.float32)
    if eval_value:
        for fractions in (data.validation, data.test):
            start, stop = slab_bounds(DEPTH, fractions)
            values[start:stop] = eval_value
    array = np.broadcast_to(values, (24, 24, DEPTH)).copy()
    write_nifti(MedicalImage(array, np.eye(4), {"modality": "MR"}), folder / "striped.nii.gz")
    return data


def eval_slices(data: DataConfig) -> set[int]:
    return {z for fractions in (data.validation, data.test) for z in range(*slab_bounds(DEPTH, fractions))}


def test_the_parts_tile_the_volume_without_overlap():
    data = DataConfig()
    volume = Volume(torch.arange(float(DEPTH)).reshape(1, 1, 1, DEPTH), None, "v", {})
    parts = split_volumes([volume], data)
    slices = {part: [int(v) for piece in parts[part] for v in piece.image.flatten().tolist()] for part in PARTS}
    assert sorted(sum(slices.values(), [])) == list(range(DEPTH))  # every slice in exactly one part
    assert slices["validation"] == list(range(*slab_bounds(DEPTH, data.validation)))
    assert slices["test"] == list(range(*slab_bounds(DEPTH, data.test)))
    assert len(parts["train"]) == 3  # below, between and above the two slabs: no 3D patch spans a part


def marked_volume(data: DataConfig) -> Volume:
    """Slice z holds z + 1 in the training part and -1 in the validation and test slabs."""
    values = torch.arange(1.0, DEPTH + 1)
    for z in eval_slices(data):
        values[z] = -1.0
    return Volume(values.expand(1, 24, 24, DEPTH).clone(), None, "marked", {"kind": "percentile", "low": 0.0,
                                                                          "high": 1.0})


@pytest.mark.parametrize("dims, patch", [(2, [16, 16]), (3, [8, 8, 8])])
def test_the_sampler_never_draws_a_validation_or_test_voxel(tmp_path, monkeypatch, dims, patch):
    config = load_experiment(_config(tmp_path, dims, patch))
    monkeypatch.setattr("medsynth.training.dataset.load_volumes", lambda data, dims: [marked_volume(data)])
    sampler, parts = training_sources(config)
    generator = torch.Generator().manual_seed(0)
    drawn = set()
    for _ in range(60):
        images, _ = sampler.sample(8, generator)
        drawn |= {round(v) for v in images.unique().tolist()}
    assert -1 not in drawn  # no validation or test voxel in any patch
    assert len(drawn) > 10  # the draws cover many training slices: the check has teeth
    assert {v for piece in parts["validation"] + parts["test"] for v in piece.image.unique().tolist()} == {-1.0}


def test_normalisation_statistics_come_from_the_training_part(tmp_path):
    plain, loud = tmp_path / "plain", tmp_path / "loud"
    plain.mkdir()
    loud.mkdir()
    a = load_volumes(striped_volume(plain), 2)[0].scaling
    b = load_volumes(striped_volume(loud, eval_value=1e6), 2)[0].scaling
    assert a == b  # the evaluation slices can be anything: training's scaling does not move
    unsplit = load_volumes(striped_volume(loud, eval_value=1e6), 2, split=False)[0].scaling
    assert unsplit["high"] > a["high"]  # a folder read whole (validate) uses every voxel


def test_previews_come_from_the_training_part(tmp_path, monkeypatch):
    monkeypatch.setattr("medsynth.training.dataset.load_volumes", lambda data, dims: [marked_volume(data)])
    trainer = Trainer(load_experiment(_config(tmp_path, 2, [16, 16])), tmp_path / "run", device="cpu",
                      progress=False)
    trainer._build()
    assert float(trainer.preview["target"].min()) > 0  # the sample grids show training slices only


def test_several_cases_are_split_by_case_stably(tmp_path):
    volumes = [Volume(torch.full((1, 4, 4, 12), float(k)), None, f"case{k:02d}", {}) for k in range(20)]
    data = DataConfig()
    parts = split_volumes(volumes, data)
    names = {part: {v.name for v in parts[part]} for part in PARTS}
    assert len(names["test"]) == 3 and len(names["validation"]) == 3 and len(names["train"]) == 14
    assert not (names["test"] & names["validation"]) and not (names["train"] & names["test"])
    more = split_volumes(volumes + [Volume(torch.zeros(1, 4, 4, 12), None, "case99", {})], data)
    kept = {v.name for v in more["test"]} & names["test"]
    assert len(kept) >= 2  # adding a case does not reshuffle the split
    with pytest.raises(MedsynthError, match="leaves none to train"):
        split_volumes(volumes[:3], DataConfig(case_split=(0.5, 0.5)))


def test_overlapping_slabs_are_refused(tmp_path):
    path = _config(tmp_path, 2, [16, 16])
    with pytest.raises(MedsynthError, match="the slabs overlap"):
        load_experiment(path, ["data.validation=[0.4, 0.6]", "data.test=[0.5, 0.7]"])


def _config(tmp_path, dims: int, patch: list[int], **data) -> str:
    path = tmp_path / f"split_{dims}d.yaml"
    path.write_text(yaml.safe_dump({"job": {"name": "denoise"}, "spatial_dims": dims,
                                    "data": {"patch_size": patch, "min_foreground": 0.0, **data},
                                    "model": TINY_MODEL, "train": TINY_TRAIN}))
    return path


def test_train_slices_keep_only_the_listed_training_slices(tmp_path):
    """``data.train_slices`` counts the training part's slices in split order; nothing else reaches a patch."""
    from medsynth.training.dataset import select_slices, training_slice_names

    data = DataConfig(train_slices=[0, 5, 27])
    volume = marked_volume(data)
    train = split_volumes([volume], data)["train"]
    names = training_slice_names(train, data.slice_axis)
    values = [int(v.image[0, 0, 0, k]) for v in train for k in range(v.image.shape[-1])]
    assert len(names) == len(values) == DEPTH - len(eval_slices(data))
    kept = select_slices(train, data)
    assert sorted(int(x) for v in kept for x in v.image[0, 0, 0]) == sorted(values[k] for k in (0, 5, 27))
    with pytest.raises(MedsynthError, match="index 99 is beyond the"):
        select_slices(train, DataConfig(train_slices=[99]))
    for bad, message in (([], "empty"), ([1, 1], "listed twice"), ([-1], "train_slices")):
        with pytest.raises(Exception, match=message):
            DataConfig(train_slices=bad).validate()


def test_a_training_piece_thinner_than_the_patch_is_mirrored_along_z_not_padded_with_air():
    from medsynth.training.dataset import PatchSampler

    depth = torch.arange(1, 6, dtype=torch.float32)  # 5 slices of a piece cut between two slabs, values 1..5
    image = torch.ones(1, 12, 10, 5) * depth
    sampler = PatchSampler([Volume(image, None, "piece", {})], DataConfig(patch_size=(8, 8, 8), augment=False), 3)
    prepared = sampler.volumes[0].image
    assert prepared.shape == (1, 12, 10, 8)
    assert prepared[0, 0, 0].tolist() == [1.0, 1.0, 2.0, 3.0, 4.0, 5.0, 5.0, 4.0]  # mirrored, never 0
    patches, _ = sampler.sample(4, torch.Generator().manual_seed(0))
    assert float(patches.amin()) >= 1.0
    thin = PatchSampler([Volume(torch.ones(1, 4, 12, 8), None, "small", {})],
                        DataConfig(patch_size=(8, 8, 8), augment=False), 3).volumes[0].image
    assert float(thin[0, :2].abs().sum()) == 0.0  # in-plane the padding is still air
