"""The record of a synthesis output folder: ``manifest.csv``, ``dataset.json`` and the settings.

Rows are added only after their files are complete on disk (written atomically); the manifest
and the datalist are rewritten atomically after every output, from rows whose files exist.
So an interrupted run leaves a consistent folder, and a rerun skips exactly what is done.
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Any

from medsynth.errors import MedsynthError
from medsynth.io.files import atomic_path, write_datalist, write_json

COLUMNS = ["output", "label", "source", "model", "family", "job", "seed", "sampler", "steps", "seconds"]


def _exists(folder: Path, relative: str) -> bool:
    return bool(relative) and (folder / relative).exists()


class OutputRecord:
    """``manifest.csv`` + ``dataset.json`` + ``settings.json`` of one output folder.

    Args:
        folder: the output folder.
        settings: what produced the outputs (model run, seed, ...); a folder made with other
            settings is refused rather than mixed.
        description: the datalist's description.
        part: in a distributed run, this process's name (e.g. ``rank1``): its rows go to a hidden
            partial manifest that :meth:`merge_parts` (rank 0, at the end) folds into the main one.
    """

    def __init__(self, folder: Path, settings: dict[str, Any], description: str, part: str | None = None) -> None:
        self.folder = folder
        self.description = description
        self.part = part
        settings_path = folder / "settings.json"
        if settings_path.exists():
            saved = json.loads(settings_path.read_text())
            changed = sorted(k for k in set(saved) | set(settings) if saved.get(k) != settings.get(k))
            if changed:
                raise MedsynthError(f"{folder}: holds outputs made with other settings ({', '.join(changed)}); "
                                    "choose another output folder or rerun with the same options")
        self.rows: list[dict[str, str]] = []
        self._read(folder / "manifest.csv")
        if part is not None:
            self._read(self._manifest_path)
        write_json(settings_path, settings)

    @property
    def _manifest_path(self) -> Path:
        return self.folder / ("manifest.csv" if self.part is None else f".manifest.{self.part}.csv")

    def _read(self, manifest: Path) -> None:
        """Add the rows of ``manifest`` whose files exist (a row never outlives its files)."""
        if not manifest.exists():
            return
        with open(manifest, newline="", encoding="utf-8") as handle:
            for row in csv.DictReader(handle):
                files = [row["output"]] + ([row["label"]] if row["label"] else [])
                if all(_exists(self.folder, f) for f in files) and not self.done(row["output"]):
                    self.rows.append(row)

    def done(self, output: str) -> bool:
        return any(row["output"] == output for row in self.rows)

    def add(self, row: dict[str, Any]) -> None:
        self.rows = [r for r in self.rows if r["output"] != row["output"]] + [
            {k: "" if row.get(k) is None else str(row[k]) for k in COLUMNS}]
        self.write()

    def merge_parts(self) -> None:
        """Fold every partial manifest of a distributed run into ``manifest.csv`` and the datalist."""
        self.part = None
        parts = sorted(self.folder.glob(".manifest.*.csv"))
        for path in parts:
            self._read(path)
        self.write()
        for path in parts:
            path.unlink()

    def write(self) -> None:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        rows = sorted(self.rows, key=lambda r: r["output"])
        writer.writerows(rows)
        try:
            with atomic_path(self._manifest_path) as tmp:
                tmp.write_text(buffer.getvalue(), encoding="utf-8")
            if self.part is not None:
                return
            entries = [{"image": r["output"], **({"label": r["label"]} if r["label"] else {})} for r in rows]
            write_datalist(self.folder, entries, self.description)
        except OSError as err:
            raise MedsynthError(f"{self.folder}: cannot write the manifest ({err.strerror or err})") from None


def relative(path: Path, folder: Path) -> str:
    return os.path.relpath(path, folder).replace(os.sep, "/")
