"""``medsynth validate``, ``medsynth compare`` and ``medsynth demo``: measure synthetic data, compare families."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from medsynth.cli.common import command
from medsynth.errors import MedsynthError

DEVICE_HELP = "auto (CUDA if available), cpu or cuda."


@command
def validate(
    real_dir: Annotated[Path, typer.Argument(help="Folder of real images (NIfTI/DICOM), e.g. held-out data.")],
    synth_dir: Annotated[Path, typer.Argument(help="Folder of synthetic images, e.g. the images/ of "
                                                   "`medsynth augment`.")],
    out: Annotated[Path, typer.Option("--out", help="Report folder: report.html, metrics.json, figures/, "
                                                    "feature_network/.")],
    labels: Annotated[Optional[Path], typer.Option(  # noqa: UP045 (typer needs Optional on Python 3.10)
        "--labels", help="Label maps of the real images (by file stem): intensity distance per class; the "
                         "feature network learns to segment them.")] = None,
    synth_labels: Annotated[Optional[Path], typer.Option(  # noqa: UP045
        "--synth-labels", help="Label maps of the synthetic images, e.g. the labels/ of `medsynth augment`.")] = None,
    train: Annotated[Optional[Path], typer.Option(  # noqa: UP045
        "--train", help="The generator's real training images: memorization is checked against them and the "
                        "feature network trained on them (default: REAL_DIR; memorization then not measured).")] = None,
    train_labels: Annotated[Optional[Path], typer.Option(  # noqa: UP045
        "--train-labels", help="Label maps of --train.")] = None,
    features: Annotated[Optional[Path], typer.Option(  # noqa: UP045
        "--features", help="Feature extractor for KID/FID and memorization: a TorchScript file taking (N, 1, "
                           "*spatial) images in [0, 1] (e.g. RadImageNet or MedicalNet weights you have), or the "
                           "feature_network/ folder of an earlier report. Default: train medsynth's own on the "
                           "real training images.")] = None,
    dims: Annotated[int, typer.Option("--dims", help="2: compare axial slices; 3: compare whole volumes.")] = 2,
    feature_steps: Annotated[int, typer.Option(
        "--feature-steps", help="Training steps of medsynth's feature network (1 to 1,000,000).")] = 300,
    device: Annotated[str, typer.Option("--device", help=DEVICE_HELP)] = "auto",
) -> None:
    """Measure how close SYNTH_DIR is to REAL_DIR (real images the generator never trained on): KID with a
    95% interval and FID with its validity flag in three feature spaces, MS-SSIM diversity, intensity-histogram
    distances (per label class with both label folders) and, with --train, copies of training images
    calibrated on REAL_DIR. Writes --out/report.html and metrics.json.
    """
    from medsynth.validation.validate import validate as run_validate

    report = run_validate(real_dir, synth_dir, out, labels=labels, synth_labels=synth_labels, train_dir=train,
                          train_labels=train_labels, features=features, spatial_dims=dims,
                          feature_steps=feature_steps, device=device)
    typer.echo(f"report: {report}")


@command
def compare(
    config: Annotated[Path, typer.Argument(help="Comparison YAML naming one experiment config per model, e.g. "
                                                "configs/compare_2d.yaml.")],
    out: Annotated[Path, typer.Option("--out", help="Report folder: report.html, metrics.json, figures/, "
                                                    "runs/ (the trained models), feature_network/.")],
    runs: Annotated[Optional[list[str]], typer.Option(  # noqa: UP045
        "--runs", help="NAME=RUN_DIR: use this finished run for experiment NAME instead of training it "
                       "(repeatable), e.g. --runs diffusion=runs/generate_2d_diffusion.")] = None,
    device: Annotated[str, typer.Option("--device", help=DEVICE_HELP)] = "auto",
    overrides: Annotated[Optional[list[str]], typer.Option(  # noqa: UP045
        "--set", help="Override a comparison-config value, e.g. --set utility.seeds=[0,1] or --set "
                      "overrides=[train.steps=100] (values parsed as YAML; repeatable).")] = None,
) -> None:
    """Train every model of CONFIG on the same split, once per real fraction of utility.fractions (or take
    --runs for the whole set), sample from deformed training label maps, measure realism (KID with 95%
    intervals in three feature spaces), diversity, memorization, label fidelity, costs and utility against
    real only and two baseline arms, and write the side-by-side report. An interrupted comparison resumes
    its training runs when run again.
    """
    from medsynth.validation.compare import compare as run_compare

    named = {}
    for item in runs or []:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise MedsynthError(f"--runs {item}: expected NAME=RUN_DIR")
        named[name] = Path(path)
    typer.echo(f"report: {run_compare(config, out, runs=named, device=device, overrides=overrides)}")


@command
def demo(
    out: Annotated[Path, typer.Option("--out", help="Folder for the demo's runs and report.")] = Path("medsynth-demo"),
    device: Annotated[str, typer.Option("--device", help=DEVICE_HELP)] = "auto",
) -> None:
    """The whole pipeline on bundled real data (the MNI152 template): train a small diffusion model and a small
    GAN, sample, validate, run the utility study (fewer segmenter seeds than compare's default, printed) and
    write the comparison report. Sized for a 2-core CPU.
    """
    from medsynth.validation.demo import DEMO_SEEDS
    from medsynth.validation.demo import demo as run_demo

    typer.echo(f"demo: utility study with {DEMO_SEEDS} segmenter seeds (medsynth compare's default: 5), "
               "at the whole real training set only")
    typer.echo(f"report: {run_demo(out, device=device)}")
