"""Samples/s of segtrain's ShardDataset against a dataset reading the same samples from PNGs.

Builds N synthetic fixed-size samples in a temporary folder, written as a fixed-layout shard
(lzf, the default, and uncompressed) and as PNG files (image + 0/255 mask, as datasets ship),
then times each through ``segtrain.data.make_loader`` with the same workers and batch size,
in this one process. Also times ``__getitem__`` alone (no DataLoader) to show how much of an
item's cost is reading versus the loader's own work (collate, passing tensors between
processes), which both datasets pay alike.

    python benchmarks/loader_throughput.py --n 512 --size 352 --workers 2 --batch-size 16
    python benchmarks/loader_throughput.py --manifest WORK/manifests/augment.csv   # a real one too

Target: the lzf shard at least 5x the PNG dataset's samples/s through the loader.

What limits it (measured on 2 busy cores, 352x352): PNG decoding is ~3-4 ms per sample; a
shard sample is ~0.6 ms to read, of which lzf-decoding the *mask* is most (~0.4 ms: a 0/1
mask compresses 50x and LZF expands long runs byte by byte; uncompressed 0.07 ms, gzip-1
~0.2 ms). Moving a batch from a worker to the main process costs about as much again, for
both datasets alike, which is why ShardDataset sends uint8 and normalises in the main process.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from segprep.manifest import write_manifest
from segprep.shards import ShardWriter, close_shards
from segtrain.data import ShardDataset, image_to_tensor, make_loader, resolve_normalization


def synthetic_sample(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """An endoscopy-like image: smooth shading, texture, a few blobs; a blob mask.

    Content matters: pure noise would make PNG slow and lzf useless, a flat image the reverse.
    """
    low = rng.uniform(40, 220, (6, 6, 3)).astype(np.float32)
    image = cv2.resize(low, (size, size), interpolation=cv2.INTER_CUBIC)
    image += rng.normal(0, 4, image.shape).astype(np.float32)  # sensor noise
    mask = np.zeros((size, size), np.uint8)
    for _ in range(rng.integers(1, 4)):
        center = tuple(int(c) for c in rng.integers(size // 6, size - size // 6, 2))
        axes = tuple(int(a) for a in rng.integers(size // 16, size // 5, 2))
        cv2.ellipse(mask, center, axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
    image[mask > 0] = image[mask > 0] * 0.7 + np.array([180, 90, 80], np.float32) * 0.3
    return np.clip(image, 0, 255).astype(np.uint8), mask


def _row(i: int, shard: str, size: int) -> dict:
    return dict(sample_id=f"bench/{i:05d}", source="bench", split="train", group=str(i),
                image_shard=shard, image_index=i, mask_shard=shard, mask_index=i, height=size,
                width=size, fg_fraction=0.0, status="ok", issues="", parent_id="",
                image_path=f"png/images/{i:05d}.png", mask_path=f"png/masks/{i:05d}.png")


def build(root: Path, n: int, size: int, compressions: list[str]) -> dict[str, Path]:
    """Write the samples once per compression and as PNGs; returns manifest per compression."""
    rng = np.random.default_rng(0)
    (root / "png" / "images").mkdir(parents=True)
    (root / "png" / "masks").mkdir(parents=True)
    writers = {c: ShardWriter(root / f"shard-{c}.h5", "augment", fixed_size=(size, size), compression=c)
               for c in compressions}
    for i in range(n):
        image, mask = synthetic_sample(rng, size)
        for writer in writers.values():
            writer.add(sample_id=f"bench/{i:05d}", image=image, mask=mask)
        cv2.imwrite(str(root / "png" / "images" / f"{i:05d}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        cv2.imwrite(str(root / "png" / "masks" / f"{i:05d}.png"), mask * 255)
    manifests = {}
    for c, writer in writers.items():
        writer.close()
        rows = [_row(i, f"shard-{c}.h5", size) for i in range(n)]
        manifests[c] = write_manifest(pd.DataFrame(rows), root / f"manifest-{c}.csv")
    return manifests


class PngDataset(Dataset):
    """The baseline: what a typical segmentation repo does, cv2.imread per file, same output."""

    def __init__(self, root: Path, n: int, normalize: str = "imagenet") -> None:
        self.images = [str(root / "png" / "images" / f"{i:05d}.png") for i in range(n)]
        self.masks = [str(root / "png" / "masks" / f"{i:05d}.png") for i in range(n)]
        self.mean, self.std = resolve_normalization(normalize)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict:
        image = cv2.cvtColor(cv2.imread(self.images[i], cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        mask = (cv2.imread(self.masks[i], cv2.IMREAD_GRAYSCALE) > 127).view(np.uint8)
        return {"image": image_to_tensor(image, self.mean, self.std),
                "mask": torch.from_numpy(mask.astype(np.int64)),
                "roi": torch.from_numpy(np.ones(mask.shape, np.uint8)),
                "sample_id": f"bench/{i:05d}", "index": i}


class PerItem(Dataset):
    """A ShardDataset seen only through ``__getitem__``: float items, default collate, float
    tensors through shared memory. Shows what the batched uint8 path of ShardDataset saves."""

    def __init__(self, dataset: ShardDataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> dict:
        return self.dataset[i]


def items_per_second(dataset: Dataset, repeats: int) -> float:
    """``__getitem__`` alone, in this process: the cost of reading one sample."""
    dataset[0]
    start = time.perf_counter()
    for _ in range(repeats):
        for i in range(len(dataset)):
            dataset[i]
    return repeats * len(dataset) / (time.perf_counter() - start)


def _cpu_seconds() -> float:
    """CPU time of this process and its live children (the loader's workers), from /proc:
    unlike wall time, it does not depend on what else the machine's cores are doing."""
    total = time.process_time()
    ticks = os.sysconf("SC_CLK_TCK")
    me = str(os.getpid())
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[1] == me:  # fields[1] is the parent pid; 11 and 12 are utime and stime
            total += (int(fields[11]) + int(fields[12])) / ticks
    return total


def loader_per_second(dataset: Dataset, *, batch_size: int, workers: int,
                      passes: int) -> tuple[float, float]:
    """Samples/s through the DataLoader after one warm-up pass (which starts the workers),
    and CPU milliseconds per sample spent by all its processes."""
    loader = make_loader(dataset, batch_size=batch_size, shuffle=True, workers=workers, pin_memory=False)
    for _ in loader:
        pass
    cpu = _cpu_seconds()
    start = time.perf_counter()
    count = 0
    for _ in range(passes):
        for batch in loader:
            count += len(batch["sample_id"])
    wall = time.perf_counter() - start
    cpu = _cpu_seconds() - cpu
    del loader  # stop its persistent workers before the next dataset is timed
    return count / wall, 1000 * cpu / count


def _size_mb(paths: list[Path]) -> float:
    return sum(p.stat().st_size for p in paths) / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=512, help="synthetic samples (default 512)")
    parser.add_argument("--size", type=int, default=352, help="sample side in pixels (default 352)")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers (default 2)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--passes", type=int, default=2, help="timed passes over the data after a warm-up")
    parser.add_argument("--compressions", default="lzf,none", help="shard compressions to time (lzf,none,gzip)")
    parser.add_argument("--manifest", type=Path, help="also time the train split of this real manifest")
    parser.add_argument("--manifest-size", type=int, help="resize the real manifest's samples (variable sizes)")
    args = parser.parse_args()

    compressions = [c.strip() for c in args.compressions.split(",") if c.strip()]
    results: list[tuple[str, str, float, float, float]] = []  # name, on disk, items/s, loader/s, CPU ms
    with tempfile.TemporaryDirectory(prefix="segkit-loader-") as tmp:
        root = Path(tmp)
        start = time.perf_counter()
        manifests = build(root, args.n, args.size, compressions)
        print(f"built {args.n} samples of {args.size}x{args.size} in {time.perf_counter() - start:.1f}s "
              f"(shards: {', '.join(compressions)}; PNG)")
        candidates: list[tuple[str, Dataset, float]] = [
            ("png (cv2.imread)", PngDataset(root, args.n),
             _size_mb(list((root / "png").rglob("*.png"))))]
        for c, manifest in manifests.items():
            dataset = ShardDataset(manifest, "train")
            candidates.append((f"shard {c}", dataset, _size_mb([root / f"shard-{c}.h5"])))
            if c == compressions[0]:
                candidates.append((f"shard {c}, per-item path", PerItem(dataset), _size_mb([root / f"shard-{c}.h5"])))
        for name, dataset, size_mb in candidates:
            item_rate = items_per_second(dataset, 1)
            close_shards()
            loader_rate, cpu_ms = loader_per_second(dataset, batch_size=args.batch_size,
                                                    workers=args.workers, passes=args.passes)
            results.append((name, f"{size_mb:.0f} MB", item_rate, loader_rate, cpu_ms))
        if args.manifest is not None:
            size = (args.manifest_size, args.manifest_size) if args.manifest_size else None
            dataset = ShardDataset(args.manifest, "train", size=size)
            item_rate = items_per_second(dataset, 1)
            close_shards()
            loader_rate, cpu_ms = loader_per_second(dataset, batch_size=args.batch_size,
                                                    workers=args.workers, passes=1)
            results.append((f"{args.manifest.name} ({len(dataset)})", "", item_rate, loader_rate, cpu_ms))

    base_item, base_loader, base_cpu = results[0][2], results[0][3], results[0][4]
    print(f"\nworkers={args.workers} batch_size={args.batch_size} n={args.n} size={args.size} "
          f"cpus={os.cpu_count()} load average={os.getloadavg()[0]:.1f}")
    header = (f"{'dataset':<28} {'on disk':>8} {'getitem/s':>10} {'x png':>6} {'loader/s':>9} "
              f"{'x png':>6} {'CPU ms/sample':>14} {'x png':>6}")
    print(header)
    print("-" * len(header))
    for name, size_text, item_rate, loader_rate, cpu_ms in results:
        print(f"{name:<28} {size_text:>8} {item_rate:>10.0f} {item_rate / base_item:>6.1f} "
              f"{loader_rate:>9.0f} {loader_rate / base_loader:>6.1f} {cpu_ms:>14.2f} "
              f"{base_cpu / cpu_ms:>6.1f}")
    print("getitem/s: __getitem__ alone in this process; loader/s: batches through make_loader "
          "(wall clock); CPU ms/sample: all loader processes together (less sensitive to a busy machine)")
    lzf = next((r for r in results if r[0] == "shard lzf"), None)
    if lzf is not None:
        ratio = lzf[3] / base_loader
        verdict = "target met" if ratio >= 5 else "below the 5x target"
        print(f"\nshard (lzf) vs PNG through the loader: {ratio:.1f}x samples/s, "
              f"{base_cpu / lzf[4]:.1f}x less CPU per sample ({verdict})")

if __name__ == "__main__":
    main()
