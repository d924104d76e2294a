"""Where a stage's blocks run: the executor seam, and the local worker processes behind it.

A stage hands its blocks to an executor made by :func:`make_executor` and reads the results
back in order (``imap``) or as they finish (``imap_unordered``); it never starts processes
itself. An executor runs ``initializer(*initargs)`` once in every worker before any block (the
stage's per-worker state: options, open files), runs module-level functions on picklable
items, and stops its workers when the ``with`` block ends. ``local`` (:class:`Pool`) is the
one built in; ``dask`` (:mod:`segprep.executor_dask`, the ``dask`` extra) runs the same blocks on
a Dask cluster. Which kind a stage uses comes from :func:`executor_settings`, which the stage
functions (``executor=``, ``scheduler=``) and the CLI (``--executor``, ``--scheduler``) set around
their work; every ``make_executor`` inside uses it, so a stage needs no executor plumbing.

Local workers: one start-method policy, workers that die with their parent.

Start method: a fork server where the platform has one, spawn elsewhere; never a plain fork.
A stage's parent has used OpenCV and HDF5 before it starts workers (reading a manifest opens
shards), and both hold threads and locks that a forked child can inherit locked (seen as
workers hanging at 0% CPU). The fork server imports the modules named in ``preload`` once, so
each worker starts warm.

Every worker runs :func:`worker_setup` first: it asks the kernel to kill it when its parent
dies (``PR_SET_PDEATHSIG``, Linux; a watcher thread elsewhere), so ``kill -9`` of a stage
leaves no orphaned workers, and it pins OpenCV to one thread (N workers already fill N cores).
"""

from __future__ import annotations

import contextvars
import ctypes
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from segprep.errors import SegprepError

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


def pool_context(preload: Iterable[str] = ()) -> multiprocessing.context.BaseContext:
    """The start method of every stage's workers (see the module docstring)."""
    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["segprep.executor", *preload])
        return context
    return multiprocessing.get_context("spawn")


def _watch_parent(parent: int) -> None:
    while True:
        time.sleep(1.0)
        if os.getppid() != parent:
            os._exit(1)


def die_with_parent() -> None:
    """Make this process end when its parent does."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL) == 0:
                return
        except OSError:
            pass
    threading.Thread(target=_watch_parent, args=(os.getppid(),), daemon=True).start()


def worker_setup(initializer: Callable[..., None] | None = None, args: tuple = ()) -> None:
    """What every stage worker runs first, then the stage's own ``initializer(*args)``."""
    die_with_parent()
    import cv2
    cv2.setNumThreads(1)
    if initializer is not None:
        initializer(*args)


class Pool:
    """``workers`` processes started by :func:`pool_context`, each set up by
    :func:`worker_setup`; with one worker, everything runs inline in this process (same
    results, no process to start). Use as a context manager: leaving it terminates the workers.
    """

    def __init__(self, workers: int, initializer: Callable[..., None] | None = None,
                 initargs: tuple = (), preload: Iterable[str] = ()) -> None:
        self.workers = max(1, int(workers))
        self._inline = self.workers == 1
        self._pool = None
        if self._inline:
            if initializer is not None:
                initializer(*initargs)
        else:
            self._pool = pool_context(preload).Pool(
                self.workers, initializer=worker_setup, initargs=(initializer, initargs))

    def imap(self, fn: Callable[[Any], Any], items: Iterable[Any], chunksize: int = 1) -> Iterator[Any]:
        """Results in the order of ``items``."""
        if self._inline:
            return map(fn, items)
        return self._pool.imap(fn, items, chunksize=chunksize)

    def imap_unordered(self, fn: Callable[[Any], Any], items: Iterable[Any]) -> Iterator[Any]:
        """Results as they finish."""
        if self._inline:
            return map(fn, items)
        return self._pool.imap_unordered(fn, items)

    def map(self, fn: Callable[[Any], Any], items: list[Any], chunksize: int = 1) -> list[Any]:
        return list(self.imap(fn, items, chunksize))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()
            self._pool = None

    def __enter__(self) -> "Pool":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class Executor(Protocol):
    """What a stage needs of an executor (see the module docstring)."""

    workers: int

    def imap(self, fn: Callable[[Any], Any], items: Iterable[Any], chunksize: int = 1) -> Iterator[Any]: ...

    def imap_unordered(self, fn: Callable[[Any], Any], items: Iterable[Any]) -> Iterator[Any]: ...

    def close(self) -> None: ...

    def __enter__(self) -> "Executor": ...

    def __exit__(self, *exc_info: object) -> None: ...


