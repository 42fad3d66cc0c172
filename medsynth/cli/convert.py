"""``medsynth convert``: every DICOM series and NIfTI file under a path, converted with geometry kept."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from medsynth.cli.common import command


class Format(str, Enum):
    nifti = "nifti"
    dicom = "dicom"


class Layout(str, Enum):
    monai = "monai"
    nnunet = "nnunet"


@command
def convert(
    input_path: Annotated[Path, typer.Argument(
        help="A NIfTI file, a DICOM file, or a folder searched recursively for NIfTI files (.nii, .nii.gz) and "
             "DICOM series (any file name).")],
    output_dir: Annotated[Path, typer.Argument(
        help="Folder for images/, labels/ (imagesTr/, labelsTr/ with --layout nnunet) and dataset.json; created if "
             "missing, must not be inside INPUT_PATH.")],
    output_format: Annotated[Format, typer.Option(
        "--format", help="nifti: one images/NAME.nii.gz per image; dicom: one images/NAME/ folder of "
                         "single-slice DICOM files per image.")] = Format.nifti,
    labels: Annotated[Optional[Path], typer.Option(  # noqa: UP045 (typer needs Optional on Python 3.10)
        "--labels", help="Folder of label maps matched to the images by file stem (nnU-Net's case_0000 matches "
                         "case); checked to be integer-valued and on the image grid, written to labels/ as "
                         "NIfTI.")] = None,
    layout: Annotated[Layout, typer.Option(
        "--layout", help="monai: images/, labels/ and a MONAI datalist; nnunet: nnU-Net v2's "
                         "imagesTr/CASE_0000.nii.gz, labelsTr/CASE.nii.gz and dataset.json (needs --labels).")
    ] = Layout.monai,
    skip_invalid: Annotated[bool, typer.Option(
        "--skip-invalid", help="Warn about and skip images that cannot be read (e.g. localizer series) instead of "
                               "stopping with an error.")] = False,
) -> None:
    """Convert every DICOM series and NIfTI file under INPUT_PATH into OUTPUT_DIR.

    Series are split by SeriesInstanceUID, slices ordered along the slice normal, and the
    voxel-to-world geometry kept (equal to dcm2niix's). Outputs are named from the file stem or
    the series number and description, under images/ (and labels/); a MONAI datalist (dataset.json)
    lists them. Nothing is written unless every input converts (see --skip-invalid).
    """
    from medsynth.errors import display
    from medsynth.io.convert import convert as run_convert

    entries = run_convert(input_path, output_dir, output_format.value, labels_path=labels, skip_invalid=skip_invalid,
                          layout=layout.value)
    for entry in entries:
        typer.echo(f"{display(entry['source'])} -> {display(output_dir / entry['image'])}")
    typer.echo(f"converted {len(entries)} image(s); datalist: {output_dir / 'dataset.json'}")
