"""The training loop behind ``segtrain run``: setup, one epoch, validate, checkpoint, early stop.

The pieces come first, in the order a run uses them; :func:`train` at the end puts them
together and reads as the whole story (as nanoGPT's train.py does):

1. ``setup``: device, process group (DDP under torchrun), seeds, datasets and loaders
   (:mod:`segtrain.data`), model (channels-last, torch.compile, DDP), loss, optimizer and
   scheduler (:mod:`segtrain.optim`), grad scaler; ``--resume`` restores all of it, RNG states
   included, from ``last.pt``.
2. ``train_one_epoch``: batches through :func:`train_step` (forward under autocast, loss in
   float32, backward, step through the scaler; ``bench --speed-only`` times the same step).
3. ``validate``: loss and Dice/IoU (:mod:`segtrain.metrics`) on the val split, confusion counts
   reduced over ranks.
4. ``end_of_epoch``: scheduler, history, ``last.pt`` every epoch, ``best.pt`` on a better val
   Dice; ``train_epochs`` loops over epochs with early stop and the time budget.
5. ``test``: the best checkpoint on the test split at the stored size: test_per_image.csv,
   predictions.png; then ``build_summary`` (summary.json, ranks checked in sync) and curves.png.

Only rank 0 writes files and reports; every rank trains, validates and tests its share.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import logging
import math
import platform
import random
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from segprep.executor import available_cpus
from segprep.progress import progress
from segprep.work import WorkLock, atomic_write_csv, atomic_write_text
from segtrain import distributed as D
from segtrain.checkpoint import (rng_state, read_checkpoint, save_checkpoint, set_rng_state,
                                 versions)
from segtrain.config import RunConfig
from segtrain.optim import build_optimizer, build_scheduler, parameter_groups
from segtrain.errors import SegtrainError
from segtrain.evaluate import autocast, evaluate, main_logits, predict_masks, write_per_image

log = logging.getLogger(__name__)

HISTORY_COLUMNS = ("epoch", "train_loss", "val_loss", "val_dice", "val_iou", "lr",
                   "epoch_seconds", "images_per_s", "data_wait_share")
PLOT_SAMPLES = 4  # best and worst test images shown in predictions.png, each


# ----------------------------------------------------------------------------- small pieces

def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    if name == "cpu":
        return torch.device("cpu")
    if torch.cuda.is_available():
        return torch.device("cuda", local_rank)
    if name == "cuda":
        built = "this torch build has no CUDA support" if torch.version.cuda is None else "no GPU is visible"
        raise SegtrainError(f"--device cuda: CUDA is not available ({built}, torch {torch.__version__}); "
                            f"use --device cpu or --device auto")
    return torch.device("cpu")


def set_cpu_threads(world_size: int = 1) -> int:
    """torch's intra-op threads: the CPUs this process may use (CPU affinity capped by the
    cgroup's quota; torch's default counts the machine's cores, and a cluster job with a quota
    of 2 CPUs on a 64-core node would run 64 threads), shared by the ranks of a CPU DDP run.
    The user's OMP_NUM_THREADS wins. Returns the count."""
    if "OMP_NUM_THREADS" in os.environ:
        return torch.get_num_threads()
    threads = max(1, available_cpus() // max(1, world_size))
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return threads


def resolve_amp(mode: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or None for full float32.

    auto: bf16 on GPUs that have it (no loss scaling needed), fp16 + GradScaler on older
    GPUs, off on CPU (CPU autocast is slower than float32 for convolutions).
    """
    if mode == "off":
        return None
    if device.type != "cuda":
        if mode == "auto":
            return None
        if mode == "bf16":
            return torch.bfloat16
        raise SegtrainError("--amp fp16 needs CUDA; on CPU use --amp bf16, off or auto")
    bf16 = torch.cuda.is_bf16_supported()
    if mode == "bf16" and not bf16:
        raise SegtrainError(f"--amp bf16: {torch.cuda.get_device_name(device)} has no bf16 support; "
                            f"use --amp fp16 or auto")
    if mode == "fp16":
        return torch.float16
    return torch.bfloat16 if bf16 else torch.float16


def amp_name(dtype: torch.dtype | None) -> str:
    return {None: "off", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device


def prepare_encoder(run: "Run", epoch: int) -> None:
    """Before each epoch (after ``model.train()``): freeze the encoder for the first
    --freeze-encoder epochs, and keep its batch-norm layers in eval mode (ImageNet's running
    statistics) where --encoder-bn says so: statistics of a few images per batch are noise."""
    encoder = getattr(run.raw_model, "encoder", None)
    if encoder is None or not hasattr(run.raw_model, "segkit_normalize"):
        return
    trainable = epoch > run.config.freeze_encoder
    for parameter in encoder.parameters():
        parameter.requires_grad_(trainable)
    if encoder_bn_frozen(run.config) or not trainable:
        for module in encoder.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()


def encoder_bn_frozen(config: RunConfig) -> bool:
    if config.encoder_bn != "auto":
        return config.encoder_bn == "frozen"
    pretrained = config.encoder_weights not in (None, "none")
    return pretrained and config.batch_size < 8


def check_names(config: RunConfig) -> None:
    """Fail on a wrong model, encoder or loss name before any data is read."""
    from segtrain.losses import LOSSES
    from segtrain.models import model_spec
    from segtrain.models.encoders import check_encoder_name

    model_spec(config.model, config.encoder)
    if config.encoder is not None:
        check_encoder_name(config.encoder)
    if config.loss not in LOSSES:
        raise SegtrainError(f"unknown loss {config.loss!r}; valid losses: {', '.join(LOSSES)}")


# ----------------------------------------------------------------------------- run state

@dataclass
class Run:
    """Everything the loop touches, in one place."""

    config: RunConfig
    dist: D.DistInfo
    device: torch.device
    out: Path
    raw_model: nn.Module            # plain module: state dicts, checkpoints
    eval_model: nn.Module           # compiled (when asked), without DDP: each rank scores its share
    model: nn.Module                # what the training step calls (DDP-wrapped under torchrun)
    criterion: nn.Module            # deep-supervision aware training loss
    val_loss: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler
    amp_dtype: torch.dtype | None
    train_set: Dataset
    val_set: Dataset
    train_loader: DataLoader
    val_loader: DataLoader
    input_size: tuple[int, int]
    normalize: Any = "imagenet"     # resolved: what the datasets normalise with
    history: list[dict[str, float]] = field(default_factory=list)
    epoch: int = 0                  # epochs completed
    best_epoch: int = 0
    best_dice: float = -1.0
    stale_epochs: int = 0           # epochs since the val Dice last improved
    started: float = field(default_factory=time.perf_counter)


def setup(config: RunConfig) -> Run:
    from segtrain.data import ShardDataset, make_loader
    from segtrain.losses import DeepSupervisionLoss, build_loss
    from segtrain.models import build_model

    check_names(config)
    check_out(config)
    local = D.env_info()
    device = resolve_device(config.device, local.local_rank)
    amp_dtype = resolve_amp(config.amp, device)
    info = D.setup(device.type)
    if device.type == "cpu":
        set_cpu_threads(info.world_size)
    out = config.out_dir
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
    # Every rank starts from its own seed (different dropout masks); DDP copies rank 0's weights.
    seed_everything(config.seed + info.rank)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input sizes: autotuned kernels pay off
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    raw_model = build_model(config.model, **model_options(config))
    normalize = resolved_normalize(config, raw_model)
    size = tuple(config.size) if config.size else None
    train_set = ShardDataset(config.manifest, "train", size=size, normalize=normalize)
    val_set = ShardDataset(config.manifest, "val", size=size, normalize=normalize)
    input_size = tuple(train_set.size)
    if tuple(val_set.size) != input_size:
        raise SegtrainError(f"{config.manifest}: val samples are {val_set.size[0]}x{val_set.size[1]}, train "
                            f"samples {input_size[0]}x{input_size[1]}; pass --size HxW to train on mixed sizes")
    per_rank = len(train_set) // info.world_size
    # Drop the ragged last batch (noisy batch-norm statistics) unless there would be no batch at all.
    drop_last = per_rank >= config.batch_size
    train_loader = make_loader(train_set, batch_size=config.batch_size, shuffle=True, workers=config.workers,
                               seed=config.seed, drop_last=drop_last, distributed=info.enabled,
                               pin_memory=device.type == "cuda", device=device, channels_last=config.channels_last)
    # Validation: a strided share per rank, no padding, so every image counts exactly once.
    val_share = Subset(val_set, list(range(info.rank, len(val_set), info.world_size)))
    val_loader = make_loader(val_share, batch_size=config.batch_size, shuffle=False, workers=config.workers,
                             seed=config.seed, pin_memory=device.type == "cuda", device=device,
                             channels_last=config.channels_last)

    raw_model = raw_model.to(device)
    if config.channels_last:
        raw_model = raw_model.to(memory_format=torch.channels_last)
    eval_model: nn.Module = raw_model
    if config.compile:
        eval_model = torch.compile(raw_model)
    model: nn.Module = eval_model
    if info.enabled:
        model = nn.parallel.DistributedDataParallel(
            eval_model, device_ids=[device.index] if device.type == "cuda" else None,
            gradient_as_bucket_view=True,
            find_unused_parameters=config.freeze_encoder > 0)  # a frozen encoder has no gradients

    val_loss = build_loss(config.loss, **config.loss_kwargs)
    criterion = DeepSupervisionLoss(val_loss)  # a plain tensor passes straight through
    optimizer = build_optimizer(config.optimizer, parameter_groups(raw_model, config.lr, config.encoder_lr),
                                config.lr, device)
    scheduler = build_scheduler(config.scheduler, optimizer, config.epochs)
    # Loss scaling only for fp16: bf16 has float32's exponent range.
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)

    run = Run(config=config, dist=info, device=device, out=out, raw_model=raw_model, eval_model=eval_model,
              model=model, criterion=criterion, val_loss=val_loss, optimizer=optimizer, scheduler=scheduler,
              scaler=scaler, amp_dtype=amp_dtype, train_set=train_set, val_set=val_set,
              train_loader=train_loader, val_loader=val_loader, input_size=input_size,
              normalize=normalize)
    if config.resume:
        resume(run)
    return run


def model_options(config: RunConfig) -> dict[str, Any]:
    """The model's constructor options from the run's config."""
    options = dict(config.model_kwargs)
    if config.base_channels is not None:
        options["base_channels"] = config.base_channels
    if config.deep_supervision:
        options["deep_supervision"] = True
    if config.encoder is not None:
        options["encoder"] = config.encoder
        options["encoder_weights"] = config.encoder_weights
    return options


def resolved_normalize(config: RunConfig, model: nn.Module) -> Any:
    """``auto``: the normalisation the encoder's weights expect, else ImageNet's."""
    if config.normalize != "auto":
        return config.normalize
    return getattr(model, "segkit_normalize", None) or "imagenet"


def check_out(config: RunConfig) -> None:
    """An earlier run in the run folder is continued (--resume) or replaced (--force), never
    overwritten silently. Checked by every rank on the same files, before any rank waits for
    the others."""
    out = config.out_dir
    if out.exists() and not out.is_dir():
        raise SegtrainError(f"{out}: not a folder; give --out a folder for the run")
    earlier = [name for name in ("summary.json", "last.pt") if (out / name).is_file()]
    if earlier and not config.resume and not config.force:
        raise SegtrainError(f"{out} holds an earlier run ({', '.join(earlier)}); --resume continues "
                            f"it, --force replaces it, or give another --out")


def resume(run: Run) -> None:
    """Restore ``last.pt``: weights, optimizer, scheduler, scaler, history, counters, RNG states.
    A run killed before its first epoch ended has none: it starts fresh, and says so."""
    path = run.out / "last.pt"
    if not path.is_file():
        log.warning("--resume: %s has no last.pt yet (the run stopped before its first epoch "
                    "ended); starting fresh", run.out)
        return
    checkpoint = read_checkpoint(path, map_location="cpu")
    kwargs = run.raw_model.segkit_kwargs
    if checkpoint["model_name"] != run.config.model or checkpoint["model_kwargs"] != kwargs:
        raise SegtrainError(f"--resume: {path} holds {checkpoint['model_name']} {checkpoint['model_kwargs']}, "
                            f"this run builds {run.config.model} {kwargs}; use the same model options")
    run.raw_model.load_state_dict(checkpoint["model_state"])
    run.optimizer.load_state_dict(checkpoint["optimizer"])
    if run.scheduler is not None and checkpoint.get("scheduler"):
        run.scheduler.load_state_dict(checkpoint["scheduler"])
        if hasattr(run.scheduler, "T_max"):  # --epochs may have been raised for the resumed run
            run.scheduler.T_max = run.config.epochs
    if run.scaler.is_enabled() and checkpoint.get("scaler"):
        run.scaler.load_state_dict(checkpoint["scaler"])
    run.history = [dict(row) for row in checkpoint["history"]]
    run.epoch = int(checkpoint["epoch"])
    run.best_epoch = int(checkpoint["best_epoch"])
    run.best_dice = float(checkpoint["best_val_dice"])
    run.stale_epochs = int(checkpoint["stale_epochs"])
    states = checkpoint["rng"]
    set_rng_state(states[run.dist.rank] if len(states) == run.dist.world_size else states[0])
    log.info("resumed %s at epoch %d (best epoch %d, val Dice %.4f)", path, run.epoch, run.best_epoch,
             run.best_dice)


# ----------------------------------------------------------------------------- one epoch

def train_one_epoch(run: Run, epoch: int) -> dict[str, float]:
    """One pass over the train split; returns loss, images/s and the share of time spent waiting for data."""
    config, device = run.config, run.device
    run.model.train()
    prepare_encoder(run, epoch)
    run.train_loader.sampler.set_epoch(epoch)  # the order is a function of (seed, epoch) alone
    steps = len(run.train_loader)
    loss_sum, images, data_wait = 0.0, 0, 0.0
    pending: tuple[int, torch.Tensor] | None = None  # the previous step's loss, not yet read
    bar = progress(total=steps, desc=f"epoch {epoch}/{config.epochs}", unit="batch", leave=False,
                   enabled=run.dist.is_main)
    start = time.perf_counter()
    batches = iter(run.train_loader)
    for step in range(1, steps + 1):
        wait_start = time.perf_counter()
        batch = next(batches)
        data_wait += time.perf_counter() - wait_start
        x = batch["image"].to(device, non_blocking=True)
        if config.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        target = batch["mask"].to(device, non_blocking=True)
        if run.raw_model.num_classes == 1:
            target = (target > 0).long()  # binary logits: every foreground class is foreground
        roi = batch["roi"].to(device, non_blocking=True)

        loss = train_step(run.model, run.criterion, run.optimizer, run.scaler, x, target, roi,
                          run.amp_dtype)

        # Mean over ranks: every rank sees the same value, so a NaN stops them all together.
        reduced = D.all_reduce_sum(loss.detach().float().clone()) / run.dist.world_size
        # Read the previous step's loss, not this one's: .item() waits for the GPU, and by now the
        # previous loss is long computed, so the CPU stays one step ahead instead of idling the GPU.
        if pending is not None:
            loss_sum += check_loss(*pending, epoch, steps, bar)
        pending = (step, reduced)
        images += x.shape[0] * run.dist.world_size
        bar.update()
    if pending is not None:
        loss_sum += check_loss(*pending, epoch, steps, bar)
    bar.close()
    seconds = time.perf_counter() - start
    return {"train_loss": loss_sum / max(steps, 1), "train_seconds": seconds,
            "images_per_s": images / seconds if seconds > 0 else 0.0,
            "data_wait_share": data_wait / seconds if seconds > 0 else 0.0}


def train_step(model: nn.Module, criterion: nn.Module, optimizer: torch.optim.Optimizer,
               scaler: torch.amp.GradScaler, x: torch.Tensor, target: torch.Tensor,
               roi: torch.Tensor, amp_dtype: torch.dtype | None) -> torch.Tensor:
    """One optimisation step: forward under autocast, the loss, backward and the optimizer step
    through the scaler. Returns the loss (not read: reading waits for the GPU)."""
    with autocast(x.device, amp_dtype):
        output = model(x)
    # the loss in float32: sigmoid/log of half-precision logits loses the small gradients
    if isinstance(output, (list, tuple)):
        output = [o.float() for o in output]
    else:
        output = output.float()
    loss = criterion(output, target, roi)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return loss


class NonFiniteLoss(Exception):
    """Raised inside the loop; ``train`` turns it into a SegtrainError naming the last good checkpoint."""


def check_loss(step: int, loss: torch.Tensor, epoch: int, steps: int, bar) -> float:
    value = loss.item()
    if not math.isfinite(value):
        bar.close()
        raise NonFiniteLoss(f"training loss is {value} at epoch {epoch}, step {step}/{steps}")
    bar.set_postfix(loss=f"{value:.4f}")
    return value


@torch.no_grad()
def validate(run: Run) -> dict[str, float]:
    """Val loss and mean per-image Dice/IoU (threshold ``config.threshold``), over all ranks."""
    device = run.device
    from segtrain.metrics import batch_confusion, scores

    run.eval_model.eval()
    # loss * images, dice sum, iou sum, images; float64 so sums over many images stay exact
    totals = torch.zeros(4, dtype=torch.float64, device=device)
    for batch in run.val_loader:
        x = batch["image"].to(device, non_blocking=True)
        if run.config.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        target = batch["mask"].to(device, non_blocking=True)
        if run.raw_model.num_classes == 1:
            target = (target > 0).long()
        roi = batch["roi"].to(device, non_blocking=True)
        with autocast(device, run.amp_dtype):
            logits = main_logits(run.eval_model(x))
        logits = logits.float()
        loss = run.val_loss(logits, target, roi)
        per_image = [scores(*counts) for counts in
                     batch_confusion(logits, target, roi, threshold=run.config.threshold).tolist()]
        n = x.shape[0]
        totals += torch.tensor([loss.item() * n, sum(m["dice"] for m in per_image),
                                sum(m["iou"] for m in per_image), float(n)],
                               dtype=torch.float64, device=device)
    D.all_reduce_sum(totals)
    n = max(totals[3].item(), 1.0)
    return {"val_loss": totals[0].item() / n, "val_dice": totals[1].item() / n, "val_iou": totals[2].item() / n}


# ----------------------------------------------------------------------------- checkpoints and files

def checkpoint_state(run: Run, rng_states: list[dict]) -> dict[str, Any]:
    return {
        "model_name": run.raw_model.segkit_name,
        "model_kwargs": dict(run.raw_model.segkit_kwargs),
        "model_state": run.raw_model.state_dict(),
        "input_size": list(run.input_size),
        "normalize": run.normalize,
        "encoder": encoder_record(run.raw_model),
        "threshold": run.config.threshold,
        "config": run.config.to_dict(),
        "epoch": run.epoch,
        "best_epoch": run.best_epoch,
        "best_val_dice": run.best_dice,
        "stale_epochs": run.stale_epochs,
        "history": [dict(row) for row in run.history],
        "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict() if run.scheduler is not None else {},
        "scaler": run.scaler.state_dict() if run.scaler.is_enabled() else {},
        "rng": rng_states,
        "versions": versions(),
    }


def encoder_record(model: nn.Module) -> dict[str, Any] | None:
    """What a run records of its encoder: the timm name, where its initial weights came from
    (with the file's SHA-256) and the normalisation they expect; None for models from scratch."""
    encoder = getattr(model, "encoder", None)
    if encoder is None or not hasattr(encoder, "weights"):
        return None
    return {"name": encoder.name, "weights": dict(encoder.weights), "normalize": encoder.normalize}


def write_history(history: list[dict[str, float]], path: Path) -> None:
    frame = pd.DataFrame(history, columns=list(HISTORY_COLUMNS))
    atomic_write_csv(path, frame, float_format="%.6g")


def write_json(data: dict[str, Any], path: Path) -> None:
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")


def end_of_epoch(run: Run, epoch: int, stats: dict[str, float]) -> dict[str, float]:
    """Scheduler step, history row, checkpoints. Returns the history row."""
    lr = run.optimizer.param_groups[0]["lr"]  # the rate this epoch trained with
    if isinstance(run.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        run.scheduler.step(stats["val_dice"])
    elif run.scheduler is not None:
        run.scheduler.step()
    improved = stats["val_dice"] > run.best_dice
    run.epoch = epoch
    if improved:
        run.best_epoch, run.best_dice, run.stale_epochs = epoch, stats["val_dice"], 0
    else:
        run.stale_epochs += 1
    row = {"epoch": epoch, "train_loss": stats["train_loss"], "val_loss": stats["val_loss"],
           "val_dice": stats["val_dice"], "val_iou": stats["val_iou"], "lr": lr,
           "epoch_seconds": stats["epoch_seconds"], "images_per_s": stats["images_per_s"],
           "data_wait_share": stats["data_wait_share"]}
    run.history.append(row)
    # RNG states last: whatever runs after this point also runs after a resume.
    rng_states = D.all_gather_objects(rng_state())
    if run.dist.is_main:
        state = checkpoint_state(run, rng_states)
        save_checkpoint(run.out / "last.pt", state)
        if improved:
            save_checkpoint(run.out / "best.pt", state)
        write_history(run.history, run.out / "history.csv")
    return row


def format_epoch(row: dict[str, float], epochs: int) -> str:
    return (f"epoch {row['epoch']}/{epochs}  train loss {row['train_loss']:.4f}  val loss {row['val_loss']:.4f}  "
            f"val Dice {row['val_dice']:.4f}  IoU {row['val_iou']:.4f}  lr {row['lr']:.2e}  "
            f"{row['epoch_seconds']:.1f} s  {row['images_per_s']:.1f} img/s")


# ----------------------------------------------------------------------------- test

def load_best(run: Run) -> None:
    """Rank 0 reads best.pt; the weights are broadcast so no rank needs the file system."""
    if run.dist.is_main:
        checkpoint = read_checkpoint(run.out / "best.pt", map_location="cpu")
        run.raw_model.load_state_dict(checkpoint["model_state"])
    if D.is_distributed():
        for tensor in run.raw_model.state_dict().values():
            torch.distributed.broadcast(tensor, 0)


def test(run: Run) -> dict[str, Any]:
    """Score the best checkpoint on the test split (every rank a strided share); rank 0 writes
    test_per_image.csv and predictions.png. Returns the aggregate metrics and timings."""
    from segtrain.data import ShardDataset, stored_size
    from segtrain.metrics import aggregate

    config = run.config
    size = tuple(config.size) if config.size else None
    test_set = stored_size(ShardDataset(config.manifest, "test", size=size, normalize=run.normalize))
    load_best(run)
    share = list(range(run.dist.rank, len(test_set), run.dist.world_size))
    rows, timing = evaluate(run.eval_model, test_set, device=run.device, threshold=config.threshold,
                            input_size=run.input_size, batch_size=config.batch_size, indices=share,
                            amp_dtype=run.amp_dtype, channels_last=config.channels_last,
                            workers=min(config.workers, 2), progress=run.dist.is_main)
    all_rows = [row for rank_rows in D.all_gather_objects(rows) for row in rank_rows]
    result: dict[str, Any] = {
        "inference_images_per_s": timing["images"] / timing["forward_seconds"] if timing["forward_seconds"] else None,
    }
    if run.dist.is_main:
        issues = dict(zip(test_set.rows["sample_id"], test_set.rows["issues"]))
        for row in all_rows:
            row["issues"] = issues.get(row["sample_id"], "")
        write_per_image(all_rows, run.out / "test_per_image.csv")
        flagged = sum(bool(row["issues"]) for row in all_rows)
        if flagged:
            log.warning("%d of %d test images carry clean findings (issues column of "
                        "test_per_image.csv; marked in predictions.png): their scores are "
                        "measured against masks clean questioned", flagged, len(all_rows))
        result["test"] = {"n_images": len(all_rows), **aggregate(all_rows)}
        plot_test_predictions(run, test_set, all_rows)
    return result


def plot_test_predictions(run: Run, test_set: Dataset, rows: list[dict[str, Any]]) -> None:
    from segprep.shards import load_sample
    from segtrain.plots import plot_predictions

    ranked = sorted(rows, key=lambda r: (-r["dice"], r["sample_id"]))
    chosen = ranked[:PLOT_SAMPLES]
    chosen += [r for r in ranked[-PLOT_SAMPLES:] if r not in chosen]
    index_of = {sid: i for i, sid in enumerate(test_set.rows["sample_id"].tolist())}
    indices = [index_of[r["sample_id"]] for r in chosen]
    # the plain module: one image at a time would make a compiled model recompile for batch 1
    preds = predict_masks(run.raw_model, test_set, indices, device=run.device, threshold=run.config.threshold,
                          input_size=run.input_size, amp_dtype=run.amp_dtype)
    root = Path(run.config.manifest).parent
    panels = []
    for row, index, pred in zip(chosen, indices, preds):
        sample = load_sample(root, test_set.rows.iloc[index])
        flag = f"\nflagged: {row['issues'].replace(';', ', ')}" if row.get("issues") else ""
        panels.append({"image": sample.image, "mask": sample.mask > 0, "pred": pred > 0,
                       "title": f"{row['sample_id']}\nDice {row['dice']:.3f}{flag}"})
    plot_predictions(panels, run.out / "predictions.png", n_best=min(PLOT_SAMPLES, len(panels)))


# ----------------------------------------------------------------------------- the whole run

def train(config: RunConfig, on_epoch: Callable[[dict[str, float]], None] | None = None) -> dict[str, Any]:
    """Train, select the best epoch on val Dice, test it, write the run folder; returns the summary.

    ``on_epoch`` is called on rank 0 with each epoch's history row (the CLI prints it).
    The summary (also ``<out>/summary.json``) holds ``test`` (``n_images``, ``mean``/``std``/
    ``min``/``max`` per metric and ``global``), ``best_epoch``, ``best_val_dice``,
    ``epochs_run``, ``stopped_early``, ``train_images_per_s``, ``inference_images_per_s``,
    ``peak_gpu_memory_mb`` (None on CPU), ``parameters``, ``wall_seconds``, ``versions`` and
    the run's device, amp, world size and input size.
    """
    # one run per folder at a time (rank 0 of a DDP run holds the lock for all ranks)
    lock = (WorkLock(config.out_dir, "segtrain run") if int(os.environ.get("RANK", "0")) == 0
            else contextlib.nullcontext())
    with lock:
        return _train(config, on_epoch)


def _train(config: RunConfig, on_epoch: Callable[[dict[str, float]], None] | None) -> dict[str, Any]:
    wall_start = time.perf_counter()
    run: Run | None = None
    ok = False
    try:
        run = setup(config)
        if run.dist.is_main:
            write_config(run)
        if run.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(run.device)
        stop_reason = train_epochs(run, on_epoch)
        in_sync = D.params_in_sync(run.raw_model)
        if not in_sync:
            raise SegtrainError("the ranks ended with different weights; DDP lost synchronisation")
        result = test(run)
        peak = None
        if run.device.type == "cuda":
            peak_t = torch.tensor(float(torch.cuda.max_memory_allocated(run.device)), device=run.device)
            peak = D.all_reduce_max(peak_t).item() / 2**20
        summary: dict[str, Any] = {}
        if run.dist.is_main:
            summary = build_summary(run, result, stop_reason, peak, in_sync, wall_start)
            write_json(summary, run.out / "summary.json")
            from segtrain.plots import plot_curves

            plot_curves(run.history, run.out / "curves.png", best_epoch=run.best_epoch)
            log.info("test Dice %.4f (mean over %d images); run folder %s",
                     summary["test"]["mean"]["dice"], summary["test"]["n_images"], run.out)
        summary = D.broadcast_object(summary)
        ok = True
        return summary
    finally:
        # DDP holds the process group: drop it first, so that the group's threads are joined by
        # destroy_process_group now rather than by a destructor at interpreter exit
        run = None
        gc.collect()
        D.cleanup(ok)


def write_config(run: Run) -> None:
    """``config.json``: the run's options as given and as resolved on this machine."""
    from segtrain.models import count_parameters

    config = run.config
    write_json({**config.to_dict(), "resolved": {
        "device": str(run.device), "amp": amp_name(run.amp_dtype), "world_size": run.dist.world_size,
        "input_size": list(run.input_size), "model_kwargs": dict(run.raw_model.segkit_kwargs),
        "normalize": run.normalize, "encoder": encoder_record(run.raw_model),
        "host": platform.node()}, "versions": versions()}, run.out / "config.json")
    log.info("training %s (%d parameters) on %s, %d train / %d val images at %dx%d, amp %s, world %d",
             config.model, count_parameters(run.raw_model), run.device, len(run.train_set),
             len(run.val_set), *run.input_size, amp_name(run.amp_dtype), run.dist.world_size)


def train_epochs(run: Run, on_epoch: Callable[[dict[str, float]], None] | None) -> str | None:
    """Epochs from the one after ``run.epoch`` to --epochs: train, validate, checkpoint. Returns
    why the loop ended early (early_stop, max_minutes), or None."""
    config = run.config
    loop_start, epoch_times = time.perf_counter(), []
    for epoch in range(run.epoch + 1, config.epochs + 1):
        if config.early_stop and run.stale_epochs >= config.early_stop:
            log.info("early stop: val Dice has not improved for %d epochs (best %.4f at epoch %d)",
                     config.early_stop, run.best_dice, run.best_epoch)
            return "early_stop"
        if out_of_time(config.max_minutes, loop_start, epoch_times):
            log.info("time budget: another epoch (~%.0f s) would end past --max-minutes %g; "
                     "stopping after %d epochs", statistics.mean(epoch_times), config.max_minutes,
                     len(epoch_times))
            return "max_minutes"
        epoch_start = time.perf_counter()
        try:
            stats = train_one_epoch(run, epoch)
        except NonFiniteLoss as exc:
            raise SegtrainError(f"{exc}; stopped. {last_good(run)}") from None
        D.broadcast_buffers(run.raw_model)  # everyone validates (and rank 0 saves) the same BN stats
        stats.update(validate(run))
        if not math.isfinite(stats["val_loss"]):
            raise SegtrainError(f"validation loss is {stats['val_loss']} at epoch {epoch}; stopped. "
                                f"{last_good(run)}")
        stats["epoch_seconds"] = time.perf_counter() - epoch_start
        epoch_times.append(stats["epoch_seconds"])
        row = end_of_epoch(run, epoch, stats)
        log.info(format_epoch(row, config.epochs))
        if on_epoch is not None and run.dist.is_main:
            on_epoch(row)
    return None


def build_summary(run: Run, result: dict[str, Any], stop_reason: str | None, peak: float | None,
                  in_sync: bool, wall_start: float) -> dict[str, Any]:
    """``summary.json``: the test metrics of the best epoch and how the run went."""
    from segtrain.models import count_parameters

    config = run.config
    speeds = [row["images_per_s"] for row in run.history]
    return {
        "run": str(run.out), "manifest": config.manifest, "model": config.model,
        "model_kwargs": dict(run.raw_model.segkit_kwargs), "loss": config.loss,
        "encoder": encoder_record(run.raw_model),
        "epochs_run": len(run.history), "best_epoch": run.best_epoch, "best_val_dice": run.best_dice,
        "stopped_early": stop_reason is not None, "stop_reason": stop_reason,
        "test": result["test"],
        # median over epochs: the first epoch carries cudnn autotuning and compilation
        "train_images_per_s": statistics.median(speeds) if speeds else None,
        "inference_images_per_s": result["inference_images_per_s"],
        "peak_gpu_memory_mb": peak,
        "parameters": count_parameters(run.raw_model),
        "wall_seconds": time.perf_counter() - wall_start,
        "train_seconds": sum(row["epoch_seconds"] for row in run.history),
        "device": str(run.device), "amp": amp_name(run.amp_dtype),
        "channels_last": config.channels_last, "compile": config.compile,
        "world_size": run.dist.world_size, "ranks_in_sync": in_sync,
        "input_size": list(run.input_size),
        "versions": versions(),
    }


def out_of_time(max_minutes: float | None, loop_start: float, epoch_times: list[float]) -> bool:
    """Whether one more epoch of the mean length so far would end past the budget.

    Decided on rank 0 and broadcast, so every DDP rank stops at the same epoch.
    """
    if max_minutes is None:  # the same config on every rank: nothing to agree on
        return False
    late = bool(epoch_times) and (time.perf_counter() - loop_start + statistics.mean(epoch_times)
                                  > 60.0 * max_minutes)
    return bool(D.broadcast_object(late))


def last_good(run: Run) -> str:
    if run.epoch == 0:
        return "No checkpoint was written (no epoch completed)."
    return f"The last good checkpoint is {run.out / 'last.pt'} (epoch {run.epoch})."
