"""Pairs/s of ``segprep ingest`` against the bare decode loop over the same files.

The bare loop is ``cv2.imread`` of every image and mask (and ROI) file, one process: the floor
any ingest pays. Ingest also converts to RGB, computes the perceptual hash, two SHA-1
checksums and the mask statistics, and writes the shard. Both run in this one process, the page
cache warmed first, so the ratio compares like with like.

    python benchmarks/ingest_throughput.py                              # synthetic kvasir-seg, 200 pairs
    python benchmarks/ingest_throughput.py --n 400 --size 512
    python benchmarks/ingest_throughput.py --data /work/shared/data/Kvasir-SEG   # a real folder
    python benchmarks/ingest_throughput.py --data /work/shared/data/Kvasir-SEG --work /dev/shm

Ingest writes every image uncompressed (about 1 MB per Kvasir-SEG image, 20x the JPEG), so on a
slow disk the write-back dominates; ``--work /dev/shm`` measures the CPU side alone.

Target: ingest with one worker at least 0.8 of the bare loop's pairs/s. A ``--data`` folder
that does not exist is skipped (exit 0), so the script can run where the data is absent.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import cv2

from segprep.ingest import default_workers, ingest
from segprep.readers import resolve_sources
from segprep.shards import close_shards


def files_of(data: Path) -> list[list[Path]]:
    """The files ingest would decode, pair by pair."""
    out = []
    for source in resolve_sources([data]):
        for pair in source.pairs():
            if pair.image_path and pair.mask_path:
                out.append([p for p in (pair.image_path, pair.mask_path, pair.roi_path) if p])
    return out


def bare_decode(pairs: list[list[Path]]) -> float:
    started = time.perf_counter()
    for files in pairs:
        for path in files:
            cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    return time.perf_counter() - started


def timed_ingest(data: Path, work: Path, workers: int) -> float:
    shutil.rmtree(work, ignore_errors=True)
    started = time.perf_counter()
    ingest([data], work, workers=workers, force=True)
    seconds = time.perf_counter() - started
    close_shards()
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, help="a dataset folder (any layout); default: synthetic")
    parser.add_argument("--n", type=int, default=200, help="synthetic pairs (without --data)")
    parser.add_argument("--size", type=int, default=384, help="synthetic image side (without --data)")
    parser.add_argument("--repeat", type=int, default=2, help="best of this many timings")
    parser.add_argument("--work", type=Path, default=None,
                        help="where the WORK folders go (default: the system temp folder); "
                             "/dev/shm takes the disk out of the timing")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="segprep-ingest-bench-", dir=args.work))
    try:
        if args.data is not None:
            if not args.data.is_dir():
                print(f"skipped: {args.data} not found")
                return 0
            data = args.data
        else:
            from segprep.synth import make_dataset
            data = tmp / "kvasir-seg"
            make_dataset(data, "kvasir-seg", n=args.n, size=(args.size, args.size), seed=0)
        pairs = files_of(data)
        n = len(pairs)
        size_mb = sum(os.path.getsize(p) for files in pairs for p in files) / 1e6
        for files in pairs:  # warm the page cache: both sides then read from memory
            for path in files:
                path.read_bytes()
        bare = min(bare_decode(pairs) for _ in range(args.repeat))
        one = min(timed_ingest(data, tmp / "work", 1) for _ in range(args.repeat))
        workers = default_workers()
        many = timed_ingest(data, tmp / "work", workers)
        shards_mb = sum(p.stat().st_size for p in (tmp / "work" / "shards").glob("*.h5")) / 1e6
        print(f"data: {data} ({n} pairs, {size_mb:.0f} MB of files -> {shards_mb:.0f} MB of shards)")
        print(f"bare decode (cv2.imread, 1 process): {n / bare:8.1f} pairs/s  ({bare:.2f} s)")
        print(f"ingest, 1 worker:                    {n / one:8.1f} pairs/s  ({one:.2f} s)")
        print(f"ingest, {workers} workers:                   {n / many:8.1f} pairs/s  ({many:.2f} s)")
        print(f"ratio ingest(1 worker) / bare decode: {bare / one:.2f} (target >= 0.80)")
        print(f"ratio ingest({workers} workers) / bare decode: {bare / many:.2f}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
