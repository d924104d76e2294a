"""Samples/s of segtrain's ShardDataset against a dataset reading the same samples from PNGs.

What is timed is what users get: N synthetic samples go through the real augment stage
(``segprep.augment.augment``, factor 1, default options: a resized original per sample), so
the shards have exactly the layout and compression that ``segprep augment`` writes by default
(fixed size, 128 rows per shard; images uncompressed, masks and ROIs ``MASK_COMPRESSION``).
The same arrays, read back from those shards, are written as PNG files (image + 0/255 mask,
as datasets ship). Both are then timed through ``segtrain.data.make_loader`` with the same
workers and batch size, in this one process. ``--compare`` adds copies of the augment shards
whose masks/ROIs use other compressions (images as augment writes them), to show the choice;
``--codecs`` copies whose images are stored with ``segprep augment --image-codec`` (png,
jpeg:Q: decoded in the loader's workers), with the bytes per sample of each. With
``--manifest`` (a real augment manifest), the same codec copies are made of its first --n
training rows, so bytes per sample and decode cost are those of real images.
Also times ``__getitem__`` alone (no DataLoader) to show how much of an item's cost is
reading versus the loader's own work (collate, passing tensors between processes), which
both datasets pay alike.

    python benchmarks/loader_throughput.py --n 512 --size 352 --workers 2 --batch-size 16
    python benchmarks/loader_throughput.py --roi              # every sample with a field of view (DRIVE)
    python benchmarks/loader_throughput.py --manifest WORK/manifests/augment.csv   # a real one too
    python benchmarks/loader_throughput.py --compare "" --codecs png,jpeg:90,jpeg:75 --manifest WORK/manifests/augment.csv

Target (issue 6): the augment shards at least 5x the PNG dataset's samples/s through the loader.

What it costs (2 shared cores, 352x352): PNG decoding is ~3-4 ms per sample. A shard sample
is one chunk read per array: the uncompressed image ~0.07 ms, a 0/1 mask ~0.03 ms stored raw
(124 KB), ~0.1 ms with gzip-1 (1.6 KB), ~0.23 ms with lzf (2.7 KB: LZF expands long runs byte
by byte). The loader's own work is small: workers write uint8 batches into a ring of shared
buffers allocated once (``segtrain.data._BatchRing``) and send only the slot; the main process
normalises to float32 (~0.2 ms a sample) and widens the mask to int64 (~0.1 ms). About 1 ms of
CPU per sample in all processes, 6-8x less than the PNG dataset.
"""

from __future__ import annotations

import argparse
import inspect
import logging
import os
import tempfile
import time
from pathlib import Path

import cv2
import h5py
import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from segprep.augment.stage import MASK_COMPRESSION, SHARD_SIZE, augment
from segprep.manifest import active, read_manifest, write_manifest
from segprep.shards import ShardWriter, close_shards, load_sample, parse_image_codec
from segtrain.data import ShardDataset, image_to_tensor, make_loader, resolve_normalization

# What `segprep augment` does to the images when not told otherwise.
AUGMENT_IMAGE_COMPRESSION = inspect.signature(augment).parameters["compression"].default


