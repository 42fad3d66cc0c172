"""``medsynth sample-data``: write bundled real images to a folder to try medsynth on."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from medsynth.cli.common import command


@command
def sample_data(
    output_dir: Annotated[Path, typer.Argument(help="Folder to write the sample data into (created if missing).")],
) -> None:
    """Write real sample data that ships with medsynth's dependencies (no download).

    The MNI152 T1 template and its grey/white-matter labels as NIfTI (images/, labels/), the same
    template as a DICOM MR series, and pydicom's real MR and CT test files (dicom/).
    """
    from medsynth.data.samples import write_sample_data
    from medsynth.io.files import prepare_output_dir

    paths = write_sample_data(prepare_output_dir(output_dir))
    for kind, path in paths.items():
        typer.echo(f"{kind:<7} {path}")
