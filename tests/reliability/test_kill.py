"""SIGKILL at random moments: training resumes to the same weights, augment completes its set exactly.

Each kill lands a random moment after the command has logged 1-15 more steps (train) or
outputs (augment) than before: while it steps, writes a checkpoint or writes an output file.
``MEDSYNTH_KILLS`` sets how many kills (default 4 in CI); docs/reliability.md has the figures of a
long run.
"""

from __future__ import annotations

import csv
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
import yaml
from safetensors.torch import load_file

from medsynth.training import RunDirectory, Trainer, load_experiment
from tests.reliability import write_axial_slices
from tests.synthesis.test_augment import train_tiny
from tests.training.test_trainer import TINY_MODEL, TINY_TRAIN

KILLS = int(os.environ.get("MEDSYNTH_KILLS", 4))
STEPS = 30 * KILLS  # enough work that every kill lands before the run can finish


def rows(path: Path) -> int:
    """Data rows of a CSV file that may be missing or half-written."""
    try:
        return max(0, len(path.read_text().splitlines()) - 1)
    except OSError:
        return 0


def kill_during_work(command: list[str], progress: Path, rng: random.Random) -> int | None:
    """Run ``command``; SIGKILL it a random moment after ``progress`` (a CSV log) has gained 1-15 rows,
    so that kills land while it works, however fast the machine. Returns the exit code if it ended first."""
    target = rows(progress) + rng.randint(1, 15)
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while process.poll() is None and rows(progress) < target and time.time() < deadline:
        time.sleep(0.01)
    time.sleep(rng.uniform(0.0, 0.05))
    if process.poll() is not None:
        return process.returncode
    process.send_signal(signal.SIGKILL)
    process.wait()
    return None


def test_training_killed_at_random_resumes_to_the_uninterrupted_weights(tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({"job": {"name": "denoise"}, "data": {"patch_size": [16, 16]}, "model": TINY_MODEL,
                                      "train": {**TINY_TRAIN, "steps": STEPS, "checkpoint_every": 3, "log_every": 1}}))
    reference = Trainer(load_experiment(config), tmp_path / "reference", device="cpu", progress=False).fit()
    run = tmp_path / "run"
    rng = random.Random(0)
    kills = 0
    for _ in range(KILLS + 20):
        resume = ["--resume"] if (run / "config.yaml").exists() else []
        command = [sys.executable, "-m", "medsynth", "train", str(config), "--out", str(run), "--device", "cpu"]
        code = kill_during_work(command + resume, run / "log.csv", rng) if kills < KILLS else \
            subprocess.run(command + resume, capture_output=True).returncode
        if code is None:
            kills += 1
            if RunDirectory(run).latest_checkpoint() is not None:
                RunDirectory(run).load_checkpoint()  # the latest checkpoint is always complete and verified
            continue
        assert code == 0
        break
    assert kills == KILLS
    final = load_file(run / "checkpoints" / f"step_{STEPS:07d}" / "model.safetensors")
    expected = load_file(tmp_path / "reference" / "checkpoints" / f"step_{STEPS:07d}" / "model.safetensors")
    assert all(torch.equal(final[k], expected[k]) for k in expected)
    assert reference["steps"] == STEPS
    assert not [p for p in (run / "checkpoints").iterdir() if p.name.startswith(".")]  # no temporaries left
    with open(run / "log.csv", newline="") as handle:
        assert [int(r["step"]) for r in csv.DictReader(handle)] == list(range(1, STEPS + 1))


def test_augment_killed_at_random_completes_exactly_its_set(tmp_path, mni):
    model = train_tiny(tmp_path)
    write_axial_slices(tmp_path, mni, [30 + 6 * k for k in range(6)], suffix=".nii.gz")
    base = [sys.executable, "-m", "medsynth", "augment", str(tmp_path / "in")]
    options = ["--model", str(model), "--labels", str(tmp_path / "lab"), "--per-image", "3", "--device", "cpu"]
    assert subprocess.run(base + [str(tmp_path / "reference")] + options, capture_output=True).returncode == 0
    rng = random.Random(1)
    out = tmp_path / "out"
    for _ in range(KILLS):
        kill_during_work(base + [str(out)] + options, out / "manifest.csv", rng)
    finished = subprocess.run(base + [str(out)] + options, capture_output=True, text=True)
    assert finished.returncode == 0, finished.stderr
    with open(out / "manifest.csv", newline="") as handle:
        listed = sorted(Path(r["output"]).name for r in csv.DictReader(handle))
    on_disk = sorted(p.name for p in (out / "images").iterdir())
    assert listed == on_disk and len(on_disk) == 18  # the manifest lists exactly the files on disk
    for name in on_disk:  # every file complete, and equal to the uninterrupted run's
        got = np.asarray(nib.load(out / "images" / name).dataobj)
        want = np.asarray(nib.load(tmp_path / "reference" / "images" / name).dataobj)
        np.testing.assert_array_equal(got, want)
    assert not [p for p in out.rglob(".*") if ".tmp-" in p.name]


def test_ctrl_c_in_augment_stops_cleanly_and_a_rerun_continues(tmp_path, mni):
    model = train_tiny(tmp_path)
    write_axial_slices(tmp_path, mni, [36, 37, 38, 39])
    command = [sys.executable, "-m", "medsynth", "augment", str(tmp_path / "in"), str(tmp_path / "out"), "--model",
               str(model), "--labels", str(tmp_path / "lab"), "--per-image", "40", "--device", "cpu"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (tmp_path / "out" / "manifest.csv").exists() and time.time() < deadline:
        time.sleep(0.1)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130 and "running the same command again continues" in stderr.strip().splitlines()[-1]
    finished = subprocess.run(command, capture_output=True, text=True)
    assert finished.returncode == 0 and "already done" in finished.stderr
    assert len(list((tmp_path / "out" / "images").iterdir())) == 160  # enough work that Ctrl-C lands mid-run
