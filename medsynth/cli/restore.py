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
Model = Annotated[Optional[Path], typer.Option(  # noqa: UP045 (typer needs Optional on Python 3.10)
    "--model", help="Run directory of a model trained for this job (or --self).")]
SelfTrain = Annotated[bool, typer.Option(
    "--self", help="No --model: train a model on each scan alone and apply it to that scan (self-supervised; "
                   "a 3D scan; one model per scan, within --minutes). See docs/self-supervised.md.")]
Family = Annotated[Optional[str], typer.Option(  # noqa: UP045
    "--family", help="--self: the model trained on the scan's own pairs: l1 (the GAN's generator with plain L1), "
                     "gan (conditional GAN) or diffusion (conditional diffusion, residual). Default: the one "
                     "chosen on validation data for the job (docs/self-supervised.md).")]
Minutes = Annotated[float, typer.Option(
    "--minutes", help="--self: most minutes of training per scan; a slower machine stops early (fewer steps, "
                      "with a warning), so the result then depends on its speed.")]
TrainSteps = Annotated[Optional[int], typer.Option(  # noqa: UP045
    "--train-steps", help="--self: training steps per scan (default: the family's).")]
KeepModel = Annotated[Optional[Path], typer.Option(  # noqa: UP045
    "--keep-model", help="--self: keep the trained run directory here (one folder per scan inside it for "
                         "several scans), to apply with --model to other scans of the same protocol. Default: "
                         "removed.")]
Steps = Annotated[Optional[int], typer.Option(  # noqa: UP045 (typer needs Optional on Python 3.10)
    "--steps", help=f"Sampling steps (default: the model's). {SAMPLING_HELP}.")]
Sampler = Annotated[Optional[str], typer.Option(  # noqa: UP045
    "--sampler", help=f"ddim (default), dpm_solver (second order: as good in fewer steps) or ddpm (reference, all "
                    f"steps). {SAMPLING_HELP}.")]
Ensemble = Annotated[Optional[int], typer.Option(  # noqa: UP045
    "--ensemble", help="Samples averaged per output (default: the model's): a better estimate of the mean (higher "
                       "PSNR, less texture), that many times slower.")]
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


def _run(job: str, input_path: Path, output: Path, model: Path | None, self_train: bool, family: str | None,
         minutes: float, train_steps: int | None, keep_model: Path | None, slice_profile: str = "box",
         **options) -> None:
    from medsynth.errors import MedsynthError, display
    from medsynth.synthesis import restore
    from medsynth.synthesis.self_supervised import SelfTraining

    if not self_train and (keep_model is not None or train_steps is not None):
        raise MedsynthError("--keep-model and --train-steps go with --self")
    training = None  # restore() refuses --model with --self, and neither
    if self_train:
        training = SelfTraining(family=family, minutes=minutes, steps=train_steps, keep_model=keep_model,
                                slice_profile=slice_profile, seed=options["seed"])
    for path in restore(input_path, output, model, job, self_training=training, **options):
        typer.echo(f"wrote {display(path)}")


@command
def denoise(input_path: Input, output: Output, model: Model = None, self_train: SelfTrain = False,
            family: Family = None, minutes: Minutes = 7.0, train_steps: TrainSteps = None,
            keep_model: KeepModel = None, steps: Steps = None, sampler: Sampler = None,
            ensemble: Ensemble = None, seed: Seed = 0, batch_size: BatchSize = 8, flips: Flips = None,
            keep_study: KeepStudy = False,
            device: Device = "auto") -> None:
    """Denoise every image in INPUT with a `denoise` model, or with --self (Neighbor2Neighbor on the scan
    itself; magnitude MR's Rician bias removed); geometry and intensity units are kept."""
    _run("denoise", input_path, output, model, self_train, family, minutes, train_steps, keep_model, steps=steps,
         sampler=sampler, ensemble=ensemble, seed=seed, batch_size=batch_size, flips=flips, keep_study=keep_study,
         device=device)


@command
def super_resolve(input_path: Input, output: Output, model: Model = None, self_train: SelfTrain = False,
                  family: Family = None, minutes: Minutes = 7.0, train_steps: TrainSteps = None,
                  keep_model: KeepModel = None,
                  slice_profile: Annotated[str, typer.Option(
                      "--slice-profile", help="--self: slice sensitivity profile of the thick slices, box or "
                                              "gaussian (FWHM = SliceThickness, else the slice spacing).")] = "box",
                  steps: Steps = None, sampler: Sampler = None, ensemble: Ensemble = None, seed: Seed = 0,
                  batch_size: BatchSize = 8,
                  flips: Flips = None, keep_study: KeepStudy = False, device: Device = "auto",
                  factor: Annotated[Optional[int], typer.Option(  # noqa: UP045
                      "--factor", help="Fine slices per thick slice (default: thick spacing / in-plane spacing; 1: "
                                       "the input is already on the fine grid).")] = None) -> None:
    """Thick slices to thin: interpolate each volume onto a grid `factor` times finer along the axis the
    model restores, refine it with a `super_resolve` model (or, with --self, one trained on the scan's own
    in-plane slices, applied in both planes that cross the thick axis), and write the new spacing into
    the affine."""
    _run("super_resolve", input_path, output, model, self_train, family, minutes, train_steps, keep_model,
         slice_profile, steps=steps, sampler=sampler, ensemble=ensemble, seed=seed, batch_size=batch_size, flips=flips,
         keep_study=keep_study, device=device, factor=factor)
