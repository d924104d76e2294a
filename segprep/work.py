"""The WORK folder's housekeeping, shared by every stage: one writer at a time (a lock per
folder), files that appear whole or not at all, and clear errors when a folder cannot be
written.

A stage holds :class:`WorkLock` on its output folder while it runs. The lock is an advisory
``flock`` on ``<folder>/.segkit.lock``, whose text names the process holding it (PID, host,
command, start time). The kernel releases an ``flock`` when its process dies, however it dies,
so a lock file left by a killed run is stale by definition: the next run takes it over. A
second run on a folder that is in use refuses at once, naming the holder.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import shutil
import tempfile
import socket
import sys
import time
from pathlib import Path
from collections.abc import Iterator
from typing import Any

from segprep.errors import SegprepError

log = logging.getLogger(__name__)

LOCK_NAME = ".segkit.lock"


class WorkInUse(SegprepError):
    """Another process is writing the same folder."""


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary path to write ``path``'s content to (by any library), renamed to ``path``
    when the block succeeds and removed when it fails: a reader (or a killed run) never sees
    half a file. The suffix is kept, for writers that choose a format by it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_bytes(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file and a rename: a reader (or a
    killed run) never sees half a file."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, data: Any, *, compact: bool = False) -> Path:
    """JSON, indented and key-sorted for people, or ``compact`` (the C encoder) for machines."""
    text = (json.dumps(data, separators=(",", ":")) if compact
            else json.dumps(data, indent=1, sort_keys=True))
    return atomic_write_text(path, text + "\n")


def atomic_write_csv(path: Path, frame, **to_csv: Any) -> Path:
    """A pandas frame as CSV (``index=False``, ``\\n`` line ends unless given)."""
    to_csv.setdefault("index", False)
    to_csv.setdefault("lineterminator", "\n")
    return atomic_write_text(path, frame.to_csv(**to_csv))


def read_json(path: Path) -> Any | None:
    """A JSON file's content, or None when it is missing or not JSON."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def ensure_writable(folder: Path) -> Path:
    """Create ``folder`` if needed and check that files can be created in it; a SegprepError
    naming the folder and the reason otherwise."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        # a unique name: processes on several machines (Dask workers) may probe one folder at once
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".segkit-write-test-"):
            pass
    except OSError as exc:
        raise SegprepError(f"{folder}: cannot write here ({exc.strerror or exc}); choose "
                           f"another output folder (-o)") from None
    return folder


def free_bytes(folder: Path) -> int:
    """Free space on the file system that holds ``folder`` (or its nearest existing parent)."""
    folder = Path(folder).absolute()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return shutil.disk_usage(folder).free


def describe_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


class WorkLock:
    """Hold ``<folder>/.segkit.lock`` while a stage writes ``folder``.

    ``with WorkLock(work, "segprep ingest"):`` raises :class:`WorkInUse` at once when another
    living process holds it; a lock left by a dead process is taken over (and logged).
    """

    def __init__(self, folder: Path, stage: str) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        # what a person needs to recognise the run: the stage, and the command line that ran it
        self.command = f"{stage}: {' '.join([Path(sys.argv[0]).name, *sys.argv[1:]])}"
        self._fd: int | None = None

    def __enter__(self) -> "WorkLock":
        import fcntl

        ensure_writable(self.folder)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            holder = read_json(self.path) or {}
            since = holder.get("started", "?")
            raise WorkInUse(
                f"{self.folder} is in use by PID {holder.get('pid', '?')} on "
                f"{holder.get('host', '?')} ({holder.get('command', '?')}, since {since}); wait "
                f"for it to finish or choose another output folder") from None
        previous = read_json(self.path)
        if previous and previous.get("pid") and previous.get("pid") != os.getpid():
            log.info("%s: taking over the lock of PID %s (%s), which is no longer running",
                     self.folder, previous.get("pid"), previous.get("command"))
        record = json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                             "command": self.command,
                             "started": time.strftime("%Y-%m-%dT%H:%M:%S")}).encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, record, 0)
        self._fd = fd
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)  # no holder any more; the file itself may stay
        except OSError:
            pass
        os.close(self._fd)  # closing releases the flock
        self._fd = None