def synthetic_sample(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """An endoscopy-like image: smooth shading, texture, a few blobs; a blob mask.

    Content matters: pure noise would make PNG slow and compression useless, a flat image the
    reverse.
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


def field_of_view(rng: np.random.Generator, size: int) -> np.ndarray:
    """A DRIVE-like ROI: a disc that fills most of the frame, cut at the top and bottom."""
    roi = np.zeros((size, size), np.uint8)
    radius = int(size * rng.uniform(0.47, 0.52))
    cv2.circle(roi, (size // 2, size // 2), radius, 1, -1)
    roi[: size // 20] = roi[size - size // 20:] = 0
    return roi


def _row(i: int, shard: str, index: int, size: int) -> dict:
    return dict(sample_id=f"bench/{i:05d}", source="bench", split="train", group=str(i),
                image_shard=shard, image_index=index, mask_shard=shard, mask_index=index,
                height=size, width=size, fg_fraction=0.0, status="ok", issues="", parent_id="",
                image_path="", mask_path="")


def build_input(root: Path, n: int, size: int, roi: bool) -> Path:
    """A clean-like manifest (all train) over one variable-layout shard: augment's input."""
    rng = np.random.default_rng(0)
    shard = root / "input" / "shards" / "clean-00000.h5"
    rows = []
    with ShardWriter(shard, "clean", compression={"images": "none"}) as writer:
        for i in range(n):
            image, mask = synthetic_sample(rng, size)
            fov = field_of_view(rng, size) if roi else None
            if fov is not None:
                mask &= fov
            index = writer.add(sample_id=f"bench/{i:05d}", image=image, mask=mask, roi=fov)
            rows.append(_row(i, "../shards/clean-00000.h5", index, size))
    return write_manifest(pd.DataFrame(rows), root / "input" / "manifests" / "clean.csv")


def build(root: Path, n: int, size: int, roi: bool, compare: list[str],
          codecs: list[str]) -> dict[str, Path]:
    """The augment stage's shards (key ``"augment"``), one copy per ``compare`` mask
    compression, and the PNG files; returns the manifest of each shard set."""
    clean = build_input(root, n, size, roi)
    result = augment(clean, factor=1, size=size, work=root / "augment", workers=1, progress=False)
    table = active(read_manifest(result.manifest), "train").reset_index(drop=True)
    folder = result.manifest.parent
    samples = [load_sample(folder, row) for row in table.to_dict("records")]
    close_shards()
    manifests = {"augment": result.manifest}

    png = root / "png"
    for sub in ("images", "masks", "roi"):
        (png / sub).mkdir(parents=True)
    for i, sample in enumerate(samples):
        cv2.imwrite(str(png / "images" / f"{i:05d}.png"), cv2.cvtColor(sample.image, cv2.COLOR_RGB2BGR))
        cv2.imwrite(str(png / "masks" / f"{i:05d}.png"), sample.mask * 255)
        if sample.roi is not None:
            cv2.imwrite(str(png / "roi" / f"{i:05d}.png"), sample.roi * 255)

    # Same rows, same 128-row shards, only the masks'/ROIs' compression differs.
    for c in compare:
        manifests[c] = copy_shards(samples, table, root / f"masks-{c}", size, mask_compression=c)
    for codec in codecs:
        manifests[codec] = copy_shards(samples, table, root / f"codec-{codec.replace(':', '')}",
                                       size, image_codec=codec)
    return manifests


def copy_shards(samples: list, table: pd.DataFrame, out: Path, size: int, *,
                mask_compression: str = MASK_COMPRESSION, image_codec: str = "raw") -> Path:
    """The samples again in 128-row fixed shards with other storage; returns their manifest."""
    rows = table.copy()
    for start in range(0, len(samples), SHARD_SIZE):
        name = f"augment-{start // SHARD_SIZE:05d}.h5"
        compression = {"images": AUGMENT_IMAGE_COMPRESSION, "masks": mask_compression,
                       "roi": mask_compression}
        with ShardWriter(out / "shards" / name, "augment", fixed_size=(size, size),
                         compression=compression, image_codec=image_codec) as writer:
            for i in range(start, min(start + SHARD_SIZE, len(samples))):
                s = samples[i]
                index = writer.add(sample_id=table.at[i, "sample_id"], image=s.image, mask=s.mask, roi=s.roi)
                rows.loc[i, ["image_shard", "mask_shard"]] = f"../shards/{name}"
                rows.loc[i, ["image_index", "mask_index"]] = index
    return write_manifest(rows, out / "manifests" / "augment.csv")


def real_copies(manifest: Path, root: Path, n: int, codecs: list[str]) -> dict[str, Path]:
    """The first ``n`` training rows of a real augment manifest, stored raw and with each codec."""
    table = active(read_manifest(manifest), "train").head(n).reset_index(drop=True)
    samples = [load_sample(manifest.parent, row) for row in table.to_dict("records")]
    close_shards()
    size = samples[0].image.shape[0]
    return {codec: copy_shards(samples, table, root / f"real-{codec.replace(':', '')}", size,
                               image_codec=codec) for codec in ["raw", *codecs]}


def describe(manifest: Path) -> tuple[str, float]:
    """The compression of each array as stored (read from the files), and MB on disk per sample."""
    table = read_manifest(manifest)
    shards = sorted({(manifest.parent / p).resolve() for p in table["image_shard"]})
    close_shards()
    parts = []
    with h5py.File(shards[0], "r") as handle:
        for name in ("images", "masks", "roi"):
            if name in handle:
                ds = handle[name]
                how = ds.compression or "none"
                if name == "images" and "image_codec" in handle.attrs:
                    how = str(handle.attrs["image_codec"])
                if how == "gzip":
                    how = f"gzip-{ds.compression_opts}"
                parts.append(f"{name} {how}")
    return ", ".join(parts), sum(p.stat().st_size for p in shards) / 1e6 / len(table)


class PngDataset(Dataset):
    """The baseline: what a typical segmentation repo does, cv2.imread per file, same output."""

    def __init__(self, root: Path, n: int, normalize: str = "imagenet") -> None:
        self.images = [str(root / "png" / "images" / f"{i:05d}.png") for i in range(n)]
        self.masks = [str(root / "png" / "masks" / f"{i:05d}.png") for i in range(n)]
        rois = [root / "png" / "roi" / f"{i:05d}.png" for i in range(n)]
        self.rois = [str(p) if p.exists() else None for p in rois]
        self.mean, self.std = resolve_normalization(normalize)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict:
        image = cv2.cvtColor(cv2.imread(self.images[i], cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        mask = (cv2.imread(self.masks[i], cv2.IMREAD_GRAYSCALE) > 127).view(np.uint8)
        roi = (np.ones(mask.shape, np.uint8) if self.rois[i] is None
               else (cv2.imread(self.rois[i], cv2.IMREAD_GRAYSCALE) > 127).view(np.uint8))
        return {"image": image_to_tensor(image, self.mean, self.std),
                "mask": torch.from_numpy(mask.astype(np.int64)),
                "roi": torch.from_numpy(roi),
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
    parser.add_argument("--rounds", type=int, default=2,
                        help="time every dataset this many times in turn and keep each one's best "
                             "(a busy machine slows whichever happens to run then)")
    parser.add_argument("--compare", default="lzf,none",
                        help="also time copies of the augment shards with these mask/ROI compressions "
                             "(lzf, none, gzip, gzip-1 ... gzip-9; empty for none)")
    parser.add_argument("--codecs", default="png,jpeg:90",
                        help="also time copies whose images are stored with these --image-codec "
                             "values (png, jpeg:Q; empty for none)")
    parser.add_argument("--roi", action="store_true", help="give every sample a field-of-view ROI (DRIVE)")
    parser.add_argument("--manifest", type=Path, help="also time the train split of this real manifest")
    parser.add_argument("--manifest-size", type=int, help="resize the real manifest's samples (variable sizes)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    compare = [c.strip() for c in args.compare.split(",") if c.strip()]
    codecs = [parse_image_codec(c) for c in args.codecs.split(",") if c.strip()]
    load_before = os.getloadavg()[0]  # at the end it counts this run's own processes too
    # name, layout, on disk MB, getitem/s, loader/s, CPU ms
    results: list[tuple[str, str, float, float, float, float]] = []
    with tempfile.TemporaryDirectory(prefix="segkit-loader-") as tmp:
        root = Path(tmp)
        start = time.perf_counter()
        manifests = build(root, args.n, args.size, args.roi, compare, codecs)
        if args.manifest is not None and codecs:
            manifests.update({f"real {k}": v for k, v in
                              real_copies(args.manifest, root, args.n, codecs).items()})
        print(f"built {args.n} samples of {args.size}x{args.size}{' with ROI' if args.roi else ''} "
              f"in {time.perf_counter() - start:.1f}s (segprep augment, factor 1; "
              f"{len(compare)} comparison layouts; PNG)")
        candidates: list[tuple[str, str, Dataset, float]] = [
            ("png (cv2.imread)", "png", PngDataset(root, args.n),
             _size_mb(list((root / "png").rglob("*.png"))) / args.n)]
        for key, manifest in manifests.items():
            layout, mb_per_sample = describe(manifest)
            dataset = ShardDataset(manifest, "train")
            name = ("augment default" if key == "augment" else key if key.startswith("real ")
                    else f"images {key}" if key in codecs else f"masks {key}")
            candidates.append((name, layout, dataset, mb_per_sample))
            if key == "augment":
                candidates.append(("augment default, per-item", layout, PerItem(dataset), mb_per_sample))
        best: dict[str, list[float]] = {}
        for _ in range(args.rounds):
            for name, _layout, dataset, _size in candidates:
                item_rate = items_per_second(dataset, 1)
                close_shards()
                loader_rate, cpu_ms = loader_per_second(dataset, batch_size=args.batch_size,
                                                        workers=args.workers, passes=args.passes)
                old = best.get(name)
                best[name] = ([item_rate, loader_rate, cpu_ms] if old is None else
                              [max(old[0], item_rate), max(old[1], loader_rate), min(old[2], cpu_ms)])
        for name, layout, _dataset, mb_per_sample in candidates:
            results.append((name, layout, mb_per_sample, *best[name]))
        if args.manifest is not None:
            size = (args.manifest_size, args.manifest_size) if args.manifest_size else None
            dataset = ShardDataset(args.manifest, "train", size=size)
            item_rate = items_per_second(dataset, 1)
            close_shards()
            loader_rate, cpu_ms = loader_per_second(dataset, batch_size=args.batch_size,
                                                    workers=args.workers, passes=1)
            results.append((f"{args.manifest.name} ({len(dataset)})", "", 0.0, item_rate, loader_rate, cpu_ms))

    base_item, base_loader, base_cpu = results[0][3], results[0][4], results[0][5]
    print(f"\nworkers={args.workers} batch_size={args.batch_size} n={args.n} size={args.size} "
          f"cpus={os.cpu_count()} load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after "
          f"(best of {args.rounds} rounds)")
    header = (f"{'dataset':<26} {'stored as':<40} {'KB/sample':>9} {'getitem/s':>10} {'x png':>6} "
              f"{'loader/s':>9} {'x png':>6} {'CPU ms/sample':>14} {'x png':>6}")
    print(header)
    print("-" * len(header))
    for name, layout, mb_per_sample, item_rate, loader_rate, cpu_ms in results:
        per_sample = mb_per_sample * 1e3
        print(f"{name:<26} {layout:<40} {per_sample:>9.1f} {item_rate:>10.0f} {item_rate / base_item:>6.1f} "
              f"{loader_rate:>9.0f} {loader_rate / base_loader:>6.1f} {cpu_ms:>14.2f} "
              f"{base_cpu / cpu_ms:>6.1f}")
    print("getitem/s: __getitem__ alone in this process; loader/s: batches through make_loader "
          "(wall clock); CPU ms/sample: all loader processes together (less sensitive to a busy machine)")
    default = next(r for r in results if r[0] == "augment default")
    ratio = default[4] / base_loader
    verdict = "target met" if ratio >= 5 else "below the 5x target"
    print(f"\naugment default ({default[1]}) vs PNG through the loader: {ratio:.1f}x samples/s, "
          f"{base_cpu / default[5]:.1f}x less CPU per sample ({verdict})")


if __name__ == "__main__":
    main()
