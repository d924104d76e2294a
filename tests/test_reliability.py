"""Reliability: one writer per WORK folder, reruns that heal damage, limits, workers that die with
their parent, and one-line errors instead of tracebacks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from segprep.augment.stage import augment
from segprep.clean import clean
from segprep.cli import main as segprep_cli
from segprep.ingest import ingest
from segprep.inspect import verify
from segprep.manifest import write_manifest
from segprep.shards import close_shards
from segprep.work import LOCK_NAME, WorkLock

def _segprep(*args: str, wait: bool = False) -> subprocess.Popen:
    """``segprep ARGS`` in a subprocess; with ``wait`` it imports everything first and starts
    only when a line arrives on its stdin (so a test can time it to the millisecond)."""
    code = ("import sys; from segprep.cli import main; import segprep.ingest\n"
            + ("sys.stdin.readline()\n" if wait else "") + "sys.exit(main())")
    return subprocess.Popen([sys.executable, "-c", code, *args], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _descendants(pid: int) -> set[int]:
    """Every living process below ``pid`` (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        if fields[0] != "Z":   # zombies are gone already
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


# ----------------------------------------------------------------------------- one writer

def test_two_ingests_into_one_work_folder_one_runs_the_other_refuses(synth, tmp_path: Path) -> None:
    data = synth("kvasir-seg", n=160, size=(160, 160), seed=11)
    work = tmp_path / "work"
    second = _segprep("ingest", str(data.root), "-o", str(work), "--workers", "1", wait=True)
    first = _segprep("ingest", str(data.root), "-o", str(work), "--workers", "1")
    deadline = time.time() + 60
    while time.time() < deadline:  # until the first holds the lock
        try:
            if json.loads((work / LOCK_NAME).read_text()).get("pid"):
                break
        except (OSError, ValueError):
            pass
        time.sleep(0.01)
    out2, err2 = second.communicate("go\n", timeout=120)
    out1, err1 = first.communicate(timeout=120)
    assert first.returncode == 0, err1
    assert second.returncode == 1 and "is in use by PID" in err2 and "segprep" in err2
    assert "Traceback" not in err2
    close_shards()
    assert verify(work / "manifests" / "ingest.csv").ok


def test_a_stale_lock_of_a_dead_process_is_taken_over(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (work / LOCK_NAME).write_text(json.dumps({"pid": 999999, "command": "segprep ingest (killed)"}))
    with WorkLock(work, "test") as lock:          # nobody holds the flock: taken over
        assert json.loads(lock.path.read_text())["pid"] == os.getpid()
        code = f"from segprep.work import WorkLock\nWorkLock({str(work)!r}, 'second').__enter__()"
        other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert other.returncode != 0 and "WorkInUse" in other.stderr
        assert f"in use by PID {os.getpid()}" in other.stderr and "test" in other.stderr
    with WorkLock(work, "after"):                 # released when the holder leaves
        pass


# ----------------------------------------------------------------------------- reruns heal

def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _flip_a_byte(path: Path) -> None:
    """A byte of the largest dataset's stored data (not the HDF5 structure): a chunk's 11th
    byte, or, in a kept JPEG/PNG file (contiguous), a byte near its end, inside the
    compressed pixel data (its start is headers that may not change the pixels)."""
    with h5py.File(path, "r") as handle:
        datasets = []
        handle.visititems(lambda name, node: datasets.append(node) if isinstance(node, h5py.Dataset)
                          and node.size > 100 and name != "ids" else None)
        biggest = max(datasets, key=lambda d: d.id.get_storage_size())
        if biggest.chunks:
            offset = biggest.id.get_chunk_info(0).byte_offset + 10
        else:
            offset = biggest.id.get_offset() + biggest.id.get_storage_size() - 16
    with open(path, "r+b") as raw:
        raw.seek(offset)
        byte = raw.read(1)
        raw.seek(offset)
        raw.write(bytes([byte[0] ^ 0xFF]))


def test_damaged_ingest_and_clean_outputs_are_rebuilt_by_a_plain_rerun(synth, tmp_path: Path) -> None:
    data = synth("kvasir-seg", n=70, seed=12)
    work = tmp_path / "work"
    first = ingest([data.root], work, workers=1)
    reference = first.manifest_path.read_bytes()
    cleaned = clean(first.manifest_path, workers=1, progress=False)
    clean_reference = cleaned.manifest_path.read_bytes()
    close_shards()

    _truncate(work / "shards" / "ingest-00001.h5")
    again = ingest([data.root], work, workers=1)
    assert not again.skipped and again.rebuilt == 1 and again.blocks_reused == again.blocks - 1
    assert "rebuilt 1 damaged block" in again.summary()
    assert again.manifest_path.read_bytes() == reference
    close_shards()
    assert verify(first.manifest_path).ok

    # a flipped byte keeps the file's size and structure: only --verify finds it
    _flip_a_byte(work / "shards" / "ingest-00000.h5")
    assert ingest([data.root], work, workers=1).skipped
    close_shards()
    assert not verify(first.manifest_path).ok
    healed = ingest([data.root], work, workers=1, verify=True)
    assert healed.rebuilt == 1 and healed.manifest_path.read_bytes() == reference
    close_shards()
    assert verify(first.manifest_path).ok

    _truncate(work / "shards" / "clean-00000.h5")
    again = clean(first.manifest_path, workers=1, progress=False)
    assert not again.skipped and again.rebuilt
    assert again.manifest_path.read_bytes() == clean_reference
    close_shards()
    assert verify(again.manifest_path).ok
    assert clean(first.manifest_path, workers=1, progress=False).skipped


def test_damaged_augment_shard_is_recomputed_alone(synth, tmp_path: Path) -> None:
    data = synth("kvasir-seg", n=16, seed=13)
    work = tmp_path / "work"
    cleaned = clean(ingest([data.root], work, workers=1).manifest_path, workers=1, progress=False)
    first = augment(cleaned.manifest_path, factor=6, size=64, workers=1, shard_size=32, progress=False)
    reference = first.manifest.read_bytes()
    close_shards()
    assert len(first.shards) >= 3
    _truncate(first.shards[1])
    again = augment(cleaned.manifest_path, factor=6, size=64, workers=1, shard_size=32, progress=False)
    assert not again.skipped and again.rebuilt == 1 and again.computed_rows == 32
    assert again.manifest.read_bytes() == reference
    close_shards()
    assert verify(again.manifest).ok
    _flip_a_byte(first.shards[0])
    assert augment(cleaned.manifest_path, factor=6, size=64, workers=1, shard_size=32,
                   progress=False).skipped
    healed = augment(cleaned.manifest_path, factor=6, size=64, workers=1, shard_size=32,
                     progress=False, verify=True)
    assert healed.rebuilt == 1
    close_shards()
    assert verify(healed.manifest).ok


# ----------------------------------------------------------------------------- limits

def test_a_factor_beyond_the_disk_is_refused_before_anything_is_planned(synth, tmp_path: Path) -> None:
    data = synth("kvasir-seg", n=12, seed=14)
    work = tmp_path / "work"
    cleaned = clean(ingest([data.root], work, workers=1).manifest_path, workers=1, progress=False)
    for factor in ("99999999999999999999", "1000000000"):
        result = CliRunner().invoke(segprep_cli, ["augment", str(cleaned.manifest_path),
                                                  "--factor", factor, "--workers", "1"])
        assert result.exit_code == 1 and "Traceback" not in result.output
        assert "rows need about" in result.output and "free" in result.output
    assert not (work / "manifests" / "augment.csv").exists()


# ----------------------------------------------------------------------------- workers

@pytest.mark.parametrize("stage", ["ingest", "clean"])
def test_killing_a_stage_kills_its_workers(synth, tmp_path: Path, stage: str) -> None:
    data = synth("kvasir-seg", n=300, size=(256, 256), seed=15)
    work = tmp_path / "work"
    if stage == "clean":
        manifest = ingest([data.root], work, workers=2).manifest_path
        command = ["clean", str(manifest), "--workers", "2"]
    else:
        command = ["ingest", str(data.root), "-o", str(work), "--workers", "2"]
    process = _segprep(*command)
    deadline = time.time() + 60
    workers: set[int] = set()
    while time.time() < deadline and len(workers) < 3:  # fork server + 2 workers
        workers = _descendants(process.pid)
        time.sleep(0.05)
    assert len(workers) >= 3, "the stage did not start its workers"
    os.kill(process.pid, signal.SIGKILL)
    process.communicate()
    deadline = time.time() + 15
    while time.time() < deadline and any(Path(f"/proc/{pid}").exists() and
                                         "Z" not in Path(f"/proc/{pid}/stat").read_text().split()[2]
                                         for pid in workers if Path(f"/proc/{pid}/stat").exists()):
        time.sleep(0.1)
    alive = [pid for pid in workers if Path(f"/proc/{pid}/stat").exists()
             and Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"]
    assert alive == []


# ----------------------------------------------------------------------------- one-line errors

def _read_only_folder(tmp_path: Path) -> Path:
    """A folder that cannot be written: chmod where permissions apply; as root (who ignores
    them), a path under /sys, which refuses new entries."""
    if os.geteuid() != 0:
        folder = tmp_path / "locked"
        folder.mkdir()
        folder.chmod(0o555)
        return folder / "work"
    probe = Path("/sys/segkit-read-only-test")
    try:
        probe.mkdir()
    except OSError:
        return probe / "work"
    probe.rmdir()
    pytest.skip("no read-only folder to be had here")


def test_a_read_only_output_folder_is_a_one_line_error_everywhere(synth, tmp_path: Path) -> None:
    from segtrain.cli import main as segtrain_cli

    data = synth("kvasir-seg", n=12, seed=16)
    work = tmp_path / "work"
    manifest = clean(ingest([data.root], work, workers=1).manifest_path, workers=1,
                     progress=False).manifest_path
    augmented = augment(manifest, factor=2, size=64, workers=1, progress=False).manifest
    target = _read_only_folder(tmp_path)
    runs = [
        (segprep_cli, ["ingest", str(data.root), "-o", str(target)]),
        (segprep_cli, ["clean", str(manifest), "-o", str(target), "--force"]),
        (segprep_cli, ["augment", str(manifest), "-o", str(target), "--factor", "2", "--size", "64"]),
        (segtrain_cli, ["run", str(augmented), "-o", str(target), "--epochs", "1", "--device", "cpu",
                        "--base-channels", "4", "--workers", "0"]),
    ]
    for cli, args in runs:
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 1, (args, result.output)
        assert "Traceback" not in result.output and "cannot write" in result.output, result.output


def _manifest_with(tmp_path: Path, image: np.ndarray, mask: np.ndarray, stage: str = "augment") -> Path:
    """A one-sample train/val/test manifest over a hand-written fixed shard (any dtype)."""
    shard = tmp_path / "shards" / "bad.h5"
    shard.parent.mkdir(parents=True)
    with h5py.File(shard, "w") as handle:
        handle.attrs.update(format="segprep-shard", version=1, stage=stage, layout="fixed", n=3,
                            size=mask.shape[:2])
        handle["images"] = np.stack([image] * 3)
        handle["masks"] = np.stack([mask] * 3)
        handle["ids"] = np.array([b"s/a", b"s/b", b"s/c"], dtype=object).astype("S")
    rows = [dict(sample_id=f"s/{k}", source="s", split=split, group=f"s/{k}",
                 image_shard="../shards/bad.h5", image_index=i, mask_shard="../shards/bad.h5",
                 mask_index=i, height=mask.shape[0], width=mask.shape[1], fg_fraction=0.1,
                 status="ok", issues="", parent_id="", image_path="", mask_path="")
            for i, (k, split) in enumerate(zip("abc", ("train", "val", "test")))]
    return write_manifest(pd.DataFrame(rows), tmp_path / "manifests" / "augment.csv")


def test_shards_of_the_wrong_dtype_or_shape_are_refused_by_name(tmp_path: Path) -> None:
    from segtrain.data import ShardDataset
    from segtrain.errors import SegtrainError

    mask = np.zeros((32, 32), np.uint8)
    floats = _manifest_with(tmp_path / "f", np.zeros((32, 32, 3), np.float64), mask)
    with pytest.raises(SegtrainError, match=r"bad.h5: images are float64 .* expected uint8"):
        ShardDataset(floats, "train")
    three_d = _manifest_with(tmp_path / "m", np.zeros((32, 32, 3), np.uint8), np.zeros((32, 32, 3), np.uint8))
    with pytest.raises(SegtrainError, match=r"masks are uint8 \(32, 32, 3\), expected uint8 \(H, W\)"):
        ShardDataset(three_d, "train")
    close_shards()
    problems = verify(three_d).failures
    assert problems and "masks[0] is uint8 (32, 32, 3), expected uint8 (H, W)" in problems[0][2]
    for cli_args in (["clean", str(three_d), "-o", str(tmp_path / "c")],
                     ["augment", str(floats), "-o", str(tmp_path / "a"), "--factor", "2"]):
        result = CliRunner().invoke(segprep_cli, cli_args)
        assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    close_shards()


def test_inspect_of_a_header_only_manifest(tmp_path: Path) -> None:
    manifest = tmp_path / "manifests" / "empty.csv"
    manifest.parent.mkdir()
    from segprep.manifest import COLUMNS
    manifest.write_text(",".join(COLUMNS) + "\n")
    result = CliRunner().invoke(segprep_cli, ["inspect", str(manifest)])
    assert result.exit_code == 0 and "0 rows" in result.output, result.output


def test_a_checkpoint_holding_code_is_refused_without_torch_advice(tmp_path: Path) -> None:
    from segtrain.checkpoint import read_checkpoint
    from segtrain.errors import SegtrainError

    class Payload:
        def __reduce__(self):
            return (os.system, ("echo should-never-run",))

    path = tmp_path / "evil.pt"
    torch.save({"format": "segkit-checkpoint", "payload": Payload()}, path)
    with pytest.raises(SegtrainError) as info:
        read_checkpoint(path)
    message = str(info.value)
    assert "holds Python objects" in message and "refused" in message and "system" in message
    assert "weights_only" not in message


def test_a_truncated_jpeg_with_its_end_marker_appended_is_unreadable(tmp_path: Path) -> None:
    import cv2

    rng = np.random.default_rng(17)
    for k in range(3):
        image = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
        mask = np.zeros((64, 64), np.uint8)
        mask[20:40, 20:40] = 255
        (tmp_path / "data" / "images").mkdir(parents=True, exist_ok=True)
        (tmp_path / "data" / "masks").mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(tmp_path / "data" / "images" / f"{k}.jpg"), image)
        cv2.imwrite(str(tmp_path / "data" / "masks" / f"{k}.png"), mask)
    cut = tmp_path / "data" / "images" / "1.jpg"
    data = cut.read_bytes()
    cut.write_bytes(data[: len(data) // 2] + b"\xff\xd9")
    result = ingest([tmp_path / "data"], tmp_path / "work", workers=1)
    assert result.n_samples == 2 and result.unreadable == 1
    unreadable = pd.read_csv(result.unreadable_path)
    assert unreadable["stem"].astype(str).tolist() == ["1"]
    assert "premature end" in unreadable["reason"].iloc[0]
