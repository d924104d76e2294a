"""kill -9 at random points of ingest, augment and `segtrain run`, then a plain rerun (with
--resume for training): is the result identical to an uninterrupted run?

For each stage, one uninterrupted run gives the reference. Then ``--trials`` times: the stage
starts as a subprocess, is killed with SIGKILL after a random share of the reference's
duration, and runs again to the end. Compared:

* ingest and augment: the manifest's bytes, and every shard's datasets (ids, images, masks,
  ROIs) and attributes, by content;
* segtrain run: the final weights (``last.pt``, bit for bit), the history's losses and the test
  metrics of ``summary.json``.

    .venv/bin/python benchmarks/faults.py [--trials 10] [--seed 0] [--out DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

from segprep.synth import make_dataset

BIN = Path(sys.executable).parent


def _run(args: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def _kill_after(args: list[str], seconds: float) -> bool:
    """Start ``args`` and SIGKILL it after ``seconds``; whether it was still running."""
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        process.wait(timeout=seconds)
        return False
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGKILL)
        process.wait()
        return True


def _shard_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with h5py.File(path, "r") as handle:
        for key in sorted(handle.attrs):
            digest.update(f"{key}={np.asarray(handle.attrs[key]).tolist()}".encode())

        def visit(name: str, node) -> None:
            if isinstance(node, h5py.Dataset):
                digest.update(name.encode())
                if h5py.check_string_dtype(node.dtype) is not None:  # ids: the strings, not pointers
                    digest.update("\n".join(node.asstr()[()].tolist()).encode())
                else:
                    digest.update(np.ascontiguousarray(node[()]).tobytes())
        handle.visititems(visit)
    return digest.hexdigest()


def _work_digest(work: Path, manifest: str) -> dict:
    import pandas as pd

    manifest_path = work / "manifests" / manifest
    table = pd.read_csv(manifest_path, dtype=str, keep_default_na=False)
    names = set(table["image_shard"]) | set(table["mask_shard"])
    return {"manifest": hashlib.sha256(manifest_path.read_bytes()).hexdigest(),
            **{name: _shard_digest(work / "manifests" / name) for name in sorted(names)}}


def _run_digest(out: Path) -> dict:
    import pandas as pd
    import torch

    state = torch.load(out / "last.pt", map_location="cpu", weights_only=True)["model_state"]
    weights = hashlib.sha256(b"".join(t.numpy().tobytes() for t in state.values())).hexdigest()
    summary = json.loads((out / "summary.json").read_text())
    history = pd.read_csv(out / "history.csv")
    return {"weights": weights, "train_loss": history["train_loss"].round(8).tolist(),
            "test": summary["test"]["mean"]}


def stage_trials(name: str, command, digest, trials: int, rng: random.Random) -> tuple[int, int, int]:
    """(identical, killed mid-run, trials)."""
    reference_seconds = command(kill_after=None)
    reference = digest()
    identical = killed = 0
    for trial in range(trials):
        seconds = rng.uniform(0.05, 0.95) * reference_seconds
        was_running = command(kill_after=seconds)
        killed += was_running
        command(kill_after=None, again=True)
        same = digest() == reference
        identical += same
        print(f"  {name} trial {trial + 1}: killed after {seconds:.1f} s of ~{reference_seconds:.1f}"
              f"{'' if was_running else ' (it had finished)'}; rerun {'identical' if same else 'DIFFERENT'}",
              flush=True)
    return identical, killed, trials


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="faults-"))
    rng = random.Random(args.seed)
    raw = out / "raw"
    make_dataset(raw, "kvasir-seg", n=240, size=(256, 256), noise=0.1, seed=args.seed, force=True)
    work = out / "work"
    segprep, segtrain = str(BIN / "segprep"), str(BIN / "segtrain")

    def ingest(kill_after: float | None, again: bool = False) -> float | bool:
        if not again:
            shutil.rmtree(work, ignore_errors=True)
        command = [segprep, "ingest", str(raw), "-o", str(work), "--workers", "2"]
        return _run(command) if kill_after is None else _kill_after(command, kill_after)

    results = {"ingest": stage_trials("ingest", ingest, lambda: _work_digest(work, "ingest.csv"),
                                      args.trials, rng)}
    _run([segprep, "clean", str(work / "manifests" / "ingest.csv"), "--workers", "2"])
    augmented = work / "manifests" / "augment.csv"

    def augment(kill_after: float | None, again: bool = False) -> float | bool:
        if not again:
            for path in (augmented, work / "manifests" / "augment.json"):
                path.unlink(missing_ok=True)
            shutil.rmtree(work / "manifests" / ".augment-shards", ignore_errors=True)
            for shard in (work / "shards").glob("augment-*"):
                shard.unlink()
        command = [segprep, "augment", str(work / "manifests" / "clean.csv"), "--factor", "8",
                   "--size", "128", "--workers", "2"]
        return _run(command) if kill_after is None else _kill_after(command, kill_after)

    results["augment"] = stage_trials("augment", augment, lambda: _work_digest(work, "augment.csv"),
                                      args.trials, rng)
    run_dir = out / "run"

    def train(kill_after: float | None, again: bool = False) -> float | bool:
        if not again:
            shutil.rmtree(run_dir, ignore_errors=True)
        command = [segtrain, "run", str(augmented), "--model", "unet", "--base-channels", "8",
                   "--epochs", "3", "--batch-size", "16", "--workers", "0", "--device", "cpu",
                   "-o", str(run_dir), "--seed", "0"] + (["--resume"] if again else [])
        return _run(command) if kill_after is None else _kill_after(command, kill_after)

    results["segtrain run --resume"] = stage_trials("segtrain run", train, lambda: _run_digest(run_dir),
                                                    args.trials, rng)
    print("\nkill -9 at a random point, then a plain rerun (training: --resume):")
    for name, (identical, killed, trials) in results.items():
        print(f"  {name:24s} {identical} of {trials} identical ({killed} killed mid-run)")
    if args.out is None:
        shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
