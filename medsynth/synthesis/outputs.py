"""The record of a synthesis output folder: ``manifest.csv``, ``dataset.json`` and the settings.

A row is appended to the manifest, in one write, only after its files are complete on disk
(written atomically), so an interrupted run leaves a manifest whose rows all have their files,
and a rerun skips exactly what is done. Appending keeps the cost of each output constant; the
manifest is rewritten in full (sorted, stale rows dropped) only when a run opens and when it
finishes, and ``dataset.json`` is written when the run finishes or is interrupted.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from medsynth.errors import MedsynthError, describe, display
from medsynth.io.files import (
    append_line,
    atomic_path,
    check_regular_file,
    csv_line,
    read_text_file,
    remove_leftovers,
    write_json,
)

COLUMNS = ["output", "label", "source", "model", "family", "job", "seed", "sampler", "steps", "seconds"]


def _exists(folder: Path, relative: str | None) -> bool:
    return bool(relative) and (folder / relative).exists()


def read_csv_rows(path: Path) -> list[dict[str, str]]:
    """The rows of a CSV file medsynth wrote, tolerating a damaged file (rows with missing cells are dropped)."""
    check_regular_file(path, kind="manifest")  # a FIFO would block the read
    try:
        with open(path, newline="", encoding="utf-8", errors="replace") as handle:
            return [row for row in csv.DictReader(handle) if None not in row.values() and None not in row]
    except OSError as err:
        raise MedsynthError(f"{display(path)}: cannot read ({describe(err)})") from None


class OutputRecord:
    """``manifest.csv`` + ``dataset.json`` + ``settings.json`` of one output folder.

    Args:
        folder: the output folder.
        settings: what produced the outputs (model run, seed, ...); a folder made with other
            settings is refused rather than mixed.
        dataset_json: writes ``dataset.json`` from the entries (``{"image": ..., "label": ...}``,
            paths relative to ``folder``): a MONAI datalist or nnU-Net's dataset.json.
        part: in a distributed run, this process's name (e.g. ``rank1``): its rows go to a hidden
            partial manifest that :meth:`finish` (rank 0, at the end) folds into the main one.
    """

    def __init__(self, folder: Path, settings: dict[str, Any], dataset_json: Callable[[list[dict[str, str]]], Path],
                 part: str | None = None) -> None:
        self.folder = folder
        self.dataset_json = dataset_json
        self.part = part
        settings_path = folder / "settings.json"
        if settings_path.exists():
            try:
                saved = json.loads(read_text_file(settings_path))
            except ValueError as err:
                raise MedsynthError(f"{display(settings_path)}: cannot read ({describe(err)}); choose another output "
                                    "folder") from None
            saved = saved if isinstance(saved, dict) else {}
            changed = sorted(k for k in set(saved) | set(settings) if saved.get(k) != settings.get(k))
            if changed:
                raise MedsynthError(f"{display(folder)}: holds outputs made with other settings "
                                    f"({', '.join(changed)}); choose another output folder or rerun with the same "
                                    "options")
        self.rows: dict[str, dict[str, str]] = {}
        self._read(folder / "manifest.csv")
        if part is not None:
            self._read(self._manifest_path)
        write_json(settings_path, settings)
        self._rewrite_manifest()

    @property
    def _manifest_path(self) -> Path:
        return self.folder / ("manifest.csv" if self.part is None else f".manifest.{self.part}.csv")

    def _read(self, manifest: Path) -> None:
        """Add the rows of ``manifest`` whose files exist (a row never outlives its files)."""
        if not manifest.exists():
            return
        for row in read_csv_rows(manifest):
            if _exists(self.folder, row.get("output")) and (not row.get("label") or _exists(self.folder, row["label"])):
                self.rows[row["output"]] = {k: row.get(k) or "" for k in COLUMNS}

    def done(self, output: str) -> bool:
        return output in self.rows

    def add(self, row: dict[str, Any]) -> None:
        """Record one output whose files are complete: one line appended to the manifest."""
        clean = {k: "" if row.get(k) is None else display(str(row[k])) for k in COLUMNS}
        self.rows[clean["output"]] = clean
        path = self._manifest_path
        try:
            if not path.exists() or path.stat().st_size == 0:
                append_line(path, csv_line(COLUMNS))
            append_line(path, csv_line([clean[k] for k in COLUMNS]))
        except OSError as err:
            raise MedsynthError(f"{display(path)}: cannot write the manifest ({err.strerror or err})") from None

    def finish(self) -> None:
        """Fold every partial manifest of a distributed run in, rewrite ``manifest.csv`` sorted, and
        write ``dataset.json`` listing every recorded output. Temporaries that killed
        earlier runs left in the folder are deleted."""
        self.part = None
        remove_leftovers(self.folder, recursive=True)
        parts = sorted(self.folder.glob(".manifest.*.csv"))
        for path in parts:
            self._read(path)
        self._rewrite_manifest(always=True)
        rows = self._sorted()
        entries = [{"image": r["output"], **({"label": r["label"]} if r["label"] else {})} for r in rows]
        try:
            self.dataset_json(entries)
        except OSError as err:
            raise MedsynthError(f"{display(self.folder)}: cannot write dataset.json ({err.strerror or err})") from None
        for path in parts:
            path.unlink()

    def _sorted(self) -> list[dict[str, str]]:
        return [self.rows[k] for k in sorted(self.rows)]

    def _rewrite_manifest(self, always: bool = False) -> None:
        """The manifest as exactly the recorded rows, sorted (drops rows whose files are gone and any damaged line)."""
        if not always and not self.rows and not self._manifest_path.exists():
            return
        text = csv_line(COLUMNS) + "".join(csv_line([r[k] for k in COLUMNS]) for r in self._sorted())
        try:
            with atomic_path(self._manifest_path) as tmp:
                tmp.write_text(text, encoding="utf-8")
        except OSError as err:
            raise MedsynthError(f"{display(self._manifest_path)}: cannot write the manifest "
                                f"({err.strerror or err})") from None


def relative(path: Path, folder: Path) -> str:
    return os.path.relpath(path, folder).replace(os.sep, "/")
