"""Pairs/s of ``segprep ingest`` against the conversion loop a user writes by hand, in one process.

The baseline is the seeds' hand-written conversion: read every image and mask (and ROI) file,
decode it with ``cv2.imread``, and write the arrays with h5py into one HDF5 file (one dataset per
array, as the arrays come; no checks, no hashes, no manifest). With W workers the baseline is W
processes, each converting its share into its own file. Ingest does more per pair: it checks
the file (complete, pixel limit, decoder warnings), converts to RGB, computes the perceptual
hashes, two SHA-1 checksums and the mask statistics, plans blocks and splits, and writes a
manifest; since shard format 2 it keeps an 8-bit JPEG's or PNG's own bytes instead of its
pixels, so its shards are about the size of the source while the baseline's file holds every
pixel. Both run in this one process over the same files, the page cache warmed first, and their
runs alternate (baseline, ingest, baseline, ingest, ...) so a neighbour's load hits both alike;
each side's best run counts. With one worker both run inline, so this process's CPU time covers
all of the work: the CPU-time ratio is the figure a busy machine distorts least, the wall-clock
ratio the one a user sees. OpenCV runs on one thread on both sides.

    python benchmarks/ingest_throughput.py                              # synthetic kvasir-seg, 200 pairs
    python benchmarks/ingest_throughput.py --n 400 --size 512
    python benchmarks/ingest_throughput.py --data /work/shared/data/Kvasir-SEG   # a real folder
    python benchmarks/ingest_throughput.py --data /work/shared/data/DRIVE
    python benchmarks/ingest_throughput.py --data /work/shared/data/Kvasir-SEG --breakdown

``--breakdown`` adds the CPU cost per pair of each step of ingest's per-pair path, timed alone.

Target: ingest at least 0.8 of the baseline's pairs/s with 1 and with 2 workers; shards at most
1.2x the source's bytes. A ``--data`` folder that does not exist is skipped (exit 0), so the
script can run where the data is absent.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import cv2
import h5py

from common import dataset
from segprep.executor import default_workers
from segprep.ingest import ingest
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


def bare_convert(pairs: list[list[Path]], out: Path) -> None:
    """The hand-written loop: decode each file with OpenCV, write the arrays into one HDF5 file."""
    cv2.setNumThreads(1)
    with h5py.File(out, "w") as handle:
        for i, files in enumerate(pairs):
            for name, path in zip(("images", "masks", "roi"), files):
                array = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
                if array is not None:
                    handle.create_dataset(f"{name}/{i:07d}", data=array)


def bare_parallel(pairs: list[list[Path]], folder: Path, workers: int) -> None:
    """The loop on ``workers`` processes, each converting its share into its own file."""
    if workers == 1:
        bare_convert(pairs, folder / "bare-0.h5")
        return
    shares = [(pairs[k::workers], folder / f"bare-{k}.h5") for k in range(workers)]
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        pool.starmap(bare_convert, shares)


def run_ingest(data: Path, work: Path, workers: int) -> None:
    ingest([data], work, workers=workers, force=True)
    close_shards()


def breakdown(pairs: list[list[Path]], tmp: Path, repeat: int) -> list[tuple[str, float]]:
    """ms per pair of each step of ingest's per-pair path, each timed alone over all pairs."""
    from segprep.hashing import array_sha1, image_hashes
    from segprep.imageio import read_image, read_mask
    from segprep.ingest import BLOCK, COMPRESSION, SHARD_PREFIX
    from segprep.shards import ShardWriter

    from segprep.imageio import decode_image, decode_mask, keepable

    decoded = [(decode_image(files[0]), decode_mask(files[1])) for files in pairs]
    images = [d[0].array for d in decoded]
    masks = [d[1].array for d in decoded]
    kept = [{name: d.data for name, d in zip(("images", "masks"), pair) if keepable(d)}
            for pair in decoded]

    def write() -> None:
        for start in range(0, len(pairs), BLOCK):
            with ShardWriter(tmp / "breakdown.h5", SHARD_PREFIX, compression=COMPRESSION) as writer:
                for i in range(start, min(start + BLOCK, len(pairs))):
                    writer.add(sample_id=str(i), image=images[i], mask=masks[i], files=kept[i])

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
        "shard write (JPEG/PNG bytes kept, else lzf pixels)": write,
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
        data = dataset(args.data, tmp, args.n, args.size)
        if data is None:
            return 0
        pairs = files_of(data)
        n = len(pairs)
        size_mb = sum(os.path.getsize(p) for files in pairs for p in files) / 1e6
        for files in pairs:  # warm the page cache: both sides then read from memory
            for path in files:
                path.read_bytes()
        load_before = os.getloadavg()
        work, bare_dir = tmp / "work", tmp / "bare"
        workers = default_workers()
        counts = sorted({1, workers})
        bare: dict[int, list] = {w: [] for w in counts}
        ours: dict[int, list] = {w: [] for w in counts}
        for _ in range(args.repeat):
            for w in counts:
                shutil.rmtree(bare_dir, ignore_errors=True)
                bare_dir.mkdir()
                bare[w].append(timed(lambda: bare_parallel(pairs, bare_dir, w)))
                shutil.rmtree(work, ignore_errors=True)
                ours[w].append(timed(lambda: run_ingest(data, work, w)))
        load_after = os.getloadavg()
        shards_mb = sum(p.stat().st_size for p in (work / "shards").glob("*.h5")) / 1e6
        bare_mb = sum(p.stat().st_size for p in bare_dir.glob("*.h5")) / 1e6
        print(f"data: {data} ({n} pairs, {size_mb:.1f} MB of files)")
        print(f"on disk: ingest shards {shards_mb:.1f} MB ({shards_mb / size_mb:.2f}x the files; "
              f"target <= 1.2x), the baseline's HDF5 {bare_mb:.1f} MB ({bare_mb / size_mb:.2f}x)")
        print(f"load average: {load_before[0]:.2f} before, {load_after[0]:.2f} after "
              f"({os.cpu_count()} cores; best of {args.repeat})")
        for w in counts:
            bare_wall = min(t for t, _ in bare[w])
            our_wall = min(t for t, _ in ours[w])
            line = (f"{w} worker(s): baseline {n / bare_wall:7.1f} pairs/s, ingest {n / our_wall:7.1f} "
                    f"pairs/s, ratio {bare_wall / our_wall:.2f} wall")
            if w == 1:
                bare_cpu, our_cpu = min(c for _, c in bare[w]), min(c for _, c in ours[w])
                line += (f", {bare_cpu / our_cpu:.2f} CPU ({bare_cpu / n * 1e3:.2f} against "
                         f"{our_cpu / n * 1e3:.2f} ms/pair)")
            print(line + " (target >= 0.80)")
        one_cpu = min(c for _, c in ours[1])
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
