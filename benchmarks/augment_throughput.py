"""Throughput of `segprep augment` against the loop a user writes by hand, in one process run.

Runs the same pipeline (a preset, fit to --size first) over the same images:

1. the baseline: the bare albumentations loop that also writes its outputs with h5py, as a
   hand-written offline script does (per sample one resize, then F-1 seeded ``Compose`` calls;
   every row into fixed-size ``images``/``masks`` arrays, one chunk per sample, uncompressed;
   with N processes each writes its own file);
2. the same loop in memory, writing nothing (the ceiling);
3. the segprep augment stage with 1 worker and with N workers (reads the source shard, writes
   its shards, checksums, lineage, the manifest), on the albumentations backend, on the
   Augmentor backend, and with ``--image-codec`` when given.

Prints samples/s (rows written, variant 0 included), the median of --repeat interleaved runs,
and each run's ratio to the baseline on the same number of processes. Target: segprep >= 0.9 of
the baseline for N = 1 and N = all cores. OpenCV runs single-threaded everywhere.

    .venv/bin/python benchmarks/augment_throughput.py --repeat 3                     # synthetic images
    .venv/bin/python benchmarks/augment_throughput.py --images /work/shared/data/Kvasir-SEG --repeat 3
    .venv/bin/python benchmarks/augment_throughput.py --images /work/shared/data/Kvasir-SEG --breakdown
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import cv2
import h5py
import numpy as np
import pandas as pd

from common import step_timers
from segprep.augment.backends import fit
from segprep.augment.presets import preset_transforms
from segprep.augment.stage import augment, parse_size, variant_seed
from segprep.executor import available_cpus, pool_context
from segprep.manifest import write_manifest
from segprep.shards import ShardWriter

cv2.setNumThreads(1)


def synthetic(n: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Kvasir-like samples: smooth coloured texture, one elliptic object, 400-620 x 500-720."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        h, w = int(rng.integers(400, 620)), int(rng.integers(500, 720))
        small = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        image = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
        image = cv2.add(image, rng.integers(0, 20, (h, w, 3), dtype=np.uint8))
        mask = np.zeros((h, w), np.uint8)
        cv2.ellipse(mask, (int(rng.integers(w // 4, 3 * w // 4)), int(rng.integers(h // 4, 3 * h // 4))),
                    (int(rng.integers(20, w // 4)), int(rng.integers(20, h // 4))),
                    float(rng.integers(0, 180)), 0, 360, 1, -1)
        out.append((image, mask))
    return out


def from_folder(folder: Path, n: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The first n image/mask pairs of an ``images/`` + ``masks/`` folder (Kvasir-SEG layout)."""
    from segprep import imageio
    images = sorted(p for p in (folder / "images").iterdir() if imageio.is_image_file(p))[:n]
    out = []
    for path in images:
        masks = [p for p in (folder / "masks").glob(path.stem + ".*")]
        if masks:
            mask = imageio.read_mask(masks[0])
            out.append((imageio.read_image(path), (mask >= 128).astype(np.uint8)))
    return out


def write_input(samples: list, root: Path) -> Path:
    """A clean-like manifest over one variable-layout shard (all train); images uncompressed
    and masks lzf, as ingest and clean store them."""
    rows = []
    with ShardWriter(root / "shards" / "clean-00000.h5", "clean",
                     compression={"images": "none", "masks": "lzf"}) as writer:
        for i, (image, mask) in enumerate(samples):
            index = writer.add(sample_id=f"bench/{i:05d}", image=image, mask=mask)
            rows.append({"sample_id": f"bench/{i:05d}", "source": "bench", "split": "train",
                         "group": str(i), "image_shard": "../shards/clean-00000.h5",
                         "image_index": index, "mask_shard": "../shards/clean-00000.h5",
                         "mask_index": index, "height": mask.shape[0], "width": mask.shape[1],
                         "fg_fraction": float(mask.mean()), "status": "ok", "issues": "",
                         "parent_id": "", "image_path": "", "mask_path": ""})
    return write_manifest(pd.DataFrame(rows), root / "manifests" / "clean.csv")


# ----------------------------------------------------------------------------- the bare loop

_bare: dict = {}


def _bare_init(preset: str, size: tuple[int, int], factor: int) -> None:
    import albumentations as A
    cv2.setNumThreads(1)
    _bare["compose"] = A.Compose(preset_transforms(preset, size), mask_interpolation=cv2.INTER_NEAREST,
                                 save_applied_params=True)
    _bare["size"], _bare["factor"] = size, factor


