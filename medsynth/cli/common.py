"""What every command shares: one-line errors with exit code 1, and warnings on stderr."""

from __future__ import annotations

import functools
import logging
import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import typer

from medsynth.errors import Interrupted, MedsynthError, display

F = TypeVar("F", bound=Callable[..., Any])


def one_line(text: str) -> str:
    """A message as one printable line: bad bytes as U+FFFD, newlines (from file names) escaped."""
    return display(text).replace("\r", "\\r").replace("\n", "\\n")


class _StderrHandler(logging.Handler):
    """Writes to whatever ``sys.stderr`` is at the time (test runners swap it)."""

    def emit(self, record: logging.LogRecord) -> None:
        sys.stderr.write(f"{record.levelname.lower()}: {one_line(record.getMessage())}\n")


def setup_logging() -> None:
    """Send medsynth's warnings and notes to stderr as ``warning: <message>``."""
    logger = logging.getLogger("medsynth")
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        logger.addHandler(_StderrHandler())
    logger.setLevel(logging.INFO)


def command(function: F) -> F:
    """Wrap a command: a :class:`MedsynthError` becomes ``error: <message>`` and exit code 1."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        setup_logging()
        try:
            return function(*args, **kwargs)
        except Interrupted as err:
            typer.echo(f"error: {one_line(str(err))}", err=True)
            raise typer.Exit(130) from None
        except MedsynthError as err:
            typer.echo(f"error: {one_line(str(err))}", err=True)
            raise typer.Exit(1) from None
        except OSError as err:  # a file-system failure no reader or writer turned into a MedsynthError
            where = one_line(os.fspath(err.filename)) if err.filename else "file system"
            typer.echo(f"error: {where}: {err.strerror or err}", err=True)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            typer.echo("error: interrupted; every file written so far is complete", err=True)
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]
