"""The dask executor: every stage on a real dask.distributed LocalCluster (worker processes over
loopback) writes the same bytes as the local executor; a killed worker is survived; data errors,
an unreachable scheduler and a WORK the workers cannot write are clear errors."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

pytest.importorskip("distributed")

from segprep.augment.stage import augment
from segprep.clean import clean
from segprep.cli import main
from segprep.errors import SegprepError
from segprep.executor import executor_settings, make_executor
from segprep.ingest import ingest
from segprep.shards import close_shards


def _datasets(work: Path) -> dict[str, np.ndarray]:
    """Every dataset of every shard under WORK/shards, by file and name."""
    close_shards()
    out = {}
    for path in sorted((work / "shards").glob("*.h5")):
        with h5py.File(path, "r") as handle:
            handle.visititems(lambda name, node: out.__setitem__(
                f"{path.name}:{name}", node[()]) if isinstance(node, h5py.Dataset) else None)
    return out


def _assert_same(a: Path, b: Path, manifest: str) -> None:
    assert (a / "manifests" / manifest).read_bytes() == (b / "manifests" / manifest).read_bytes()
    left, right = _datasets(a), _datasets(b)
    assert left.keys() == right.keys() and left
    for key in left:
        x, y = left[key], right[key]
        if x.dtype == object:  # ids, encoded rows
            assert [bytes(v) if isinstance(v, (bytes, np.ndarray)) else v for v in x] == \
                   [bytes(v) if isinstance(v, (bytes, np.ndarray)) else v for v in y], key
        else:
            np.testing.assert_array_equal(x, y, err_msg=key)


def test_every_stage_writes_the_same_bytes_on_dask_as_locally(synth, tmp_path: Path) -> None:
    data = synth("kvasir-seg", n=150, noise=0.3, seed=21, size=(48, 48))  # 3 ingest blocks
    local, dask = tmp_path / "local", tmp_path / "dask"
    ingest([data.root], local, workers=2)
    ingest([data.root], dask, workers=2, executor="dask")
    _assert_same(local, dask, "ingest.csv")

    clean(local / "manifests" / "ingest.csv", workers=2, progress=False)
    clean(dask / "manifests" / "ingest.csv", workers=2, progress=False, executor="dask")
    _assert_same(local, dask, "clean.csv")
    assert (local / "reports/clean/findings.csv").read_bytes() == \
        (dask / "reports/clean/findings.csv").read_bytes()

    options = dict(factor=3, size=32, shard_size=40, progress=False)
    augment(local / "manifests" / "clean.csv", workers=2, **options)
    augment(dask / "manifests" / "clean.csv", workers=1, executor="dask", **options)  # 1 worker
    _assert_same(local, dask, "augment.csv")
    close_shards()


def test_a_worker_killed_mid_run_is_replaced_and_the_output_is_the_same(synth, tmp_path: Path,
                                                                        monkeypatch) -> None:
    from segprep import executor_dask

    data = synth("kvasir-seg", n=40, seed=22, size=(48, 48))
    ingest([data.root], tmp_path / "src", workers=1)
    manifest = tmp_path / "src" / "manifests" / "ingest.csv"
    options = dict(factor=12, size=48, shard_size=8, progress=False)
    augment(manifest, work=tmp_path / "local", workers=1, **options)

    killed: list[int] = []
    original = executor_dask.DaskExecutor.imap_unordered

    def kill_one_after_the_first(self, fn, items):
        for n, result in enumerate(original(self, fn, items)):
            if n == 0:  # the other worker is mid-task now
                pids = executor_dask.worker_pids(self)
                victim = sorted(pids.values())[-1]
                os.kill(victim, signal.SIGKILL)
                killed.append(victim)
            yield result

    monkeypatch.setattr(executor_dask.DaskExecutor, "imap_unordered", kill_one_after_the_first)
    result = augment(manifest, work=tmp_path / "dask", workers=2, executor="dask", **options)
    assert killed and result.rows == 40 * 8 // 10 * 12 + 8  # 32 train x 12 + 4 val + 4 test
    _assert_same(tmp_path / "local", tmp_path / "dask", "augment.csv")
    close_shards()


def test_a_failing_task_is_reported_not_retried(tmp_path: Path) -> None:
    started = time.perf_counter()
    with executor_settings("dask"), make_executor(2) as pool:
        assert pool.map(int, ["1", "2"]) == [1, 2]
        with pytest.raises(ValueError, match="invalid literal"):
            pool.map(int, ["3", "x", "5"])  # the same exception as a local pool's
    assert time.perf_counter() - started < 60


def test_an_unreachable_scheduler_is_a_clear_error_within_seconds(tmp_path: Path) -> None:
    started = time.perf_counter()
    with pytest.raises(SegprepError, match=r"cannot reach the Dask scheduler at tcp://127\.0\.0\.1:9"):
        with executor_settings("dask", "tcp://127.0.0.1:9"), make_executor(2):
            pass
    assert time.perf_counter() - started < 20
    result = CliRunner().invoke(main, ["ingest", str(tmp_path), "-o", str(tmp_path / "w"),
                                       "--scheduler", "tcp://127.0.0.1:9"])
    assert result.exit_code != 0 and "needs --executor dask" in result.output
    assert "Traceback" not in result.output


def test_a_work_folder_the_workers_cannot_write_is_named(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(SegprepError, match=r"not writable from 1 Dask worker.*a-file/work"):
        with executor_settings("dask", shared_dir=blocker / "work"), make_executor(1):
            pass


def test_the_cli_runs_on_dask_and_prints_the_dashboard(synth, tmp_path: Path) -> None:
    data = synth("kvasir-seg", n=12, seed=23)
    result = CliRunner().invoke(
        main, ["ingest", str(data.root), "-o", str(tmp_path / "w"), "--executor", "dask",
               "--workers", "1"])
    assert result.exit_code == 0, result.output
    assert "dask: 1 worker(s) at a LocalCluster on this machine; dashboard" in result.stderr
    assert "12 samples" in result.stdout
    close_shards()


def test_a_driver_killed_before_the_manifest_resumes_with_the_finished_blocks(synth, tmp_path: Path) -> None:
    """What a killed driver leaves: some blocks' shards and records written by the workers,
    no manifest. The rerun reuses them and writes what an uninterrupted run writes."""
    data = synth("kvasir-seg", n=150, noise=0.3, seed=21, size=(48, 48))
    whole = ingest([data.root], tmp_path / "whole", workers=2, executor="dask")
    work = tmp_path / "work"
    ingest([data.root], work, workers=2, executor="dask")
    (work / "manifests" / "ingest.csv").unlink()
    (work / "manifests" / "ingest.json").unlink()
    metas = sorted((work / "shards").glob("ingest-*.meta.json"))
    assert len(metas) == 3, sorted(p.name for p in (work / "shards").iterdir())
    metas[-1].unlink()  # the last block never finished
    again = ingest([data.root], work, workers=2, executor="dask")
    assert again.blocks_reused == again.blocks - 1
    assert again.manifest_path.read_bytes() == whole.manifest_path.read_bytes()
    close_shards()
