"""The ``dask`` executor: a stage's blocks as tasks on a Dask cluster (``dask.distributed``).

The stage plans its blocks exactly as it does locally and hands them to this executor through
the same seam (:class:`segprep.executor.Executor`): one task per block (ingest, augment: each
writes its own shard under WORK to a temporary name and returns its rows), or per chunk of
samples (clean), results read back in order or as they finish. The driver (the process that
runs the stage) renames, assembles and validates, as it does with local workers, so the output
is the same bytes whatever the number of Dask workers.

- Without a scheduler address (``--scheduler`` or ``DASK_SCHEDULER_ADDRESS``) a LocalCluster of
  worker processes (one thread each) starts on this machine and stops with the stage. With one,
  the stage connects to that cluster; WORK must then be a path every worker can write (a shared
  filesystem mounted at the same path), which is checked before any task runs.
- A stage's per-worker state (its ``initializer``) is set up once per worker process and stage
  run, before the first task that needs it: Dask workers outlive a stage, and a worker restarted
  after a crash starts bare.
- A worker that dies mid-task (killed, out of memory) has its task rerun elsewhere by Dask
  (up to ``distributed.scheduler.allowed-failures`` times, then a clear error); a task that
  raises (a data error) is not retried: its error reaches the stage as it does locally.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from segprep.errors import SegprepError
from segprep.executor import current_settings
from segprep.work import ensure_writable

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 5

# Per worker process: the stage run whose initializer ran here last.
_READY: dict[str, str] = {}


def _run_chunk(token: str, initializer: Callable[..., None] | None, initargs: tuple,
               fn: Callable[[Any], Any], items: list[Any]) -> list[Any]:
    """One task on a worker: the stage's set-up once per worker and run, then ``fn`` per item."""
    if _READY.get("token") != token:
        import cv2

        cv2.setNumThreads(1)  # one thread per worker, as for local workers
        if initializer is not None:
            initializer(*initargs)
        _READY["token"] = token
    return [fn(item) for item in items]


def _probe(folder: str) -> str | None:
    """Why this worker cannot write in ``folder``, or None."""
    try:
        ensure_writable(Path(folder))
    except SegprepError as exc:
        return str(exc)
    return None


class DaskExecutor:
    """See the module docstring. ``workers``: the LocalCluster's processes (a given scheduler
    has its own)."""

    def __init__(self, workers: int, initializer: Callable[..., None] | None = None,
                 initargs: tuple = (), preload: Iterable[str] = ()) -> None:
        try:
            from distributed import Client, LocalCluster
        except ImportError:
            raise SegprepError("--executor dask needs dask.distributed: pip install "
                               "'segkit[dask]'") from None
        settings = current_settings()
        self._token = uuid.uuid4().hex
        self._initializer, self._initargs = initializer, initargs
        self._cluster = None
        if settings.scheduler:
            try:
                self._client = Client(settings.scheduler, timeout=f"{CONNECT_TIMEOUT_S}s")
            except (OSError, TimeoutError) as exc:
                raise SegprepError(f"cannot reach the Dask scheduler at {settings.scheduler} within "
                                   f"{CONNECT_TIMEOUT_S} s ({str(exc).splitlines()[0]}); is it "
                                   f"running, and is the address right (tcp://HOST:8786)?") from None
            where = settings.scheduler
        else:
            self._cluster = LocalCluster(n_workers=max(1, int(workers)), threads_per_worker=1,
                                         processes=True, dashboard_address=":0",
                                         silence_logs=logging.ERROR)
            self._client = Client(self._cluster)
            where = "a LocalCluster on this machine"
        try:
            self.workers = max(1, len(self._client.scheduler_info()["workers"]))
            if settings.shared_dir is not None:
                self._check_shared(settings.shared_dir)
        except BaseException:
            self.close()
            raise
        line = (f"dask: {self.workers} worker(s) at {where}; dashboard "
                f"{self._client.dashboard_link or '(none: install bokeh)'}")
        log.info(line)
        if settings.announce is not None:
            settings.announce(line)

    def _check_shared(self, folder: Path) -> None:
        problems = {worker: why for worker, why in
                    self._client.run(_probe, str(Path(folder).absolute())).items() if why}
        if problems:
            listing = "; ".join(f"{worker}: {why}" for worker, why in sorted(problems.items()))
            raise SegprepError(f"WORK {folder} is not writable from {len(problems)} Dask worker(s): "
                               f"{listing}. WORK must be on a filesystem every worker mounts at "
                               f"the same path.")

    def _submit(self, fn: Callable[[Any], Any], chunks: list[list[Any]]) -> list:
        return [self._client.submit(_run_chunk, self._token, self._initializer, self._initargs,
                                    fn, chunk, pure=False) for chunk in chunks]

    @staticmethod
    def _result(future) -> list[Any]:
        from distributed import KilledWorker

        try:
            return future.result()
        except KilledWorker as exc:
            raise SegprepError(f"a task killed its Dask worker every time it ran ({exc}); "
                               f"out of memory on one sample? Run it locally to see which") from None

    def imap(self, fn: Callable[[Any], Any], items: Iterable[Any], chunksize: int = 1) -> Iterator[Any]:
        """Results in the order of ``items``; ``chunksize`` items per task."""
        items = list(items)
        size = max(1, int(chunksize))
        futures = self._submit(fn, [items[i:i + size] for i in range(0, len(items), size)])
        for future in futures:
            yield from self._result(future)

    def imap_unordered(self, fn: Callable[[Any], Any], items: Iterable[Any]) -> Iterator[Any]:
        """Results as they finish, one task per item."""
        from distributed import as_completed

        for future in as_completed(self._submit(fn, [[item] for item in items])):
            yield from self._result(future)

    def map(self, fn: Callable[[Any], Any], items: list[Any], chunksize: int = 1) -> list[Any]:
        return list(self.imap(fn, items, chunksize))

    def close(self) -> None:
        client, self._client = getattr(self, "_client", None), None
        if client is not None:
            client.close()
        if self._cluster is not None:
            self._cluster.close()
            self._cluster = None

    def __enter__(self) -> "DaskExecutor":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def worker_pids(executor: DaskExecutor) -> dict[str, int]:
    """The process id of every worker (tests kill one)."""
    return executor._client.run(os.getpid)
