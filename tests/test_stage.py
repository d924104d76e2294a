"""The machinery every stage shares: run records, option differences, publishing, stale files,
path rebasing, the executor seam and atomic files."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from segprep.errors import SegprepError
from segprep.executor import EXECUTORS, executor_settings, make_executor
from segprep.stage import StageRecord, differences, publish, rebase, remove_stale
from segprep.work import atomic_path

_STATE: dict[str, int] = {}


def _init(offset: int) -> None:
    _STATE["offset"] = offset


def _work(item: int) -> tuple[int, int, int]:
    return item, item + _STATE["offset"], os.getpid()


def test_differences_name_flags_and_only_name_long_values() -> None:
    old = {"val": 0.1, "split_seed": 0, "pipeline": {"transforms": list(range(30))}}
    new = {"val": 0.2, "split_seed": 0, "pipeline": {"transforms": list(range(31))}}
    text = differences(old, new, {"val": "--val"})
    assert text == "options (--val 0.1 -> 0.2, --pipeline changed)"
    assert differences(old, old) == "options"
    assert differences({}, {"max_pixels": 5}) == "options (--max-pixels None -> 5)"


def test_stage_record_vouches_for_its_manifest_only(tmp_path: Path) -> None:
    manifest = tmp_path / "manifests" / "x.csv"
    record = StageRecord(tmp_path / "manifests" / "x.json", manifest)
    assert record.read() is None  # no manifest: no finished run, whatever JSON lies around
    manifest.parent.mkdir()
    manifest.write_text("sample_id\na\n")
    record.write(options={"factor": 2})
    previous = record.read()
    assert previous["options"] == {"factor": 2} and record.intact(previous)
    manifest.write_text("sample_id\nb\n")  # edited by hand: no longer the recorded output
    assert not record.intact(record.read())
    with pytest.raises(SegprepError, match=r"x\.csv exists from a run with other options "
                                           r"\(--factor 2 -> 3\); pass --force"):
        record.refuse_other(previous, "options", {"factor": 3}, force=False)
    record.refuse_other(previous, "options", {"factor": 3}, force=True)  # --force: allowed
    record.refuse_other(previous, "options", {"factor": 2}, force=False)  # same: allowed
    record.withdraw()
    assert not manifest.exists() and not record.path.exists()


def test_publish_and_remove_stale_touch_only_the_stage_files(tmp_path: Path) -> None:
    staging, shards = tmp_path / "staging", tmp_path / "shards"
    staging.mkdir()
    (staging / "clean-00000.h5").write_bytes(b"new")
    shards.mkdir()
    for name in ("clean-00000.h5", "clean-00001.h5", "clean-00002.h5.tmp", "ingest-00000.h5", "notes.txt"):
        (shards / name).write_bytes(b"old")
    placed = publish([staging / "clean-00000.h5"], shards)
    assert placed == [shards / "clean-00000.h5"] and placed[0].read_bytes() == b"new"
    pattern = re.compile(r"^clean-\d{5}\.h5(\.tmp)?$")
    removed = remove_stale(shards, pattern, keep={"clean-00000.h5"}.__contains__)
    assert sorted(p.name for p in removed) == ["clean-00001.h5", "clean-00002.h5.tmp"]
    assert sorted(p.name for p in shards.iterdir()) == ["clean-00000.h5", "ingest-00000.h5", "notes.txt"]


def test_rebase_moves_relative_paths_between_manifest_folders(tmp_path: Path) -> None:
    a, b = tmp_path / "w1" / "manifests", tmp_path / "w2" / "manifests"
    assert rebase("../../raw/images/x.jpg", a, b) == "../../raw/images/x.jpg"
    assert rebase("../shards/i.h5", a, b) == "../../w1/shards/i.h5"
    assert rebase("../shards/i.h5", a, a) == "../shards/i.h5"
    assert rebase("", a, b) == "" and rebase("/abs/x.png", a, b) == "/abs/x.png"


@pytest.mark.parametrize("workers", [1, 2])
def test_the_local_executor_keeps_order_and_sets_up_every_worker(workers: int) -> None:
    with make_executor(workers, _init, (100,), preload=[__name__]) as pool:
        ordered = list(pool.imap(_work, range(20), chunksize=3))
        unordered = sorted(pool.imap_unordered(_work, range(20)))
    assert [(i, v) for i, v, _ in ordered] == [(i, i + 100) for i in range(20)]
    assert [(i, v) for i, v, _ in unordered] == [(i, i + 100) for i in range(20)]
    pids = {pid for *_, pid in ordered}
    assert (pids == {os.getpid()}) if workers == 1 else (os.getpid() not in pids)


def test_an_unknown_executor_lists_the_known_ones() -> None:
    with pytest.raises(SegprepError, match="unknown executor 'slurm'; choose one of dask, local"):
        make_executor(2, kind="slurm")
    with pytest.raises(SegprepError, match="unknown executor 'slurm'; choose one of dask, local"):
        with executor_settings("slurm"):
            pass
    with pytest.raises(SegprepError, match="--scheduler tcp://x:1 needs --executor dask"):
        with executor_settings("local", "tcp://x:1"):
            pass
    assert {"local", "dask"} <= set(EXECUTORS)


def test_atomic_path_leaves_the_old_file_when_the_writer_fails(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "table.csv"
    with atomic_path(target) as tmp:
        assert tmp.suffix == ".csv" and tmp.parent == target.parent
        tmp.write_text("v1")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed mid-write")
    assert target.read_text() == "v1" and list(target.parent.iterdir()) == [target]
