"""The run directory: a self-describing record of one training run.

```
RUN_DIR/
  config.yaml                     resolved config (every default written out)
  .medsynth.lock                  held by the process training into the run (released on any exit)
  log.csv                         step, losses, learning rate, seconds
  samples/step_0000250.png        condition | sample | real, every train.sample_every steps
  checkpoints/latest              name of the newest complete checkpoint
  checkpoints/step_0000250/       model.safetensors, ema.safetensors, trainer_state.pt, checksums.json
  summary.json                    wall time, steps/s, peak memory (written at the end)
```

A checkpoint folder is written in full under a temporary name and renamed into place, then
``latest`` is replaced atomically: a run killed at any moment leaves ``latest`` pointing at a
complete checkpoint, and every file's SHA-256 is verified when it is loaded. Weights are
safetensors; the trainer state holds only tensors and plain numbers and is loaded with
``torch.load(weights_only=True)``, so loading never unpickles code.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import os
import re
import shutil
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from medsynth.config import parse_yaml
from medsynth.errors import MedsynthError, describe, display
from medsynth.io.files import (
    append_line,
    atomic_path,
    check_regular_file,
    csv_line,
    folder_lock,
    read_text_file,
    write_json,
)
from medsynth.training.experiment import ExperimentConfig, experiment_from_dict, experiment_to_dict

KEEP_CHECKPOINTS = 2
CHECKPOINT_FILES = ("model.safetensors", "ema.safetensors", "trainer_state.pt")
CHECKSUMS = "checksums.json"
#: what ``checkpoints/latest`` may hold: the name of a checkpoint folder beside it, nothing else
CHECKPOINT_NAME = re.compile(r"step_\d{7,}")


def checkpoint_name(step: int) -> str:
    return f"step_{step:07d}"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _verify(folder: Path) -> None:
    """Compare every checkpoint file with the SHA-256 written beside it (checkpoints from before
    checksums existed have none and are not checked)."""
    listing = folder / CHECKSUMS
    if not listing.exists():
        return
    try:
        expected = json.loads(read_text_file(listing, max_bytes=1 << 16))
        for name in CHECKPOINT_FILES:
            if _sha256(folder / name) != expected[name]:
                raise MedsynthError(f"{folder / name}: checksum mismatch (the checkpoint was corrupted or changed "
                                    "after it was written)")
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise MedsynthError(f"{folder}: cannot verify checkpoint ({describe(err)})") from None


class RunDirectory:
    """Paths and safe reads/writes of one run directory."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.config_path = self.path / "config.yaml"
        self.log_path = self.path / "log.csv"
        self.samples = self.path / "samples"
        self.checkpoints = self.path / "checkpoints"

    def exists(self) -> bool:
        return self.config_path.exists()

    # config -------------------------------------------------------------------------------------
    def write_config(self, config: ExperimentConfig) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.config_path) as tmp:
            tmp.write_text(yaml.safe_dump(experiment_to_dict(config), sort_keys=False), encoding="utf-8")

    def read_config(self) -> ExperimentConfig:
        """The run's saved config, validated like a new one (a hand-edited file gets a clear error)."""
        if not self.path.exists():
            raise MedsynthError(f"{display(self.path)}: no such folder")
        if not self.config_path.exists():
            raise MedsynthError(f"{display(self.path)}: not a medsynth run directory (no config.yaml)")
        data = parse_yaml(read_text_file(self.config_path, kind="config"), display(self.config_path))
        if not isinstance(data, dict):
            raise MedsynthError(f"{display(self.config_path)}: a config must be a mapping of keys to values")
        return experiment_from_dict(data, display(self.config_path))

    def continued_config(self, config: ExperimentConfig, *, may_differ: Collection[str] = ()) -> ExperimentConfig:
        """The config that continuing (or reusing) this run with ``config`` trains: the run's own, with
        ``config``'s ``train.steps``. Any other difference is refused, naming the fields, except the
        dotted fields of ``may_differ`` (e.g. sampling settings, which do not change what a run
        learns); the run's own values of those are kept. A run is only ever continued, or reused,
        by the config that trained it."""
        saved = self.read_config()
        requested, stored = experiment_to_dict(config), experiment_to_dict(saved)
        requested["train"]["steps"] = stored["train"]["steps"]
        differ = [key for key in _differences(stored, requested) if key not in may_differ]
        if differ:
            raise MedsynthError(f"{display(self.path)}: the config differs from the run's in {', '.join(differ)}; "
                                "only train.steps may change when a run is continued")
        saved.train.steps = config.train.steps
        return saved

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the run directory for one process: a second ``train`` into it stops with a clear error."""
        with folder_lock(self.path, "run directory"):
            yield

    # checkpoints --------------------------------------------------------------------------------
    def sample_grid(self, step: int) -> Path:
        """The preview PNG of ``step`` (named like its checkpoint)."""
        return self.samples / f"{checkpoint_name(step)}.png"

    def latest_checkpoint(self) -> Path | None:
        """The checkpoint folder ``checkpoints/latest`` names, checked to be a real ``step_N`` folder of this run."""
        pointer = self.checkpoints / "latest"
        if not pointer.exists():
            return None
        try:
            name = read_text_file(pointer, max_bytes=64).strip()
        except MedsynthError:
            name = None
        if name is None or not CHECKPOINT_NAME.fullmatch(name):
            raise MedsynthError(f"{display(pointer)}: does not name a checkpoint of this run (expected step_NNNNNNN)")
        folder = self.checkpoints / name
        if folder.is_symlink() or not folder.is_dir():
            raise MedsynthError(f"{display(pointer)}: points to a missing checkpoint {name!r}")
        return folder

    def is_finished(self, steps: int) -> bool:
        """Whether the latest checkpoint is that of step ``steps``: the run was trained to the end."""
        latest = self.latest_checkpoint()
        return latest is not None and latest.name == checkpoint_name(steps)

    def save_checkpoint(self, step: int, model: dict[str, torch.Tensor], ema: dict[str, torch.Tensor],
                        state: dict[str, Any]) -> Path:
        """Write a complete checkpoint for ``step`` and make it the latest; keep the newest two."""
        name = checkpoint_name(step)
        target = self.checkpoints / name
        try:
            with atomic_path(target) as tmp:
                tmp.mkdir(parents=True)
                save_file(_plain(model), tmp / "model.safetensors")
                save_file(_plain(ema), tmp / "ema.safetensors")
                torch.save(state, tmp / "trainer_state.pt")
                write_json(tmp / CHECKSUMS, {name: _sha256(tmp / name) for name in CHECKPOINT_FILES})
            with atomic_path(self.checkpoints / "latest") as tmp:
                tmp.write_text(name + "\n", encoding="utf-8")
        except (OSError, SafetensorError) as err:  # safetensors reports a full disk as its own error type
            raise MedsynthError(f"{target}: cannot write checkpoint ({describe(err)})") from None
        old = sorted(p for p in self.checkpoints.glob("step_*") if p.is_dir() and p.name != name)
        for folder in old[: max(0, len(old) - (KEEP_CHECKPOINTS - 1))]:
            shutil.rmtree(folder, ignore_errors=True)
        return target

    def load_checkpoint(self, folder: Path | None = None) -> tuple[dict, dict, dict]:
        """``(model, ema, trainer_state)`` of ``folder`` (default: the latest)."""
        folder = folder or self.latest_checkpoint()
        if folder is None:
            raise MedsynthError(f"{display(self.path)}: run has no checkpoint yet")
        for name in CHECKPOINT_FILES:  # a planted symlink (to /dev/zero, or to another run) is not read
            path = folder / name
            if path.is_symlink() or not path.is_file():
                raise MedsynthError(f"{display(path)}: missing, or not a regular file")
        _verify(folder)
        try:
            model = load_file(folder / "model.safetensors")
            ema = load_file(folder / "ema.safetensors")
            state = torch.load(folder / "trainer_state.pt", weights_only=True, map_location="cpu")
        except Exception as err:  # safetensors/pickle errors on corrupt or hostile files
            raise MedsynthError(f"{folder}: cannot load checkpoint ({describe(err)})") from None
        return model, ema, state

    # log ----------------------------------------------------------------------------------------
    def truncate_log(self, step: int) -> None:
        """Keep the header and the rows up to ``step`` (those a resume from that checkpoint does not
        repeat); a row cut short by a kill or a full disk, or any other unreadable row, is dropped."""
        if not self.log_path.exists() and not self.log_path.is_symlink():
            return
        check_regular_file(self.log_path, kind="log")  # a FIFO would block the read
        try:
            with open(self.log_path, newline="", encoding="utf-8", errors="replace") as handle:
                rows = list(csv.reader(handle))
        except OSError as err:
            raise MedsynthError(f"{display(self.log_path)}: cannot read the log ({describe(err)})") from None
        header = rows[0] if rows and rows[0][:1] == ["step"] else None
        kept = [r for r in rows[1:] if header and len(r) == len(header) and _step(r[0]) is not None
                and _step(r[0]) <= step]
        try:
            with atomic_path(self.log_path) as tmp:
                if header:
                    tmp.write_text("".join(csv_line(r) for r in [header, *kept]), encoding="utf-8")
                else:
                    tmp.write_text("", encoding="utf-8")
        except OSError as err:
            raise MedsynthError(f"{display(self.log_path)}: cannot rewrite the log ({describe(err)})") from None

    def append_log(self, row: dict[str, float]) -> None:
        """Append one row (and the header first, to a new log) in a single write: a kill or a full disk
        never leaves half a row."""
        new = not self.log_path.exists() or self.log_path.stat().st_size == 0
        try:
            if new:
                append_line(self.log_path, csv_line(list(row)))
            append_line(self.log_path, csv_line(list(row.values())))
        except OSError as err:
            raise MedsynthError(f"{display(self.log_path)}: cannot append to the log ({err.strerror or err})") from None

    def read_log(self) -> list[dict[str, float]]:
        if not self.log_path.exists():
            return []
        check_regular_file(self.log_path, kind="log")
        with open(self.log_path, newline="") as handle:
            return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(handle)]

    def write_summary(self, summary: dict[str, Any]) -> None:
        write_json(self.path / "summary.json", summary)


def _differences(a: dict, b: dict, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two nested dicts."""
    keys = []
    for key in sorted(set(a) | set(b)):
        left, right = a.get(key), b.get(key)
        if isinstance(left, dict) and isinstance(right, dict):
            keys += _differences(left, right, f"{prefix}{key}.")
        elif left != right:
            keys.append(f"{prefix}{key}")
    return keys


def _step(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


def _plain(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Contiguous CPU copies (safetensors refuses shared or strided storage)."""
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
