"""Absurd config values are refused, naming the key, before any work starts (no run directory)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli.test_cli import error_line, run

CONFIG = Path(__file__).parent.parent.parent / "configs" / "denoise_2d_gan.yaml"


@pytest.mark.parametrize("override, key", [
    ("train.steps=-5", "steps"), ("train.steps=0", "steps"), ("train.batch_size=0", "batch_size"),
    ("train.batch_size=1000000", "batch_size"), ("train.lr=0", "lr"), ("train.lr=-1e-3", "lr"),
    ("train.ema_decay=1.5", "ema_decay"), ("data.patch_size=[8192,8192]", "patch_size"),
    ("data.patch_size=[2,64]", "patch_size"), ("data.patch_size=[64,64,64]", "patch_size"),
    ("data.test=[0.8,0.2]", "test"), ("data.spacing_mm=-1", "spacing_mm"), ("job.num_classes=1", "num_classes"),
    ("job.factor=[4,2]", "factor"), ("job.noise_sigma=[-1,0.1]", "noise_sigma"), ("train.steps=ten", "steps"),
    ("model.channels=[]", "channels"), ("model.channels=[8,-16]", "channels"), ("nonsense=1", "nonsense"),
    ("train.warmup=10", "warmup"),
])
def test_absurd_values_are_refused_before_work(tmp_path, override, key):
    result = run("train", CONFIG, "--out", tmp_path / "run", "--set", override)
    assert result.exit_code == 1 and key in error_line(result)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("override, start", [
    ("train.step=5", "error: --set train.step=5: unknown key (known: steps,"),
    ("train.lr=.nan", "error: --set train.lr=.nan: must be a finite number"),
    ("model.spade_hidden=0", "error: --set model.spade_hidden=0: must be at least 1"),
])
def test_a_bad_set_is_blamed_on_the_set_not_the_config_file(tmp_path, override, start):
    result = run("train", CONFIG, "--out", tmp_path / "run", "--set", "train.steps=3", "--set", override)
    assert result.exit_code == 1 and error_line(result).startswith(start)
    assert not (tmp_path / "run").exists()