def _bare_one(item: tuple[int, np.ndarray, np.ndarray], write=None) -> int:
    """What any hand-written offline script does per sample: resize, then F-1 seeded calls;
    ``write(image, mask)`` gets every row (the resized original first)."""
    index, image, mask = item
    compose, size, factor = _bare["compose"], _bare["size"], _bare["factor"]
    image, mask, _ = fit(image, mask, None, size)
    if write is not None:
        write(image, mask)
    for variant in range(1, factor):
        seed = variant_seed(0, f"bench/{index:05d}", variant)
        compose.set_random_state(np.random.default_rng(seed), random.Random(seed))
        out = compose(image=image, masks=[mask])
        if write is not None:
            write(out["image"], out["masks"][0])
    return factor


def _bare_share(items: list, preset: str, size: tuple[int, int], factor: int, out: str) -> int:
    """The loop over a share of the samples, writing its rows with h5py into its own file:
    fixed-size arrays, one chunk per sample, uncompressed (what a hand-written script does)."""
    _bare_init(preset, size, factor)
    rows = len(items) * factor
    with h5py.File(out, "w") as handle:
        images = handle.create_dataset("images", (rows, *size, 3), np.uint8, chunks=(1, *size, 3))
        masks = handle.create_dataset("masks", (rows, *size), np.uint8, chunks=(1, *size))
        written = [0]

        def write(image: np.ndarray, mask: np.ndarray) -> None:
            images[written[0]] = image
            masks[written[0]] = mask
            written[0] += 1

        return sum(_bare_one(item, write) for item in items)


def bare_loop(samples: list, preset: str, size: tuple[int, int], factor: int,
              processes: int, folder: Path | None = None) -> tuple[float, float | None]:
    """The bare loop on ``processes`` processes; with ``folder``, writing its rows there."""
    items = [(i, image, mask) for i, (image, mask) in enumerate(samples)]
    started, cpu = time.perf_counter(), time.process_time()
    if folder is None:
        if processes == 1:
            _bare_init(preset, size, factor)
            rows = sum(_bare_one(item) for item in items)
        else:
            with pool_context().Pool(processes, initializer=_bare_init,
                                      initargs=(preset, size, factor)) as pool:
                rows = sum(pool.imap_unordered(_bare_one, items, chunksize=1))
    else:
        shares = [(items[k::processes], preset, size, factor, str(folder / f"bare-{k}.h5"))
                  for k in range(processes)]
        if processes == 1:
            rows = _bare_share(*shares[0])
        else:
            with pool_context().Pool(processes) as pool:
                rows = sum(pool.starmap(_bare_share, shares))
    return _rates(rows, started, cpu, processes)


def _rates(rows: int, started: float, cpu: float, processes: int) -> tuple[float, float | None]:
    """Rows per wall second, and (on one process, where this process did all the work) rows per
    CPU second of this process: the latter does not move when other jobs share the cores."""
    wall = rows / (time.perf_counter() - started)
    return wall, (rows / (time.process_time() - cpu) if processes == 1 else None)


def stage(manifest: Path, work: Path, preset: str, size: tuple[int, int], factor: int,
          workers: int, backend: str = "albumentations",
          image_codec: str = "raw") -> tuple[float, float | None]:
    started, cpu = time.perf_counter(), time.process_time()
    result = augment(manifest, factor=factor, size=size, preset=preset, backend=backend,
                     workers=workers, work=work, force=True, progress=False,
                     image_codec=image_codec)
    return _rates(result.rows, started, cpu, workers)


