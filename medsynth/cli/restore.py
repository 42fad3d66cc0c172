"""``medsynth denoise`` and ``medsynth super-resolve``: a file or folder in, the same structure out."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from medsynth.cli.augment import SAMPLING_HELP
from medsynth.cli.common import command

Input = Annotated[Path, typer.Argument(help="A NIfTI file, a DICOM series folder, or a folder searched recursively.")]
Output = Annotated[Path, typer.Argument(
    help="A .nii.gz path for one NIfTI input, else a folder that receives the same relative layout (NIfTI as "
         "NIfTI, DICOM series as DICOM series); never inside INPUT.")]
Model = Annotated[Path, typer.Option("--model", help="Run directory of a model trained for this job.")]
Steps = Annotated[Optional[int], typer.Option(  # noqa: UP045 (typer needs Optional on Python 3.10)
    "--steps", help=f"Sampling steps (default: the model's). {SAMPLING_HELP}.")]
Sampler = Annotated[Optional[str], typer.Option(  # noqa: UP045
    "--sampler", help=f"ddim (default), dpm_solver (second order: as good in fewer steps) or ddpm (reference, all "
                    f"steps). {SAMPLING_HELP}.")]
Seed = Annotated[int, typer.Option("--seed", help="Seed of the sampling noise: the same seed gives the same files.")]
BatchSize = Annotated[int, typer.Option("--batch-size", help="2D slices per network call.")]
Device = Annotated[str, typer.Option("--device", help="auto (CUDA if available), cpu or cuda.")]
Flips = Annotated[Optional[bool], typer.Option(  # noqa: UP045
    "--flips/--no-flips", help="Average the outputs over flipped copies of the input (4 passes in 2D, 8 in 3D: "
                               "less variance, that many times slower). Default: the model's job.flip_ensemble.")]
KeepStudy = Annotated[bool, typer.Option(
    "--keep-study", help="Write a DICOM result as a derived series in its source's study (patient and study "
                         "attributes kept, ReferencedSeriesSequence to the source), to go back to PACS beside it. "
                         "The result then identifies the patient as the source does; without the flag it is a new, "
                         "de-identified study.")]


def _run(job: str, input_path: Path, output: Path, model: Path, **options) -> None:
    from medsynth.errors import display
    from medsynth.synthesis import restore

    for path in restore(input_path, output, model, job, **options):
        typer.echo(f"wrote {display(path)}")


@command
def denoise(input_path: Input, output: Output, model: Model, steps: Steps = None, sampler: Sampler = None,
            seed: Seed = 0, batch_size: BatchSize = 8, flips: Flips = None, keep_study: KeepStudy = False,
            device: Device = "auto") -> None:
    """Denoise every image in INPUT with a `denoise` model; geometry and intensity units are kept."""
    _run("denoise", input_path, output, model, steps=steps, sampler=sampler, seed=seed, batch_size=batch_size,
         flips=flips, keep_study=keep_study, device=device)


@command
def super_resolve(input_path: Input, output: Output, model: Model, steps: Steps = None, sampler: Sampler = None,
                  seed: Seed = 0, batch_size: BatchSize = 8, flips: Flips = None, keep_study: KeepStudy = False,
                  device: Device = "auto",
                  factor: Annotated[Optional[int], typer.Option(  # noqa: UP045
                      "--factor", help="Fine slices per thick slice (default: thick spacing / in-plane spacing; 1: "
                                       "the input is already on the fine grid).")] = None) -> None:
    """Thick slices to thin: interpolate each volume onto a grid `factor` times finer along the axis the
    model restores, refine it with a `super_resolve` model, and write the new spacing into the affine."""
    _run("super_resolve", input_path, output, model, steps=steps, sampler=sampler, seed=seed, batch_size=batch_size,
         flips=flips, keep_study=keep_study, device=device, factor=factor)
