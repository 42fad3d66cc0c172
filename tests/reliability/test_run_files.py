"""Run directories under attack: planted pickles are refused without running, corruption is detected."""

from __future__ import annotations

import os
import pickle

import pytest

from medsynth.errors import MedsynthError
from medsynth.training import Trainer, load_experiment
from medsynth.training.inference import load_synthesizer
from tests.cli.test_cli import error_line, run
from tests.training.test_trainer import tiny_config


class Payload:
    """Unpickling this would create a file (a stand-in for running any command)."""

    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


@pytest.fixture()
def trained(tmp_path):
    Trainer(load_experiment(tiny_config(tmp_path, "denoise")), tmp_path / "run", progress=False).fit()
    return tmp_path / "run", tmp_path / "run" / "checkpoints" / "step_0000006"


@pytest.mark.parametrize("victim", ["trainer_state.pt", "model.safetensors", "ema.safetensors"])
def test_a_planted_pickle_is_refused_and_never_runs(trained, tmp_path, victim):
    run_dir, checkpoint = trained
    sentinel = tmp_path / "pwned"
    (checkpoint / "checksums.json").unlink()  # an attacker can rewrite the checksums too: refused all the same
    with open(checkpoint / victim, "wb") as handle:
        pickle.dump({"state": Payload(str(sentinel))}, handle)
    with pytest.raises(MedsynthError, match="cannot load checkpoint"):
        load_synthesizer(run_dir)
    result = run("train", tiny_config(tmp_path, "denoise"), "--out", run_dir, "--resume", "--set", "train.steps=8")
    assert result.exit_code == 1 and "cannot load checkpoint" in error_line(result)
    assert not sentinel.exists()


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_a_corrupted_checkpoint_is_detected_by_its_checksum(trained, damage):
    run_dir, checkpoint = trained
    path = checkpoint / "model.safetensors"
    data = bytearray(path.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0x01  # one bit inside a weight: safetensors itself would load it
    else:
        data = data[:-8]
    path.write_bytes(bytes(data))
    with pytest.raises(MedsynthError, match="model.safetensors: checksum mismatch"):
        load_synthesizer(run_dir)
