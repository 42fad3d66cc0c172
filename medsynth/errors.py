"""The one exception type that medsynth raises for problems with the user's input or environment."""

from __future__ import annotations

import os
import re
import reprlib
from typing import Any


class MedsynthError(Exception):
    """A problem the user can fix: bad input, bad config, unwritable output.

    The message is one line that names the file (or key) and the problem; the CLI prints it as
    ``error: <message>`` and exits with status 1.
    """


class Interrupted(MedsynthError):
    """Ctrl-C at a clean point; the message says how to go on (the CLI exits with 130, as for any interrupt)."""


def describe(err: BaseException, limit: int = 200) -> str:
    """The first line of a third-party exception, for use inside a one-line error: whole sentences
    up to ``limit`` characters, or the first sentence cut at a word and marked with an ellipsis."""
    text = str(err).strip()
    line = text.splitlines()[0].strip() if text else type(err).__name__
    if len(line) <= limit:
        return line
    kept = ""
    for sentence in re.split(r"(?<=[.!?])\s+", line):
        if len(kept) + len(sentence) + 1 > limit:
            break
        kept = f"{kept} {sentence}".strip()
    return kept or line[:limit].rsplit(" ", 1)[0] + " …"


def check_count(option: str, value: int, maximum: int) -> int:
    """``value`` if it is a whole number in ``1..maximum``, else an error naming ``option``."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= maximum:
        raise MedsynthError(f"{option} {value}: must be a whole number from 1 to {maximum}")
    return value


def display(path: str | os.PathLike) -> str:
    """A path (or message) as printable text: bytes that are not UTF-8 (surrogate escapes) become U+FFFD."""
    return os.fspath(path).encode("utf-8", "surrogateescape").decode("utf-8", "replace")


_repr = reprlib.Repr()
_repr.maxstring = _repr.maxother = 60
_repr.maxlong = 40


def short(value: Any, limit: int = 80) -> str:
    """``repr(value)`` for an error message: bounded in time and cut to ``limit`` characters."""
    text = _repr.repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def shown(text: str | os.PathLike, limit: int = 200) -> str:
    """A path, name or message as an error shows it: cut to ``limit`` characters, and escaped when
    it has odd characters (a newline, a NUL byte)."""
    text = os.fspath(text)
    if not text.isprintable():
        return short(text, limit)
    return text if len(text) <= limit else text[:limit - 3] + "..."
