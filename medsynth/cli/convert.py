"""``medsynth convert``: every DICOM series and NIfTI file under a path, converted with geometry kept."""

from __future__ import annotations

from enum import Enum
from pathlib import Path

import typer

from medsynth.cli.common import command


class Format(str, Enum):
    nifti = "nifti"
    dicom = "dicom"


@command
def convert(
    input_path: Path = typer.Argument(..., help="A NIfTI file, a DICOM file, or a folder searched recursively for "
                                      "NIfTI files (.nii, .nii.gz) and DICOM series (any file name)."),
    output_dir: Path = typer.Argument(..., help="Folder for the outputs and dataset.json; created if missing, "
                                      "must not be inside INPUT_PATH."),
    output_format: Format = typer.Option(Format.nifti, "--format", help="nifti: one <name>.nii.gz per image; "
                                         "dicom: one <name>/ folder of single-slice files per image."),
    skip_invalid: bool = typer.Option(False, "--skip-invalid", help="Warn about and skip images that cannot be "
                                      "read (e.g. localizer series) instead of stopping with an error."),
) -> None:
    """Convert every DICOM series and NIfTI file under INPUT_PATH into OUTPUT_DIR.

    Series are split by SeriesInstanceUID, slices ordered along the slice normal, and the
    voxel-to-world geometry kept (equal to dcm2niix's). Outputs are named from the file stem or
    the series number and description; a MONAI datalist (dataset.json) lists them.
    """
    from medsynth.io.convert import convert as run_convert

    entries = run_convert(input_path, output_dir, output_format.value, skip_invalid=skip_invalid)
    for entry in entries:
        typer.echo(f"{entry['source']} -> {output_dir / entry['image']}")
    typer.echo(f"converted {len(entries)} image(s); datalist: {output_dir / 'dataset.json'}")
