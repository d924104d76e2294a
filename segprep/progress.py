"""Progress of long work: a tqdm bar on a terminal, plain lines elsewhere.

Where standard error is not a terminal (a log file, CI, ``nohup``) tqdm hides its bar, and a
long stage printed nothing for minutes: users took it for hung. There, :class:`PlainProgress`
writes one line at most every :data:`INTERVAL` seconds (``ingest: 320/1000 samples (32%),
41 s``), and a last line when the work took longer than that.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any

from tqdm import tqdm

INTERVAL = 30.0  # seconds between plain progress lines


class PlainProgress:
    """The part of tqdm's interface the stages use, as occasional lines on standard error."""

    def __init__(self, iterable: Iterable | None = None, total: int | None = None, desc: str = "",
                 unit: str = "it", initial: int = 0, **_: Any) -> None:
        self.iterable = iterable
        self.total = total if total is not None else (len(iterable) if hasattr(iterable, "__len__") else None)
        self.desc, self.unit, self.n = desc, unit, initial
        self.started = self._last = time.monotonic()
        self.postfix = ""
        self._closed = False

    def _line(self, final: bool = False) -> None:
        elapsed = time.monotonic() - self.started
        done = f"{self.n}/{self.total}" if self.total else f"{self.n}"
        share = f" ({self.n / self.total:.0%})" if self.total else ""
        tail = f", {self.postfix}" if self.postfix else ""
        word = "done in" if final else "after"
        sys.stderr.write(f"{self.desc}: {done} {self.unit}{share} {word} {elapsed:.0f} s{tail}\n")
        sys.stderr.flush()

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self._last >= INTERVAL:
            self._last = now
            self._line()

    def set_postfix(self, **values: Any) -> None:
        self.postfix = ", ".join(f"{key} {value}" for key, value in values.items())

    def close(self) -> None:
        if not self._closed and time.monotonic() - self.started >= INTERVAL:
            self._line(final=True)
        self._closed = True

    def __iter__(self) -> Iterator:
        for item in self.iterable:
            yield item
            self.update(1)
        self.close()

    def __enter__(self) -> "PlainProgress":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def progress(iterable: Iterable | None = None, *, total: int | None = None, desc: str = "",
             unit: str = "it", initial: int = 0, enabled: bool = True, leave: bool = True):
    """A tqdm bar where standard error is a terminal, :class:`PlainProgress` lines elsewhere,
    nothing when not ``enabled``."""
    if not enabled:
        return tqdm(iterable, total=total, disable=True)
    if sys.stderr.isatty():
        return tqdm(iterable, total=total, desc=desc, unit=unit, initial=initial, leave=leave)
    return PlainProgress(iterable, total=total, desc=desc, unit=unit, initial=initial)
