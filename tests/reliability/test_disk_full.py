"""A full disk, simulated by a file-size limit (RLIMIT_FSIZE: writes past it fail with EFBIG, as on a
full disk): a one-line error, nothing half-written, and the work resumes once there is room."""

from __future__ import annotations

import csv
import resource
import signal
import subprocess
import sys
from pathlib import Path

import yaml

from medsynth.training import RunDirectory
from tests.reliability import write_axial_slices
from tests.synthesis.test_augment import train_tiny
from tests.training.test_trainer import TINY_MODEL, TINY_TRAIN


def run_limited(command: list[str], limit_bytes: int | None) -> subprocess.CompletedProcess:
    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # write() then fails with EFBIG instead of killing
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    return subprocess.run(command, capture_output=True, text=True, preexec_fn=limit if limit_bytes else None)


def leftovers(folder: Path) -> list[Path]:
    return [p for p in folder.rglob(".*") if ".tmp-" in p.name]


def one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert lines and lines[-1].startswith("error: ") and "Traceback" not in stderr, stderr
    return lines[-1]


def test_checkpoint_on_a_full_disk_fails_cleanly_and_resumes(tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({"job": {"name": "denoise"}, "data": {"patch_size": [16, 16]}, "model": TINY_MODEL,
                                      "train": {**TINY_TRAIN, "steps": 4, "checkpoint_every": 2, "sample_every": 4}}))
    run = tmp_path / "run"
    command = [sys.executable, "-m", "medsynth", "train", str(config), "--out", str(run), "--device", "cpu"]
    full = run_limited(command, 20_000)  # config and log fit; a checkpoint (~200 kB) does not
    assert full.returncode == 1
    assert "cannot write checkpoint" in one_error_line(full.stderr) and "File too large" in full.stderr
    assert RunDirectory(run).latest_checkpoint() is None and not leftovers(run)
    resumed = run_limited(command + ["--resume"], None)
    assert resumed.returncode == 0, resumed.stderr
    assert (run / "checkpoints" / "latest").read_text().strip() == "step_0000004"


def test_augment_on_a_full_disk_fails_cleanly_and_completes_later(tmp_path, mni):
    model = train_tiny(tmp_path)
    write_axial_slices(tmp_path, mni, [40, 41, 42])
    out = tmp_path / "out"
    command = [sys.executable, "-m", "medsynth", "augment", str(tmp_path / "in"), str(out), "--model", str(model),
               "--labels", str(tmp_path / "lab"), "--per-image", "2", "--device", "cpu"]
    full = run_limited(command, 30_000)  # a 99x117 float image is ~46 kB: the first image write fails
    assert full.returncode == 1
    assert "File too large" in one_error_line(full.stderr)
    assert not leftovers(out) and not list((out / "images").glob("*")) if (out / "images").exists() else True
    done = run_limited(command, None)
    assert done.returncode == 0, done.stderr
    with open(out / "manifest.csv", newline="") as handle:
        listed = sorted(Path(r["output"]).name for r in csv.DictReader(handle))
    assert listed == sorted(p.name for p in (out / "images").iterdir()) and len(listed) == 6
