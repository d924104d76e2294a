"""GPU training speed of `segtrain run`'s own loop: images/s with AMP and channels-last on/off,
and what the data path costs: the share of step time spent waiting for data, and images/s
against the same loop fed one batch already on the device (no data path at all).

Builds a synthetic fixed-size manifest (the layout and compression `segprep augment` writes) in a
temporary folder, then for each model and each setting runs ``segtrain.trainer.setup`` and
``train_one_epoch`` (the exact code `segtrain run` uses: ShardDataset, make_loader with workers,
autocast, GradScaler, cudnn.benchmark). Epoch 1 is warm-up (cudnn autotuning, torch.compile);
the figures are the median over the following epochs. Ratios are against fp32 / NCHW measured
in the same process.

    python benchmarks/train_speed.py                                  # unet, unetpp at 352, batch 16
    python benchmarks/train_speed.py --models unet unetpp resunetpp --compile
    python benchmarks/train_speed.py --manifest work/manifests/augment.csv --n 2048   # real augmented shards
    python benchmarks/train_speed.py --fastest-only                   # AMP + channels-last only
    python benchmarks/train_speed.py --device cpu --size 64 --n 32 --batch-size 8 --models unet   # smoke test

With --manifest, the first --n training rows of that manifest (an augment.csv, fixed size) are
measured instead of synthetic samples: the data path is then the real one, JPEG texture and all.

Without CUDA (and without --device cpu) it prints why and exits 0.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch


def synthetic_manifest(root: Path, n: int, size: int) -> Path:
    """n train samples (plus a few val/test rows that setup() needs) at size x size."""
    from segprep.manifest import write_manifest
    from segprep.shards import ShardWriter

    rng = np.random.default_rng(0)
    shard, rows = "shards/speed-00000.h5", []
    splits = ["train"] * n + ["val"] * 4 + ["test"] * 4
    from segprep.augment.stage import MASK_COMPRESSION

    # the compression `segprep augment` writes by default: raw images, gzip-1 masks
    compression = {"images": "none", "masks": MASK_COMPRESSION, "roi": MASK_COMPRESSION}
    with ShardWriter(root / shard, "augment", fixed_size=(size, size), compression=compression) as writer:
        for i, split in enumerate(splits):
            low = rng.uniform(40, 220, (6, 6, 3)).astype(np.float32)
            image = cv2.resize(low, (size, size), interpolation=cv2.INTER_CUBIC)
            image += rng.normal(0, 4, image.shape).astype(np.float32)  # texture: the images are not flat
            mask = np.zeros((size, size), np.uint8)
            centre = tuple(int(c) for c in rng.integers(size // 4, 3 * size // 4, 2))
            axes = tuple(int(a) for a in rng.integers(size // 10, size // 4, 2))
            cv2.ellipse(mask, centre, axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
            image[mask > 0] = image[mask > 0] * 0.7 + np.array([180, 90, 80], np.float32) * 0.3
            index = writer.add(sample_id=f"speed/{i:05d}", image=np.clip(image, 0, 255).astype(np.uint8), mask=mask)
            rows.append(dict(sample_id=f"speed/{i:05d}", source="speed", split=split, group=str(i),
                             image_shard=shard, image_index=index, mask_shard=shard, mask_index=index,
                             height=size, width=size, fg_fraction=float(mask.mean()), status="ok", issues="",
                             parent_id="", image_path="", mask_path=""))
    return write_manifest(pd.DataFrame(rows), root / "augment.csv")


def subset_manifest(manifest: Path, n: int) -> Path:
    """The first n train rows of an existing fixed-size manifest plus a few val/test rows, written
    beside it (shard paths are relative to the manifest's folder, so the copy must live there;
    ``main`` deletes it when done)."""
    from segprep.manifest import read_manifest, write_manifest

    df = read_manifest(manifest)
    df = df[df["status"] != "excluded"]
    parts = [df[df["split"] == "train"].head(n), df[df["split"] == "val"].head(4), df[df["split"] == "test"].head(4)]
    return write_manifest(pd.concat(parts, ignore_index=True), manifest.parent / f"speed-subset-{n}.csv")


class _SameBatch:
    """Stands in for the train loader: ``steps`` times the same batch (already on the device)."""

    class _Sampler:
        def set_epoch(self, epoch: int) -> None:
            pass

    def __init__(self, batch: dict, steps: int) -> None:
        self.batch, self.steps, self.sampler = batch, steps, self._Sampler()

    def __len__(self) -> int:
        return self.steps

    def __iter__(self):
        return (self.batch for _ in range(self.steps))


def measure(manifest: Path, out: Path, model: str, amp: str, channels_last: bool, compile_: bool,
            args: argparse.Namespace) -> dict:
    from segtrain.config import RunConfig
    from segtrain.trainer import amp_name, setup, train_one_epoch

    config = RunConfig(manifest=str(manifest), model=model, loss="bce+dice", epochs=args.epochs,
                       batch_size=args.batch_size, amp=amp, channels_last=channels_last, compile=compile_,
                       device=args.device, workers=args.workers, out=str(out))
    run = setup(config)
    if run.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(run.device)
    epochs = [train_one_epoch(run, epoch) for epoch in range(1, args.epochs + 1)]
    timed = epochs[1:] or epochs  # epoch 1: cudnn autotuning and compilation
    # The same loop with no data path at all: one batch, already on the device, every step. The
    # loader's cost is what the real loop loses against it. (data_wait alone overstates it: the
    # time spent in next() overlaps the GPU still running the previous step.)
    loader, run.train_loader = run.train_loader, _SameBatch(next(iter(run.train_loader)), len(run.train_loader))
    no_data = statistics.median(train_one_epoch(run, args.epochs + e)["images_per_s"] for e in (1, 2))
    run.train_loader = loader
    result = {
        "model": model, "amp": amp_name(run.amp_dtype), "channels_last": channels_last, "compile": compile_,
        "images_per_s": statistics.median(e["images_per_s"] for e in timed),
        "data_wait": statistics.median(e["data_wait_share"] for e in timed),
        "no_data_images_per_s": no_data,
        "peak_mb": torch.cuda.max_memory_allocated(run.device) / 2**20 if run.device.type == "cuda" else None,
        "steps": len(run.train_loader),
    }
    del run
    gc.collect()  # shuts the persistent loader workers down before the next setting starts its own
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["unet", "unetpp"])
    parser.add_argument("--size", type=int, default=352)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--n", type=int, default=320, help="training samples (steps per epoch = n / batch)")
    parser.add_argument("--epochs", type=int, default=3, help="epoch 1 is warm-up")
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--compile", action="store_true", help="also measure torch.compile (AMP + channels-last)")
    parser.add_argument("--fastest-only", action="store_true", help="only AMP + channels-last (and --compile)")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--manifest", type=Path, help="measure on this augment.csv's shards (first --n train rows)")
    args = parser.parse_args()

    if args.device == "cuda" and not torch.cuda.is_available():
        print(f"CUDA is not available (torch {torch.__version__}): this benchmark measures GPU training "
              f"speed; skipped. Use --device cpu for a smoke test of the script.")
        return
    settings = [("auto", True, False), ("auto", False, False), ("off", True, False), ("off", False, False)]
    if args.device == "cpu":
        settings = [("off", True, False), ("off", False, False)]
    if args.fastest_only:
        settings = settings[:1]
    if args.compile:
        settings.insert(0, ("auto", True, True))
    device_name = torch.cuda.get_device_name(0) if args.device == "cuda" else "CPU"
    data = f"{args.manifest}" if args.manifest else f"synthetic {args.size}x{args.size}"
    print(f"{device_name}, torch {torch.__version__}, {data}, batch {args.batch_size}, "
          f"{args.n} train samples, {args.workers} workers, {args.epochs} epochs (first is warm-up)")

    with tempfile.TemporaryDirectory(prefix="train-speed-") as tmp:
        manifest = (subset_manifest(args.manifest, args.n) if args.manifest
                    else synthetic_manifest(Path(tmp), args.n, args.size))
        results = []
        try:
            for model in args.models:
                for amp, channels_last, compile_ in settings:
                    result = measure(manifest, Path(tmp) / "run", model, amp, channels_last, compile_, args)
                    results.append(result)
                    print(f"  {model:10s} amp {result['amp']:4s} channels-last {str(channels_last):5s} "
                          f"compile {str(compile_):5s}: {result['images_per_s']:8.1f} img/s, data wait "
                          f"{100 * result['data_wait']:5.1f}%, batch on the device "
                          f"{result['no_data_images_per_s']:8.1f} img/s", flush=True)
        finally:
            if args.manifest:
                manifest.unlink(missing_ok=True)  # the subset beside the user's manifest

    print()
    print("| model | amp | channels-last | compile | images/s | vs fp32 NCHW | data wait | no data path, images/s "
          "| loader cost | peak MiB |")
    print("|---|---|---|---|---:|---:|---:|---:|---:|---:|")
    for r in results:
        base = next((b for b in results if b["model"] == r["model"] and b["amp"] == "off" and not b["channels_last"]
                     and not b["compile"]), None)
        speedup = f"{r['images_per_s'] / base['images_per_s']:.2f}x" if base else "-"
        peak = f"{r['peak_mb']:.0f}" if r["peak_mb"] is not None else "-"
        print(f"| {r['model']} | {r['amp']} | {'on' if r['channels_last'] else 'off'} | "
              f"{'on' if r['compile'] else 'off'} | {r['images_per_s']:.1f} | "
              f"{speedup} | {100 * r['data_wait']:.1f}% | "
              f"{r['no_data_images_per_s']:.1f} | {100 * (1 - r['images_per_s'] / r['no_data_images_per_s']):.1f}% | "
              f"{peak} |")


if __name__ == "__main__":
    sys.exit(main())
