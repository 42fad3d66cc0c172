"""Convert every NIfTI file and DICOM series under a path to NIfTI or DICOM, geometry kept."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Literal

from tqdm.auto import tqdm

from medsynth.errors import MedsynthError
from medsynth.io.dicom_write import write_dicom_series
from medsynth.io.discovery import find_images
from medsynth.io.files import prepare_output_dir, write_datalist
from medsynth.io.nifti import write_nifti

log = logging.getLogger("medsynth")
OutputFormat = Literal["nifti", "dicom"]


def convert(
    input_path: str | os.PathLike,
    output_dir: str | os.PathLike,
    output_format: OutputFormat = "nifti",
    skip_invalid: bool = False,
    progress: bool = True,
) -> list[dict[str, str]]:
    """Convert all images under ``input_path`` into ``output_dir`` and write ``dataset.json``.

    One output per NIfTI file or DICOM series: ``<name>.nii.gz`` or a ``<name>/`` DICOM series
    folder, where ``name`` comes from the file stem or the series number and description
    (made file-name safe). All outputs are staged and moved into place only once every input
    has been read, so a failure leaves no partial output. Nothing is written under the input.

    Args:
        input_path: a file or a folder (searched recursively).
        output_dir: created if needed; must not lie inside the input folder.
        output_format: ``"nifti"`` or ``"dicom"``.
        skip_invalid: warn about and skip inputs that cannot be read (e.g. localizers with
            several orientations in one series) instead of failing.
        progress: show a progress bar.

    Returns:
        The datalist entries written: ``{"image": relative output path, "source": relative
        input path, "modality": ...}``.

    Raises:
        MedsynthError: no image found, an input is invalid (unless ``skip_invalid``), or the
            output cannot be written.
    """
    if output_format not in ("nifti", "dicom"):
        raise MedsynthError(f"unknown output format {output_format!r}; use 'nifti' or 'dicom'")
    input_path = Path(input_path)
    sources = find_images(input_path)
    out = prepare_output_dir(output_dir, input_path)
    input_root = input_path if input_path.is_dir() else input_path.parent
    entries: list[dict[str, str]] = []
    staging = Path(tempfile.mkdtemp(prefix=".medsynth-staging-", dir=out))
    try:
        for source in tqdm(sources, desc="convert", unit="image", disable=not progress or None):
            try:
                image = source.read()
            except MedsynthError as err:
                if not skip_invalid:
                    raise
                log.warning("skipped %s", err)
                continue
            target = f"{source.name}.nii.gz" if output_format == "nifti" else source.name
            if output_format == "nifti":
                write_nifti(image, staging / target)
            else:
                write_dicom_series(image, staging / target, series_description=image.meta.get("series_description")
                                   or source.name, uid_seed=None)
            entries.append({"image": target, "source": os.path.relpath(source.path, input_root),
                            "modality": str(image.meta.get("modality", "unknown"))})
        if not entries:
            raise MedsynthError(f"{input_path}: none of the {len(sources)} images could be converted")
        for entry in entries:
            _replace(staging / entry["image"], out / entry["image"])
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    write_datalist(out, entries, f"medsynth convert of {input_path.name} ({output_format})")
    return entries


def _replace(staged: Path, target: Path) -> None:
    """Move a staged file or folder onto ``target``, replacing an older output of that name."""
    if target.is_dir() and not target.is_symlink():
        shutil.rmtree(target)
    os.replace(staged, target)
