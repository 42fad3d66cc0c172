"""The ``medsynth`` command line: a thin typer layer over the Python API.

Each command lives in its own module and imports heavy libraries inside the command, so that
``medsynth --help`` is instant. Exit codes: 0 success, 1 error (one ``error:`` line on stderr),
2 bad usage.
"""

from __future__ import annotations

import typer

from medsynth.cli.augment import augment
from medsynth.cli.convert import convert
from medsynth.cli.info import info
from medsynth.cli.restore import denoise, super_resolve
from medsynth.cli.sample_data import sample_data
from medsynth.cli.train import train
from medsynth.cli.validate import compare, demo, validate

app = typer.Typer(
    name="medsynth",
    help="Medical image synthesis with diffusion models and conditional GANs, built on MONAI.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
)


def _version(value: bool) -> None:
    if value:
        from medsynth import __version__

        typer.echo(f"medsynth {__version__}")
        raise typer.Exit()


@app.callback()
def _options(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                          help="Print medsynth's version (the package metadata's) and exit.")) -> None:
    """Medical image synthesis with diffusion models and conditional GANs, built on MONAI."""


app.command()(info)
app.command()(convert)
app.command("sample-data")(sample_data)
app.command()(train)
app.command()(augment)
app.command()(denoise)
app.command("super-resolve")(super_resolve)
app.command()(validate)
app.command()(compare)
app.command()(demo)


def main() -> None:
    app()
