"""Pairs/s of ``segprep ingest`` against the bare decode loop over the same files, in one process.

The bare loop is ``cv2.imread`` of every image and mask (and ROI) file in one process (libjpeg
decodes on one thread): the floor any ingest pays. Ingest also converts to RGB, computes the
perceptual hashes, two SHA-1 checksums and the mask statistics, writes the shard, plans the
blocks and assigns the splits. Both run in this one process over the same files, the page cache
warmed first, and their runs alternate (bare, ingest, bare, ingest, ...) so a neighbour's load
hits both alike; each side's best run counts. Ingest with one worker runs inline, so this
process's CPU time covers all of its work: the CPU-time ratio is the per-worker figure that a busy
machine distorts least, the wall-clock ratio the one a user sees. Ingest runs OpenCV on one
thread (segprep.ingest), like the bare loop's decoder.

Ingest writes every image uncompressed (about 1 MB per Kvasir-SEG image, 20x the JPEG): writing
it costs 0.35 ms (disk page cache) to 0.7 ms (/dev/shm) of CPU per pair, and on a slow disk the
write-back adds wall time; ``--work /dev/shm`` takes the disk out of the timing.

    python benchmarks/ingest_throughput.py                              # synthetic kvasir-seg, 200 pairs
    python benchmarks/ingest_throughput.py --n 400 --size 512
    python benchmarks/ingest_throughput.py --data /work/shared/data/Kvasir-SEG   # a real folder
    python benchmarks/ingest_throughput.py --data /work/shared/data/Kvasir-SEG --work /dev/shm
    python benchmarks/ingest_throughput.py --data /work/shared/data/Kvasir-SEG --breakdown

``--breakdown`` adds the CPU cost per pair of each step of ingest's per-pair path, timed alone.

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
from typing import Callable

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


def timed(run: Callable[[], object]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    run()
    return time.perf_counter() - wall, time.process_time() - cpu


def bare_decode(pairs: list[list[Path]]) -> None:
    for files in pairs:
        for path in files:
            cv2.imread(str(path), cv2.IMREAD_UNCHANGED)


def run_ingest(data: Path, work: Path, workers: int) -> None:
    ingest([data], work, workers=workers, force=True)
    close_shards()


def breakdown(pairs: list[list[Path]], tmp: Path, repeat: int) -> list[tuple[str, float]]:
    """ms per pair of each step of ingest's per-pair path, each timed alone over all pairs."""
    from segprep.hashing import array_sha1, image_hashes
    from segprep.imageio import read_image, read_mask
    from segprep.ingest import BLOCK, COMPRESSION, SHARD_PREFIX
    from segprep.shards import ShardWriter

    images = [read_image(files[0]) for files in pairs]
    masks = [read_mask(files[1]) for files in pairs]

    def write() -> None:
        for start in range(0, len(pairs), BLOCK):
            with ShardWriter(tmp / "breakdown.h5", SHARD_PREFIX, compression=COMPRESSION) as writer:
                for i in range(start, min(start + BLOCK, len(pairs))):
                    writer.add(sample_id=str(i), image=images[i], mask=masks[i])

    def each(function: Callable, items: list) -> Callable[[], None]:
        def run() -> None:
            for item in items:  # results dropped at once, as in the bare loop
                function(*item)
        return run

    def histogram(mask) -> None:
        cv2.calcHist([mask], [0], None, [256], [0, 256])

    def checksums(image, mask) -> None:
        array_sha1(image), array_sha1(mask)

    steps = {
        "cv2.imread image (bare)": each(cv2.imread, [(str(f[0]), -1) for f in pairs]),
        "cv2.imread mask (bare)": each(cv2.imread, [(str(f[1]), -1) for f in pairs]),
        "read_image (bytes, checks, decode to RGB)": each(read_image, [(f[0],) for f in pairs]),
        "read_mask (bytes, checks, decode, channel max)": each(read_mask, [(f[1],) for f in pairs]),
        "mask histogram (cv2.calcHist)": each(histogram, [(m,) for m in masks]),
        "perceptual hashes (phash + phash256)": each(image_hashes, [(im,) for im in images]),
        "SHA-1 of image and mask": each(checksums, list(zip(images, masks))),
        "shard write (image raw, mask lzf)": write,
    }
    out = []
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)  # as in an ingest worker
    try:
        for name, step in steps.items():
            cpu = min(timed(step)[1] for _ in range(repeat))
            out.append((name, cpu / len(pairs) * 1e3))
    finally:
        cv2.setNumThreads(threads)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, help="a dataset folder (any layout); default: synthetic")
    parser.add_argument("--n", type=int, default=200, help="synthetic pairs (without --data)")
    parser.add_argument("--size", type=int, default=384, help="synthetic image side (without --data)")
    parser.add_argument("--repeat", type=int, default=2, help="best of this many timings")
    parser.add_argument("--work", type=Path, default=None,
                        help="where the WORK folders go (default: the system temp folder); "
                             "/dev/shm takes the disk out of the timing")
    parser.add_argument("--breakdown", action="store_true",
                        help="also time each step of the per-pair path alone (CPU ms per pair)")
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
        load_before = os.getloadavg()
        work = tmp / "work"
        bare, one = [], []
        for _ in range(args.repeat):
            bare.append(timed(lambda: bare_decode(pairs)))
            shutil.rmtree(work, ignore_errors=True)
            one.append(timed(lambda: run_ingest(data, work, 1)))
        workers = default_workers()
        shutil.rmtree(work, ignore_errors=True)
        many = timed(lambda: run_ingest(data, work, workers))[0]
        load_after = os.getloadavg()
        shards_mb = sum(p.stat().st_size for p in (work / "shards").glob("*.h5")) / 1e6
        bare_wall, bare_cpu = min(w for w, _ in bare), min(c for _, c in bare)
        one_wall, one_cpu = min(w for w, _ in one), min(c for _, c in one)
        print(f"data: {data} ({n} pairs, {size_mb:.0f} MB of files -> {shards_mb:.0f} MB of shards "
              f"in {work.parent})")
        print(f"load average: {load_before[0]:.2f} before, {load_after[0]:.2f} after "
              f"({os.cpu_count()} cores)")
        print(f"bare decode (cv2.imread, 1 process):  {n / bare_wall:7.1f} pairs/s  "
              f"({bare_wall / n * 1e3:.2f} ms/pair wall, {bare_cpu / n * 1e3:.2f} ms/pair CPU)")
        print(f"ingest, 1 worker:                     {n / one_wall:7.1f} pairs/s  "
              f"({one_wall / n * 1e3:.2f} ms/pair wall, {one_cpu / n * 1e3:.2f} ms/pair CPU)")
        print(f"{f'ingest, {workers} workers:':38s}{n / many:7.1f} pairs/s  "
              f"({many / n * 1e3:.2f} ms/pair wall)")
        print(f"ratio ingest(1 worker) / bare decode: {bare_wall / one_wall:.2f} wall, "
              f"{bare_cpu / one_cpu:.2f} CPU time (target >= 0.80)")
        print(f"ratio ingest({workers} workers) / bare decode (1 process): {bare_wall / many:.2f} "
              f"= {bare_wall / many / workers:.2f} per worker")
        if args.breakdown:
            print("per-pair CPU cost of each step, timed alone (ms/pair):")
            steps = breakdown(pairs, tmp, args.repeat)
            for name, ms in steps:
                print(f"  {name:48s} {ms:6.3f}")
            path = sum(ms for name, ms in steps[2:])
            rest = one_cpu / n * 1e3 - path
            print(f"  {'sum of the steps from read_image on':48s} {path:6.3f}; ingest measured "
                  f"{one_cpu / n * 1e3:.3f}, the rest ({rest:.3f}) is planning, splits, "
                  f"manifest, Python and memory")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