def _dask_executor(*args: Any) -> Executor:
    from segprep.executor_dask import DaskExecutor  # dask is an optional extra

    return DaskExecutor(*args)


#: executor kinds by name: factory(workers, initializer, initargs, preload) -> Executor
EXECUTORS: dict[str, Callable[..., Executor]] = {"local": Pool, "dask": _dask_executor}


@dataclass(frozen=True)
class ExecutorSettings:
    """Where the blocks of the stage now running go."""

    kind: str = "local"
    scheduler: str | None = None       # dask: a scheduler address; None starts a LocalCluster
    shared_dir: Path | None = None     # WORK: every worker must be able to write there
    announce: Callable[[str], None] | None = None  # the CLI's way to show a line (dashboard link)


_SETTINGS: contextvars.ContextVar[ExecutorSettings] = contextvars.ContextVar(
    "segprep_executor", default=ExecutorSettings())


def current_settings() -> ExecutorSettings:
    return _SETTINGS.get()


@contextmanager
def executor_settings(kind: str | None = "local", scheduler: str | None = None,
                      shared_dir: Path | None = None,
                      announce: Callable[[str], None] | None = None) -> Iterator[ExecutorSettings]:
    """Run the enclosed stage's blocks on executors of ``kind`` (see the module docstring).
    ``kind=None`` keeps the settings already in force (a stage called inside the CLI's)."""
    if kind is None:
        yield _SETTINGS.get()
        return
    if kind not in EXECUTORS:
        raise SegprepError(f"unknown executor {kind!r}; choose one of {', '.join(sorted(EXECUTORS))}")
    if scheduler is not None and kind != "dask":
        raise SegprepError(f"--scheduler {scheduler} needs --executor dask")
    outer = _SETTINGS.get()
    settings = ExecutorSettings(kind, scheduler, Path(shared_dir) if shared_dir else None,
                                announce or outer.announce)
    token = _SETTINGS.set(settings)
    try:
        yield settings
    finally:
        _SETTINGS.reset(token)


def make_executor(workers: int, initializer: Callable[..., None] | None = None,
                  initargs: tuple = (), preload: Iterable[str] = (), kind: str | None = None) -> Executor:
    """An executor of ``kind`` (default: :func:`executor_settings`'s) with ``workers`` workers,
    each set up by ``initializer``."""
    kind = kind or _SETTINGS.get().kind
    try:
        factory = EXECUTORS[kind]
    except KeyError:
        raise SegprepError(f"unknown executor {kind!r}; choose one of {', '.join(sorted(EXECUTORS))}") from None
    return factory(workers, initializer, initargs, preload)


def _cgroup_cpus() -> float | None:
    """The CPU quota of this process's cgroup (v2 ``cpu.max``, v1 ``cfs_quota_us``), in CPUs;
    None when there is none or it cannot be read."""
    candidates = []
    try:
        for line in open("/proc/self/cgroup", encoding="utf-8"):
            parts = line.strip().split(":", 2)
            if len(parts) == 3 and parts[0] == "0":
                candidates.append(f"/sys/fs/cgroup{parts[2].rstrip('/')}/cpu.max")
    except OSError:
        pass
    candidates.append("/sys/fs/cgroup/cpu.max")
    for path in candidates:
        try:
            quota, period = open(path, encoding="utf-8").read().split()[:2]
        except (OSError, ValueError):
            continue
        return None if quota == "max" else int(quota) / int(period)
    try:
        quota = int(open("/sys/fs/cgroup/cpu/cpu.cfs_quota_us", encoding="utf-8").read())
        period = int(open("/sys/fs/cgroup/cpu/cpu.cfs_period_us", encoding="utf-8").read())
    except (OSError, ValueError):
        return None
    return quota / period if quota > 0 and period > 0 else None


def available_cpus() -> int:
    """The CPUs this process may actually use: its CPU affinity, capped by its cgroup's CPU
    quota (a container or a cluster job's share), never the machine's core count."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    quota = _cgroup_cpus()
    if quota is not None:
        cpus = min(cpus, max(1, int(quota)))
    return max(1, cpus)


default_workers = available_cpus
