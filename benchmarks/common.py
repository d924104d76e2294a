"""What several benchmark scripts share: step timers for the --breakdown tables, and the
dataset a script runs on (a real folder, or a synthetic one made for the run)."""

from __future__ import annotations

import collections
import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any


def timed(function: Callable, key: str, spent: dict[str, float]) -> Callable:
    """``function``, adding the seconds each call takes to ``spent[key]``."""
    def run(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            spent[key] += time.perf_counter() - started
    return run


@contextlib.contextmanager
def step_timers(steps: list[tuple[Any, str, str]]) -> Iterator[dict[str, float]]:
    """For the block, every ``(owner, attribute, key)`` of ``steps`` replaced by a timed version
    (put back afterwards); yields the seconds spent per key."""
    spent: dict[str, float] = collections.defaultdict(float)
    with contextlib.ExitStack() as undo:
        for owner, name, key in steps:
            original = getattr(owner, name)
            setattr(owner, name, timed(original, key, spent))
            undo.callback(setattr, owner, name, original)
        yield spent


def dataset(data: Path | None, tmp: Path, n: int, size: int, noise: float = 0.0) -> Path | None:
    """``data`` when given (None when it does not exist: the script says so and skips), else a
    synthetic kvasir-seg dataset of ``n`` pairs at ``size`` x ``size`` made under ``tmp``."""
    if data is not None:
        if not data.is_dir():
            print(f"skipped: {data} not found")
            return None
        return data
    from segprep.synth import make_dataset

    out = tmp / "kvasir-seg"
    make_dataset(out, "kvasir-seg", n=n, size=(size, size), seed=0, noise=noise)
    return out
