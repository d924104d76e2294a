"""Scaling out: the dask executor against the local one, and the driver's serial grouping step.

1. Throughput (``--pairs``, default 2,000 synthetic kvasir-seg pairs at --size): ``segprep
   ingest`` and ``segprep augment`` with the local executor and with a dask LocalCluster of 1
   and 2 worker processes, the same cores, alternating runs, best of --repeat. The ratio
   dask/local is Dask's overhead (task submission, a worker process per worker, results through
   the scheduler). Both write the same bytes (tests/test_dask.py).
2. The grouping step (``--hashes``, default 10k and 100k): near-duplicate grouping and split
   assignment (``segprep.splits.assign_splits``) need every sample's hashes at once, so they run
   on the driver over the hashes the tasks return. Synthetic 64- and 256-bit hashes, 10% of them
   near copies of another (a few bits flipped, as re-encoded video frames are); each size runs
   in its own process for a clean peak-memory figure. Pairwise distances make the time grow
   with n^2 (memory grows with n: distances are computed in row blocks of ~2^26 elements).

    .venv/bin/python benchmarks/scaling.py                            # both parts
    .venv/bin/python benchmarks/scaling.py --hashes 10000,100000,1000000 --pairs 0
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def grouping(n: int, seed: int = 0) -> dict:
    """Time and peak memory of assign_splits over n synthetic samples (in this process)."""
    import pandas as pd

    from segprep.splits import assign_splits

    rng = np.random.default_rng(seed)
    h64 = rng.integers(0, 2**63, n, dtype=np.int64).astype(np.uint64)
    h256 = [int.from_bytes(rng.bytes(32), "big") for _ in range(n)]
    copies = rng.choice(n, n // 10, replace=False)
    sources = rng.integers(0, n, len(copies))
    for c, s in zip(copies, sources):  # a near copy: a few bits of each hash flipped
        h64[c] = h64[s] ^ np.uint64(1 << int(rng.integers(0, 64)))
        h256[c] = h256[s] ^ (1 << int(rng.integers(0, 256)))
    samples = pd.DataFrame({
        "sample_id": [f"synth/{k:07d}" for k in range(n)], "source": "synth",
        "stem": [f"{k:07d}" for k in range(n)], "phash": [int(h) for h in h64],
        "confirm_hash": h256, "official_split": "", "layout_group": ""})
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    _, stats = assign_splits(samples)
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"n": n, "seconds": seconds, "peak_mb": peak / 1024, "added_mb": (peak - before) / 1024,
            "merges": stats["near_duplicate_merges"]}


def run_grouping(sizes: list[int], limit_s: int) -> None:
    print("| samples | grouping + splits (s) | peak RSS (MB) | of which the step (MB) | merges |")
    print("|---:|---:|---:|---:|---:|")
    for n in sizes:
        try:
            out = subprocess.run([sys.executable, __file__, "--one-grouping", str(n)],
                                 capture_output=True, text=True, timeout=limit_s, check=True)
        except subprocess.TimeoutExpired:
            print(f"| {n:,} | > {limit_s} (stopped) | - | - | - |")
            continue
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"| {n:,} | {r['seconds']:.1f} | {r['peak_mb']:.0f} | {r['added_mb']:.0f} | {r['merges']:,} |")


def run_throughput(pairs: int, size: int, repeat: int) -> None:
    from segprep.augment.stage import augment
    from segprep.ingest import ingest
    from segprep.shards import close_shards
    from segprep.synth import make_dataset

    tmp = Path(tempfile.mkdtemp(prefix="segprep-scaling-"))
    try:
        data = make_dataset(tmp / "raw", "kvasir-seg", n=pairs, size=(size, size), seed=0).root
        ingest([data], tmp / "src", workers=2)  # augment's input, made once
        manifest = tmp / "src" / "manifests" / "ingest.csv"
        close_shards()
        from distributed import LocalCluster

        rows = []
        for workers in (1, 2):
            # a cluster already running (what a user with a scheduler pays), started untimed
            cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                   dashboard_address=":0")
            runs = {"local": ("local", None), "dask": ("dask", None),
                    "dask, running cluster": ("dask", cluster.scheduler_address)}
            best: dict[str, list[float]] = {}
            try:
                for _ in range(repeat):
                    for name, (executor, scheduler) in runs.items():
                        for stage in ("ingest", "augment"):
                            work = tmp / f"{stage}-{executor}"
                            shutil.rmtree(work, ignore_errors=True)
                            started = time.perf_counter()
                            if stage == "ingest":
                                n = ingest([data], work, workers=workers, executor=executor,
                                           scheduler=scheduler).n_samples
                            else:
                                n = augment(manifest, work=work, factor=5, size=size // 2,
                                            workers=workers, executor=executor,
                                            scheduler=scheduler, progress=False).rows
                            close_shards()
                            rate = n / (time.perf_counter() - started)
                            best.setdefault(f"{stage}/{name}", []).append(rate)
            finally:
                cluster.close()
            for stage in ("ingest", "augment"):
                local = max(best[f"{stage}/local"])
                rows.append((stage, workers, local, max(best[f"{stage}/dask"]),
                             max(best[f"{stage}/dask, running cluster"])))
        print(f"\n{pairs} synthetic pairs at {size}x{size}; augment x5 at {size // 2}; "
              f"{os.cpu_count()} cores; best of {repeat}, runs alternating")
        print("| stage | workers | local samples/s | dask, LocalCluster per run | ratio | "
              "dask, running cluster | ratio |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for stage, workers, local, fresh, running in rows:
            print(f"| {stage} | {workers} | {local:.0f} | {fresh:.0f} | {fresh / local:.2f} | "
                  f"{running:.0f} | {running / local:.2f} |")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=2000, help="synthetic pairs (0: skip part 1)")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--hashes", default="10000,100000", help="sizes of part 2 (empty: skip)")
    parser.add_argument("--limit", type=int, default=1800, help="seconds allowed per grouping size")
    parser.add_argument("--one-grouping", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one_grouping:
        print(json.dumps(grouping(args.one_grouping)))
        return 0
    sizes = [int(s) for s in args.hashes.split(",") if s.strip()]
    if sizes:
        run_grouping(sizes, args.limit)
    if args.pairs:
        run_throughput(args.pairs, args.size, args.repeat)
    return 0


if __name__ == "__main__":
    sys.exit(main())
