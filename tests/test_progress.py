"""Progress: a bar in a terminal, plain lines (first, every interval, last) without one."""

from __future__ import annotations

import yaml
from typer.testing import CliRunner

from medsynth.cli import app
from medsynth.progress import LineProgress, progress
from tests.training.test_trainer import TINY_MODEL, TINY_TRAIN


def test_plain_lines_show_the_first_and_last_item_with_rate_eta_and_postfix(capsys):
    bar = LineProgress(range(5), desc="train", unit="step", total=None, interval=3600)
    seen = []
    for step in bar:
        seen.append(step)
        bar.set_postfix({"loss": f"{1 / (step + 1):.2f}"})
    bar.close()
    assert seen == [0, 1, 2, 3, 4]
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2  # the first and the last: an hour-long interval holds the rest back
    assert lines[0].startswith("train: 1/5 steps (20%), ") and "ETA" in lines[0] and lines[0].endswith("loss=1.00")
    assert lines[1].startswith("train: 5/5 steps (100%), ") and "ETA" not in lines[1] and lines[1].endswith("loss=0.20")


def test_plain_lines_every_interval_and_a_resumed_count(capsys):
    bar = LineProgress(range(7, 10), desc="train", unit="step", total=10, initial=7, interval=0)
    list(bar)
    bar.close()
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(",")[0] for line in lines] == ["train: 8/10 steps (80%)", "train: 9/10 steps (90%)",
                                                      "train: 10/10 steps (100%)"]


def test_an_interrupted_loop_says_where_it_stopped(capsys):
    bar = LineProgress(range(100), desc="augment", unit="image", total=None, interval=3600)
    for k in bar:
        if k == 41:
            break
    bar.close()
    assert capsys.readouterr().err.splitlines()[-1].startswith("augment: 41/100 images (41%)")


def test_disabled_progress_writes_nothing(capsys):
    assert list(progress(range(3), desc="x", enabled=False)) == [0, 1, 2]
    assert capsys.readouterr().err == ""


def test_train_without_a_terminal_logs_steps_and_a_loss_from_the_first_step(tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({"job": {"name": "denoise"}, "data": {"patch_size": [16, 16]},
                                      "model": TINY_MODEL, "train": {**TINY_TRAIN, "log_every": 10}}))
    result = CliRunner().invoke(app, ["train", str(config), "--out", str(tmp_path / "run"), "--device", "cpu",
                                      "--set", "train.steps=3"])
    assert result.exit_code == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("train: ")]
    assert lines[0].startswith("train: 1/3 steps (33%)") and "loss=" in lines[0]  # before the first log row
    assert lines[-1].startswith("train: 3/3 steps (100%)")