def breakdown(manifest: Path, work: Path, samples: list, preset: str, size: tuple[int, int], factor: int,
              repeat: int) -> list[tuple[str, float]]:
    """ms per row of the stage's steps, from one in-process run (1 worker) with each step wrapped
    in a timer, next to the bare loop's ms per row in the same process. Best run of ``repeat``."""
    from segprep.augment import backends
    from segprep.augment import stage as stage_module
    from segprep.shards import ShardWriter as Writer

    steps = [(stage_module._Worker, "_load", "read + fit the source (per row)"),
             (stage_module, "fit", "  of which: fit to --size (the bare loop does it too)"),
             (stage_module._Worker, "_variant", "augment incl. redraws and params as JSON-ready"),
             (backends, "jsonable", "  of which: params to JSON-ready values"),
             (Writer, "add", "shard write (mask compression included)"),
             (stage_module, "_row", "manifest row (two SHA-1s, JSON text)")]

    best: list[tuple[str, float]] | None = None
    with step_timers(steps) as spent:
        for _ in range(repeat):
            _bare_init(preset, size, factor)
            started = time.perf_counter()
            rows = sum(_bare_one((i, image, mask)) for i, (image, mask) in enumerate(samples))
            bare = (time.perf_counter() - started) / rows
            spent.clear()
            started = time.perf_counter()
            result = augment(manifest, factor=factor, size=size, preset=preset, workers=1, work=work,
                             force=True, progress=False)
            total = (time.perf_counter() - started) / result.rows
            run = [("bare loop, all of it", bare), ("segprep augment, all of it", total)]
            run += [(key, spent[key] / result.rows) for _, _, key in steps]
            if best is None or total < best[1][1]:
                best = run
    return best or []


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=Path, default=None,
                        help="a folder with images/ and masks/ (e.g. Kvasir-SEG); synthetic if absent")
    parser.add_argument("--n", type=int, default=32, help="source images")
    parser.add_argument("--factor", type=int, default=25)
    parser.add_argument("--size", default="352")
    parser.add_argument("--preset", default="default")
    parser.add_argument("--workers", type=int, default=available_cpus(), help="N (default: all cores)")
    parser.add_argument("--repeat", type=int, default=3, help="the median of this many timings per run")
    parser.add_argument("--image-codec", default="raw",
                        help="also time the stage with this --image-codec (png, jpeg:Q)")
    parser.add_argument("--breakdown", action="store_true",
                        help="only: ms per row of each step of the stage (1 worker, in process) and of the bare loop")
    args = parser.parse_args()
    size = parse_size(args.size)

    if args.images is not None and args.images.is_dir():
        samples = from_folder(args.images, args.n)
        what = f"{len(samples)} images from {args.images}"
    else:
        if args.images is not None:
            print(f"{args.images} not found: using synthetic images", file=sys.stderr)
        samples = synthetic(args.n)
        what = f"{len(samples)} synthetic images"
    mean_hw = np.mean([s[1].shape for s in samples], axis=0).round().astype(int)
    print(f"{what} (mean {mean_hw[0]}x{mean_hw[1]}), factor {args.factor}, size {size[0]}x{size[1]}, "
          f"preset {args.preset}, N = {args.workers} of {os.cpu_count()} cores")

    with tempfile.TemporaryDirectory(prefix="augment-bench-") as tmp:
        tmp = Path(tmp)
        manifest = write_input(samples, tmp / "work")
        if args.breakdown:
            print()
            print("| step | ms per row |")
            print("|---|---:|")
            for name, seconds in breakdown(manifest, tmp / "seg", samples, args.preset, size, args.factor,
                                           args.repeat):
                print(f"| {name} | {1e3 * seconds:.3f} |")
            return 0
        # Warm-up: the fork server imports albumentations once (about 2 s), for all contenders.
        with pool_context().Pool(1) as pool:
            pool.map(abs, [0])

        (tmp / "bare").mkdir()
        runs = [("bare loop + h5py write (baseline)", bare_loop, (samples,), {"folder": tmp / "bare"}),
                ("bare loop in memory (ceiling)", bare_loop, (samples,), {}),
                ("segprep augment (albumentations)", stage, (manifest, tmp / "seg"), {}),
                ("segprep augment --backend augmentor", stage, (manifest, tmp / "aug"),
                 {"backend": "augmentor"})]
        if args.image_codec != "raw":
            runs.append((f"segprep augment --image-codec {args.image_codec}", stage,
                         (manifest, tmp / "codec"), {"image_codec": args.image_codec}))
        results = []
        for n in sorted({1, args.workers}):
            timings: dict[str, list] = {name: [] for name, *_ in runs}
            # Interleaved repeats, the median of each: other jobs hit all runs alike.
            for _ in range(args.repeat):
                for name, fn, head, options in runs:
                    timings[name].append(fn(*head, args.preset, size, args.factor, n, **options))
            median = {name: (float(np.median([w for w, _ in t])),
                             float(np.median([c for _, c in t])) if t[0][1] is not None else None)
                      for name, t in timings.items()}
            bare_wall, bare_cpu = median[runs[0][0]]
            for name, *_ in runs:
                wall, cpu = median[name]
                results.append((name, n, wall, wall / bare_wall, cpu, cpu / bare_cpu if cpu else None))

    print()
    print("| run | processes | samples/s (wall) | ratio to bare loop | samples per CPU-s | ratio (CPU) |")
    print("|---|---|---|---|---|---|")
    for name, n, wall, ratio, cpu, cpu_ratio in results:
        target = "" if name != "segprep augment (albumentations)" else (
            " (>= 0.9)" if ratio >= 0.9 else " (< 0.9)")
        cpu_text = f"{cpu:.1f}" if cpu else "-"
        cpu_ratio_text = f"{cpu_ratio:.2f}" if cpu_ratio else "-"
        print(f"| {name} | {n} | {wall:.1f} | {ratio:.2f}{target} | {cpu_text} | {cpu_ratio_text} |")
    print(f"\nload average after the runs: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores "
          f"(wall-clock ratios are only meaningful on an otherwise idle machine)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
