"""The one exception type that medsynth raises for problems with the user's input or environment."""

from __future__ import annotations


class MedsynthError(Exception):
    """A problem the user can fix: bad input, bad config, unwritable output.

    The message is one line that names the file (or key) and the problem; the CLI prints it as
    ``error: <message>`` and exits with status 1.
    """


def describe(err: BaseException, limit: int = 200) -> str:
    """The first line of a third-party exception, for use inside a one-line error."""
    text = str(err).strip()
    return (text.splitlines()[0] if text else type(err).__name__)[:limit]
