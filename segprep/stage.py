"""What every segprep stage does around its own work, once.

A stage (ingest, clean, augment) is three steps::

    plan     read the input, check options, split the work into blocks
    work     run the blocks on an executor (segprep.executor), each writing a staged shard
    publish  move the shards in place, write the manifest, then the run's record, last

This module owns the parts of those steps that are the same in every stage: the record of a
finished run (:class:`StageRecord`: what makes a rerun a no-op, and what refuses to overwrite
another run's outputs), the short description of what differs between two runs' options,
moving staged files into place, removing the files of earlier runs that nothing names any more,
and rebasing relative paths when a manifest moves to another folder. Locks and atomic writes are
:mod:`segprep.work`; worker processes are :mod:`segprep.executor`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from segprep.errors import SegprepError
from segprep.work import atomic_write_json, read_json

log = logging.getLogger(__name__)


def file_sha1(path: Path) -> str | None:
    """The SHA-1 of a file's bytes, or None when it cannot be read."""
    try:
        return hashlib.sha1(Path(path).read_bytes()).hexdigest()
    except OSError:
        return None


class StageRecord:
    """The JSON record a stage writes after its output manifest, last: while it is there and
    the manifest's checksum matches it, the outputs are those of the recorded run."""

    def __init__(self, path: Path, manifest: Path) -> None:
        self.path, self.manifest = Path(path), Path(manifest)

    def read(self) -> dict | None:
        """The record of the run that wrote the manifest, or None (no manifest, no record)."""
        if not self.manifest.exists():
            return None
        record = read_json(self.path)
        return record if isinstance(record, dict) else None

    def intact(self, record: dict | None) -> bool:
        """Whether the manifest on disk is the one ``record`` was written for."""
        return isinstance(record, dict) and record.get("manifest_sha1") == file_sha1(self.manifest)

    def refuse_other(self, record: dict | None, key: str, value: Any, *, force: bool,
                     names: Mapping[str, str] | None = None, hint: str = "") -> None:
        """Raise when a finished run recorded another ``record[key]`` than ``value`` (its options
        or its fingerprint) and ``force`` is not given: a rerun never silently replaces the
        outputs of a run made with other options."""
        if force or not isinstance(record, dict) or record.get(key) in (None, value):
            return
        old = record.get(key)
        what = differences(old, value, names) if isinstance(old, dict) and isinstance(value, dict) else key
        raise SegprepError(f"{self.manifest} exists from a run with other {what}; pass --force "
                           f"to replace it{hint}")

    def withdraw(self) -> None:
        """Remove the record and the manifest: the outputs are about to change, and a killed run
        must not leave a manifest that names shards it no longer describes."""
        self.path.unlink(missing_ok=True)
        self.manifest.unlink(missing_ok=True)

    def write(self, **fields: Any) -> Path:
        """Record a finished run (after its manifest), with the manifest's checksum."""
        return atomic_write_json(self.path, {**fields, "manifest_sha1": file_sha1(self.manifest)})


def differences(old: Mapping[str, Any], new: Mapping[str, Any],
                names: Mapping[str, str] | None = None) -> str:
    """What differs between two runs' options, for an error message: ``--val 0.1 -> 0.2``.
    ``names`` maps option keys to the flags a user types; nested values (a whole pipeline)
    are only named, since their text says nothing at a glance."""
    names = names or {}
    keys = [k for k in dict.fromkeys([*old, *new]) if old.get(k) != new.get(k)]
    parts = []
    for key in keys:
        flag = names.get(key, f"--{key.replace('_', '-')}")
        before, after = old.get(key), new.get(key)
        if max(len(repr(before)), len(repr(after))) > 60:  # a pipeline, a splits table
            parts.append(f"{flag} changed")
        else:
            parts.append(f"{flag} {before!r} -> {after!r}")
    return "options (" + ", ".join(parts) + ")" if parts else "options"


def publish(staged: Iterable[Path], folder: Path) -> list[Path]:
    """Move complete staged files into ``folder`` (same file system: each move is atomic)."""
    folder.mkdir(parents=True, exist_ok=True)
    placed = []
    for path in staged:
        target = folder / Path(path).name
        os.replace(path, target)
        placed.append(target)
    return placed


def remove_stale(folder: Path, pattern: re.Pattern[str], keep: Callable[[str], bool]) -> list[Path]:
    """Remove this stage's files (names matching ``pattern``) that ``keep`` rejects: shards of an
    earlier, larger run and temporary files of a killed one. Nothing else is touched."""
    removed = []
    if not folder.is_dir():
        return removed
    for path in sorted(folder.iterdir()):
        if pattern.match(path.name) and not keep(path.name):
            log.info("removing stale %s", path)
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def relative(path: str | Path, start: Path) -> str:
    """``path`` relative to ``start`` in POSIX form (manifests hold relative paths); empty stays
    empty."""
    return Path(os.path.relpath(path, start)).as_posix() if path else ""


def rebase(value: str, source_dir: Path, target_dir: Path) -> str:
    """A path relative to ``source_dir`` (one manifest's folder), made relative to
    ``target_dir`` (another's). Empty and absolute paths stay as they are."""
    if not value or os.path.isabs(value):
        return value
    source_dir, target_dir = Path(os.path.abspath(source_dir)), Path(os.path.abspath(target_dir))
    if source_dir == target_dir:
        return value
    try:
        return relative(os.path.normpath(source_dir / value), target_dir)
    except ValueError:  # another drive (Windows): no relative path exists
        return (source_dir / value).as_posix()
