"""Convert every NIfTI file and DICOM series under a path to NIfTI or DICOM, geometry kept."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Literal

import numpy as np

from medsynth.errors import MedsynthError, display
from medsynth.io.dicom_seg import write_dicom_seg
from medsynth.io.dicom_write import write_dicom_series
from medsynth.io.discovery import find_input_images
from medsynth.io.files import (
    NNUNET_IMAGE,
    NNUNET_LABEL,
    check_separate,
    folder_lock,
    inside_output,
    prepare_output_dir,
    write_datalist,
    write_nnunet_dataset,
)
from medsynth.io.nifti import write_nifti
from medsynth.io.pairing import check_label, pair_labels
from medsynth.progress import progress as show_progress

log = logging.getLogger("medsynth")
#: largest label value of an nnU-Net layout (its labels are 0..K, one name each)
MAX_NNUNET_LABEL = 1000  # and of a DICOM SEG (one segment per value)
OutputFormat = Literal["nifti", "dicom"]


def convert(
    input_path: str | os.PathLike,
    output_dir: str | os.PathLike,
    output_format: OutputFormat = "nifti",
    labels_path: str | os.PathLike | None = None,
    skip_invalid: bool = False,
    progress: bool = True,
    layout: str = "monai",
) -> list[dict[str, str]]:
    """Convert all images under ``input_path`` into ``output_dir`` and write ``dataset.json``.

    One output per NIfTI file or DICOM series: ``images/<name>.nii.gz`` or an ``images/<name>/``
    DICOM series folder, where ``name`` comes from the file stem or the series number and
    description (made file-name safe). With ``labels_path``, each image's label map (matched by
    name, checked to be integer and on the image grid) goes to ``labels/<name>.nii.gz`` (a DICOM
    SEG ``labels/<name>.dcm`` with DICOM output). All
    outputs are staged and moved into place only once every input has been read, so a failure
    leaves no partial output. Nothing is written under the input folders.

    Args:
        input_path: a file or a folder (searched recursively).
        output_dir: created if needed; must not lie inside an input folder.
        output_format: ``"nifti"`` or ``"dicom"`` (image series, with label maps as DICOM SEG files
            that reference them: ``labels/<name>.dcm``).
        labels_path: optional folder of label maps named like the images.
        skip_invalid: warn about and skip inputs that cannot be read (e.g. localizers with
            several orientations in one series) instead of failing.
        progress: show a progress bar.
        layout: ``monai`` (above), or ``nnunet``: nnU-Net v2's raw dataset,
            ``imagesTr/<name>_0000.nii.gz`` and ``labelsTr/<name>.nii.gz`` with its ``dataset.json``
            (labels ``class_1``... up to the largest value found; needs ``labels_path`` and NIfTI).

    Returns:
        The datalist entries written: ``{"image": ..., ["label": ...,] "source": ...,
        "modality": ...}``, paths relative to ``output_dir`` (``source``: to the input).

    Raises:
        MedsynthError: no image found, an input is invalid (unless ``skip_invalid``), or the
            output cannot be written.
    """
    if output_format not in ("nifti", "dicom"):
        raise MedsynthError(f"unknown output format {output_format!r}; use 'nifti' or 'dicom'")
    if layout not in ("monai", "nnunet"):
        raise MedsynthError(f"--layout {layout}: use monai or nnunet")
    if layout == "nnunet" and (labels_path is None or output_format != "nifti"):
        raise MedsynthError("--layout nnunet: nnU-Net trains on NIfTI image + label pairs; give --labels and "
                            "keep --format nifti")
    input_path = Path(input_path)
    check_separate(output_dir, [input_path, labels_path], "output folder")
    sources = find_input_images(input_path, labels_path)
    pairs = pair_labels(sources, labels_path) if labels_path is not None else [(s, None) for s in sources]
    out = prepare_output_dir(output_dir, input_path, labels_path)
    input_root = input_path if input_path.is_dir() else input_path.parent
    entries: list[dict[str, str]] = []
    largest = 0  # label value, for nnU-Net's labels
    with folder_lock(out, "output folder"):  # two converts into one folder would mix their datalists
        staging = Path(tempfile.mkdtemp(prefix=".medsynth-staging-", dir=out))
        try:
            for source, label_source in show_progress(pairs, desc="convert", unit="image", enabled=progress):
                try:
                    image = source.read()
                    label = check_label(label_source.read(), image) if label_source is not None else None
                except MedsynthError as err:
                    if not skip_invalid:
                        raise
                    log.warning("skipped %s", err)
                    continue
                entry = {"image": NNUNET_IMAGE.format(case=source.name) if layout == "nnunet" else
                         f"images/{source.name}" + (".nii.gz" if output_format == "nifti" else "")}
                if output_format == "nifti":
                    write_nifti(image, staging / entry["image"])
                else:
                    write_dicom_series(image, staging / entry["image"],
                                       series_description=image.meta.get("series_description") or source.name)
                if label is not None:
                    top = int(np.max(label.array)) if label.array.size else 0
                    largest = max(largest, top)
                    if layout == "nnunet":
                        entry["label"] = NNUNET_LABEL.format(case=source.name)
                    else:
                        entry["label"] = f"labels/{source.name}" + (".nii.gz" if output_format == "nifti" else ".dcm")
                    if output_format == "dicom":
                        if top > MAX_NNUNET_LABEL:
                            raise MedsynthError(f"{display(label_source.path)}: label value {top}; a DICOM SEG "
                                                f"gets one segment per value, medsynth writes up to {MAX_NNUNET_LABEL}")
                        write_dicom_seg(label, staging / entry["image"], staging / entry["label"],
                                        {f"class_{k}": k for k in range(top + 1)})
                    else:
                        write_nifti(label, staging / entry["label"])
                entry["source"] = display(os.path.relpath(source.path, input_root))  # JSON-safe text for any file name
                entry["modality"] = str(image.meta.get("modality", "unknown"))
                entries.append(entry)
            if not entries:
                raise MedsynthError(f"{input_path}: none of the {len(sources)} images could be converted")
            if layout == "nnunet" and largest > MAX_NNUNET_LABEL:  # before anything is moved into place
                raise MedsynthError(f"{display(labels_path)}: label value {largest}; nnU-Net needs consecutive labels "
                                    f"0..K, medsynth writes up to {MAX_NNUNET_LABEL}")
            for entry in entries:
                for key in ("image", "label"):
                    if key in entry:
                        _replace(staging / entry[key], inside_output(out, entry[key]))
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        if layout == "nnunet":
            channel = "CT" if all(e["modality"].upper() == "CT" for e in entries) else "MRI"
            write_nnunet_dataset(out, len(entries), {f"class_{k}": k for k in range(largest + 1)}, channel)
        else:
            write_datalist(out, entries, f"medsynth convert of {input_path.name} ({output_format})")
    return entries


def _replace(staged: Path, target: Path) -> None:
    """Move a staged file or folder onto ``target``, replacing an older output of that name."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.is_dir() and not target.is_symlink():
        shutil.rmtree(target)
    os.replace(staged, target)
