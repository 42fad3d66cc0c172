"""``medsynth augment``: synthetic (image, label) pairs or images from a folder of real data."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from medsynth.cli.common import command
from medsynth.cli.convert import Format, Layout
from medsynth.errors import Interrupted

SAMPLING_HELP = "Diffusion models only (GANs ignore it with a note)"


@command
def augment(
    input_dir: Annotated[Path, typer.Argument(
        help="Folder searched recursively for NIfTI files and DICOM series (the real images).")],
    output_dir: Annotated[Path, typer.Argument(
        help="Folder for images/, labels/ (imagesTr/, labelsTr/ with --layout nnunet), dataset.json and "
             "manifest.csv; created if missing, never inside INPUT_DIR. Rerunning into it resumes: finished "
             "outputs are skipped.")],
    model: Annotated[Path, typer.Option("--model", help="Run directory of a `generate` model (medsynth train).")],
    labels: Annotated[Optional[Path], typer.Option(  # noqa: UP045 (typer needs Optional on Python 3.10)
        "--labels", help="Label maps matched to the images by file stem; needed by label-conditioned models, which "
                         "generate an image for a randomly deformed copy of each.")] = None,
    count: Annotated[Optional[int], typer.Option(  # noqa: UP045
        "--count", help="Unconditional models: number of images to generate, each on the grid of an input image "
                        "(default: one per input image).")] = None,
    per_image: Annotated[int, typer.Option(
        "--per-image", help="Label-conditioned models and --strength variations: outputs per input image.")] = 1,
    seed: Annotated[int, typer.Option("--seed", help="Base seed: the same seed gives the same files.")] = 0,
    steps: Annotated[Optional[int], typer.Option(  # noqa: UP045
        "--steps", help=f"Sampling steps (default: the model's). {SAMPLING_HELP}.")] = None,
    sampler: Annotated[Optional[str], typer.Option(  # noqa: UP045
        "--sampler", help=f"ddim (default, few steps), dpm_solver (second order: as good in fewer steps) or ddpm "
                          f"(reference, all steps). {SAMPLING_HELP}.")] = None,
    strength: Annotated[Optional[float], typer.Option(  # noqa: UP045
        "--strength", help="Variations of each real image instead of new ones: noise it to this fraction of the "
                           "diffusion schedule, in (0, 1], and denoise (diffusion models only).")] = None,
    output_format: Annotated[Format, typer.Option(
        "--format", help="NIfTI files, or DICOM: image series (synthetic, de-identified) with their labels as "
                         "DICOM SEG files (one segment per class, referencing the series).")
    ] = Format.nifti,
    layout: Annotated[Layout, typer.Option(
        "--layout", help="monai: images/, labels/ and a MONAI datalist with the class names; nnunet: nnU-Net v2's "
                         "imagesTr/CASE_0000.nii.gz, labelsTr/CASE.nii.gz and dataset.json (label-conditioned "
                         "models), ready for nnUNetv2_plan_and_preprocess.")] = Layout.monai,
    batch_size: Annotated[int, typer.Option("--batch-size", help="2D slices per network call.")] = 8,
    device: Annotated[str, typer.Option("--device", help="auto (CUDA if available), cpu or cuda.")] = "auto",
    reject_copies: Annotated[bool, typer.Option(
        "--reject-copies", help="Do not write outputs that are near-copies of the model's training images (the "
                                "memorization check: closer to a training slice than --copy-threshold times that "
                                "slice's distance to its nearest neighbour); they are listed in rejected.csv. Reads "
                                "the model's training data.")] = False,
    copy_threshold: Annotated[float, typer.Option(
        "--copy-threshold", help="Near-copy ratio threshold for --reject-copies.")] = 0.5,
) -> None:
    """Write synthetic data for the images in INPUT_DIR: new image + label pairs from deformed real label
    maps (label-conditioned models), new images (unconditional), or variations (--strength).

    Outputs keep the source geometry and intensity units. Run under `torchrun --nproc_per_node=K` to split
    the inputs across K processes; rank 0 merges manifest.csv and dataset.json.
    """
    from medsynth.synthesis import augment as run_augment

    reject = None
    if reject_copies:
        from medsynth.validation.copies import near_copy_check

        reject = near_copy_check(model, copy_threshold)
    try:
        datalist = run_augment(input_dir, output_dir, model, labels=labels, count=count, per_image=per_image,
                               seed=seed, steps=steps, sampler=sampler, strength=strength,
                               output_format=output_format.value, layout=layout.value, batch_size=batch_size,
                               device=device, reject=reject)
    except KeyboardInterrupt:
        raise Interrupted("interrupted; every output written so far is complete, and running the same command again "
                          "continues where this one stopped") from None
    if datalist.exists():
        typer.echo(f"datalist: {datalist}; manifest: {output_dir / 'manifest.csv'}")
