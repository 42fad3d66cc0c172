"""Progress on long work: a tqdm bar in a terminal, plain lines in a log.

Without a terminal (``> log``, ``nohup``, a batch scheduler) a bar is either hidden or a smear of
carriage returns, so :func:`progress` then writes one plain line to stderr for the first item, at
most every ``MEDSYNTH_PROGRESS_SECONDS`` (default 30) seconds after that, and for the last::

    train: 120/800 steps (15%), 1.31 steps/s, ETA 8m39s, loss=0.0123
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")


def line_interval() -> float:
    """Seconds between plain progress lines (``MEDSYNTH_PROGRESS_SECONDS``, default 30)."""
    try:
        value = float(os.environ.get("MEDSYNTH_PROGRESS_SECONDS", "30"))
    except ValueError:
        return 30.0
    return value if math.isfinite(value) and value >= 0 else 30.0


def progress(iterable: Iterable[T], *, desc: str, unit: str = "it", total: int | None = None, initial: int = 0,
             enabled: bool = True, leave: bool = True) -> Iterator[T]:
    """``iterable`` with progress shown on stderr: a bar in a terminal, plain lines otherwise, nothing
    when ``enabled`` is false. The result has tqdm's ``set_postfix`` and ``close``."""
    if not enabled:
        return tqdm(iterable, disable=True)
    if sys.stderr.isatty():
        return tqdm(iterable, desc=desc, unit=unit, total=total, initial=initial, leave=leave, dynamic_ncols=True)
    return LineProgress(iterable, desc=desc, unit=unit, total=total, initial=initial)


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


class LineProgress:
    """Plain progress lines for a log file: position, rate, ETA and the latest postfix."""

    def __init__(self, iterable: Iterable[T], *, desc: str, unit: str, total: int | None, initial: int = 0,
                 interval: float | None = None) -> None:
        self.iterable = iterable
        self.desc, self.unit = desc, unit
        self.total = total if total is not None else (len(iterable) + initial if hasattr(iterable, "__len__") else None)
        self.n = self.initial = initial
        self.interval = line_interval() if interval is None else interval
        self.postfix = ""
        self._began = self._last = time.perf_counter()
        self._shown_at: int | None = None

    def __iter__(self) -> Iterator[T]:
        for item in self.iterable:
            yield item
            self.n += 1
            now = time.perf_counter()
            if self.n == self.initial + 1 or now - self._last >= self.interval or self.n == self.total:
                self._show(now)

    def set_postfix(self, values: dict[str, Any] | None = None, refresh: bool = True, **more: Any) -> None:
        items = {**(values or {}), **more}
        self.postfix = ", ".join(f"{k}={v}" for k, v in items.items())

    def close(self) -> None:
        if self.n > self.initial and self._shown_at != self.n:
            self._show(time.perf_counter())

    def line(self, now: float) -> str:
        """The progress line at time ``now`` (``time.perf_counter``)."""
        rate = (self.n - self.initial) / (now - self._began) if now > self._began else 0.0
        units = self.unit if self.unit.endswith("s") or self.unit == "it" else f"{self.unit}s"
        parts = [f"{self.desc}: {self.n}/{self.total} {units} ({100 * self.n / self.total:.0f}%)" if self.total
                 else f"{self.desc}: {self.n} {units}"]
        if rate >= 0.1 or rate == 0:
            parts.append(f"{rate:.0f} {units}/s" if rate >= 100 else f"{rate:.3g} {units}/s")
        else:
            parts.append(f"{1 / rate:.3g} s/{self.unit}")
        if self.total and rate > 0 and self.n < self.total:
            parts.append(f"ETA {_duration((self.total - self.n) / rate)}")
        if self.postfix:
            parts.append(self.postfix)
        return ", ".join(parts)

    def _show(self, now: float) -> None:
        print(self.line(now), file=sys.stderr, flush=True)
        self._last, self._shown_at = now, self.n
