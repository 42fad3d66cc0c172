"""``medsynth train``: train a model from a YAML config into a run directory."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from medsynth.cli.common import command


@command
def train(
    config: Annotated[Path, typer.Argument(help="Experiment YAML, e.g. configs/denoise_2d_diffusion.yaml.")],
    data: Annotated[Optional[Path], typer.Option(  # noqa: UP045 (typer needs Optional on Python 3.10)
        "--data", help="Folder of training images (NIfTI/DICOM); overrides data.images. Default: the "
                       "config's, else the bundled MNI152 template.")] = None,
    labels: Annotated[Optional[Path], typer.Option(  # noqa: UP045
        "--labels", help="Folder of label maps matched to the images by file stem; overrides data.labels.")] = None,
    out: Annotated[Optional[Path], typer.Option(  # noqa: UP045
        "--out", help="Run directory to create (default: runs/CONFIG_NAME).")] = None,
    device: Annotated[str, typer.Option("--device", help="auto (CUDA if available), cpu or cuda.")] = "auto",
    resume: Annotated[bool, typer.Option(
        "--resume", help="Continue the run in --out from its latest checkpoint (same config; train.steps may "
                         "grow).")] = False,
    overrides: Annotated[Optional[list[str]], typer.Option(  # noqa: UP045
        "--set", help="Override a config value, e.g. --set train.steps=200 --set model.channels=[16,32] "
                      "(values parsed as YAML; repeatable).")] = None,
) -> None:
    """Train a model: the resolved config, checkpoints (safetensors), log.csv and sample grids go to --out.

    Re-running the same command with --resume continues an interrupted run exactly where its last
    checkpoint left it (bit for bit on CPU).
    """
    from medsynth.training import Trainer, load_experiment

    settings = list(overrides or [])
    if data is not None:
        settings.append(f"data.images={data}")
    if labels is not None:
        settings.append(f"data.labels={labels}")
    experiment = load_experiment(config, settings)
    run_dir = out or Path("runs") / config.stem
    summary = Trainer(experiment, run_dir, device=device, resume=resume).fit()
    typer.echo(f"trained {summary['steps']} steps in {summary['seconds_total']:.0f} s "
               f"({summary['steps_per_second'] or 0:.2f} steps/s this session, peak memory "
               f"{summary['peak_memory_mb']:.0f} MiB on {summary['device']}); run: {run_dir}")
