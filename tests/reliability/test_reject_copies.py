"""``augment --reject-copies``: near-copies of training images are not written, and are recorded."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from medsynth.errors import MedsynthError
from medsynth.training import RunDirectory
from medsynth.training.dataset import load_volumes, split_volumes
from medsynth.validation.copies import near_copy_check
from tests.cli.test_cli import run
from tests.reliability import write_axial_slices
from tests.synthesis.test_augment import train_tiny


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return train_tiny(tmp_path_factory.mktemp("copies"))


def test_a_training_slice_is_flagged_and_noise_is_not(model):
    check = near_copy_check(model)
    config = RunDirectory(model).read_config()
    train = split_volumes(load_volumes(config.data, 2), config.data)["train"]
    training_slice = train[0].image[0, :, :, 20].numpy()
    assert check(training_slice + 0.001) < 0.05
    assert check(np.random.default_rng(0).random(training_slice.shape).astype(np.float32)) is None
    with pytest.raises(MedsynthError, match="--copy-threshold"):
        near_copy_check(model, 0)


def test_augment_rejects_what_the_check_flags_and_records_it(model, tmp_path, mni):
    write_axial_slices(tmp_path, mni, [40, 41])
    args = ["augment", tmp_path / "in", tmp_path / "out", "--model", model, "--labels", tmp_path / "lab",
            "--per-image", 2, "--device", "cpu", "--reject-copies"]
    everything = run(*args, "--copy-threshold", 1e9)  # every output counts as a copy
    assert everything.exit_code == 0, everything.stderr
    assert "4 outputs were near-copies" in everything.stderr
    with open(tmp_path / "out" / "rejected.csv", newline="") as handle:
        assert len(list(csv.DictReader(handle))) == 4
    assert not list((tmp_path / "out").glob("images/*"))
    again = run(*args, "--copy-threshold", 1e9)
    assert again.exit_code == 0 and "4 of 4 outputs already done" in again.stderr  # not retried
    fresh = run(*args[:2], tmp_path / "kept", *args[3:])  # the default threshold: a tiny model makes no copies
    assert fresh.exit_code == 0, fresh.stderr
    assert len(list((tmp_path / "kept" / "images").glob("*"))) == 4
    assert not (tmp_path / "kept" / "rejected.csv").exists()
