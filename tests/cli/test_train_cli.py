"""``medsynth train`` from the command line."""

from __future__ import annotations

import yaml
from typer.testing import CliRunner

from medsynth.cli import app
from tests.training.test_trainer import TINY_MODEL, TINY_TRAIN

runner = CliRunner()


def test_train_and_resume_from_the_cli(tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({"job": {"name": "generate"}, "data": {"patch_size": [16, 16]},
                                      "model": TINY_MODEL, "train": TINY_TRAIN}))
    run = tmp_path / "run"
    result = runner.invoke(app, ["train", str(config), "--out", str(run), "--device", "cpu", "--set", "train.steps=3"])
    assert result.exit_code == 0, result.stderr
    assert "trained 3 steps" in result.stdout and (run / "checkpoints" / "latest").exists()
    again = runner.invoke(app, ["train", str(config), "--out", str(run), "--set", "train.steps=3"])
    assert again.exit_code == 1 and again.stderr.startswith("error: ") and "--resume" in again.stderr
    resumed = runner.invoke(app, ["train", str(config), "--out", str(run), "--resume", "--set", "train.steps=4"])
    assert resumed.exit_code == 0, resumed.stderr
    assert (run / "checkpoints" / "latest").read_text().strip() == "step_0000004"


def test_config_errors_exit_1_with_the_key(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("job: {name: denoise}\ntrain: {stepz: 3}\n")
    result = runner.invoke(app, ["train", str(config), "--out", str(tmp_path / "r")])
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines()[-1].startswith("error: ") and "train.stepz: unknown key" in result.stderr
    missing = runner.invoke(app, ["train", str(tmp_path / "nope.yaml")])
    assert missing.exit_code == 1 and "cannot read config" in missing.stderr
    assert not (tmp_path / "r").exists()


def test_ctrl_c_stops_at_a_clean_point_and_resume_finishes(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({"job": {"name": "denoise"}, "data": {"patch_size": [16, 16]},
                                      "model": TINY_MODEL, "train": {**TINY_TRAIN, "steps": 100000,
                                                                     "checkpoint_every": 100000}}))
    run = tmp_path / "run"
    command = [sys.executable, "-m", "medsynth", "train", str(config), "--out", str(run)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (run / "log.csv").exists() and time.time() < deadline:
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130  # as for any interrupt
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("error: interrupted; checkpoint saved at step") and "--resume" in last
    step = int(last.split("at step ")[1].split()[0])
    assert (run / "checkpoints" / "latest").read_text().strip() == f"step_{step:07d}"
    result = runner.invoke(app, ["train", str(config), "--out", str(run), "--resume", "--set",
                                 f"train.steps={step + 2}"])
    assert result.exit_code == 0, result.stderr


def test_ready_made_gan_configs_train_from_the_cli(tmp_path):
    """The shipped GAN configs run end to end (shrunk with --set, the way a user tries a config)."""
    from pathlib import Path

    configs = Path(__file__).parent.parent.parent / "configs"
    shrink = ["model.channels=[8,16]", "model.spade_hidden=8", "model.discriminator_channels=8",
              "model.discriminator_layers=2", "train.steps=2", "train.batch_size=2", "train.sample_every=2",
              "train.checkpoint_every=2", "train.log_every=1"]
    for name, patch in (("super_resolve_3d_gan", "[16,16,16]"), ("generate_2d_gan", "[32,32]")):
        run = tmp_path / name
        args = ["train", str(configs / f"{name}.yaml"), "--out", str(run), "--device", "cpu",
                "--set", f"data.patch_size={patch}"]
        result = runner.invoke(app, args + [f"--set={s}" for s in shrink])
        assert result.exit_code == 0, result.stderr
        header = (run / "log.csv").read_text().splitlines()[0].split(",")
        assert {"loss_d", "loss_g", "d_real_accuracy", "diversity"} <= set(header)
