"""``segtrain bench --speed``: per model, train-step and inference images/s and peak memory
on random tensors, with AMP off and on; no data and no convergence.

The train step is the trainer's own (:func:`segtrain.trainer.train_step`), so a speed figure
measures the step a real run takes, loss in float32 and GradScaler included.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from segprep.work import atomic_write_csv, atomic_write_text
from segtrain.bench import cell, gmacs_cell, markdown_table
from segtrain.evaluate import autocast
from segtrain.losses import DeepSupervisionLoss, build_loss
from segtrain.errors import SegtrainError
from segtrain.trainer import train_step

log = logging.getLogger(__name__)

SPEED_COLUMNS = ("model", "amp", "params", "gmacs", "train_img_s", "infer_img_s",
                 "train_peak_mb", "infer_peak_mb", "status")


#: the run options a speed measurement uses; the others (loss, lr, epochs...) do not apply
SPEED_OPTIONS = ("size", "batch_size", "device", "base_channels", "model_kwargs", "channels_last", "amp")


def speed_plan(models: Sequence[str], base: dict[str, Any], manifest: Path | None = None) -> dict[str, Any]:
    """What ``bench --speed-only`` measures, from the bench's options: models (default: every
    registered one), size, batch size, device, model options and the AMP modes."""
    from segtrain.config import parse_size
    from segtrain.models import MODELS

    if manifest is not None:
        raise SegtrainError("--speed-only takes no MANIFEST (it times random tensors)")
    ignored = sorted(k for k in base if k not in SPEED_OPTIONS)
    if ignored:
        raise SegtrainError(f"--speed-only does not use {', '.join(ignored)}; it takes --models, --size, "
                            f"--batch-size, --device, --base-channels, --channels-last, --amp, --steps, --warmup")
    kwargs = dict(base.get("model_kwargs") or {})
    if base.get("base_channels") is not None:
        kwargs["base_channels"] = base["base_channels"]
    return {"models": list(models) or list(MODELS),
            "size": tuple(parse_size(base.get("size") or 352)),
            "batch_size": base.get("batch_size") or 16, "device": base.get("device", "auto"),
            "model_kwargs": kwargs, "channels_last": bool(base.get("channels_last")),
            "amp": {"off": ("off",), "auto": ("off", "on")}.get(base.get("amp", "auto"), ("on",))}


def _amp_modes(device: torch.device) -> list[tuple[str, torch.dtype | None]]:
    if device.type == "cuda":
        return [("off", None), ("bf16", torch.bfloat16) if torch.cuda.is_bf16_supported()
                else ("fp16", torch.float16)]
    return [("off", None), ("bf16", torch.bfloat16)]


def _timer(device: torch.device) -> Callable[[], Callable[[], float]]:
    """``start = timer(); ...; seconds = start()``: CUDA events on a GPU (the work is queued,
    so a host clock would time the queueing), the host clock on a CPU."""
    if device.type == "cuda":
        def start_cuda() -> Callable[[], float]:
            begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            begin.record()

            def stop() -> float:
                end.record()
                end.synchronize()
                return begin.elapsed_time(end) / 1000

            return stop
        return start_cuda

    def start_cpu() -> Callable[[], float]:
        begin = time.perf_counter()
        return lambda: time.perf_counter() - begin
    return start_cpu


def measure_speed(model_name: str, *, size: tuple[int, int], batch_size: int, device: torch.device,
                  amp: tuple[str, torch.dtype | None], steps: int, warmup: int,
                  model_kwargs: dict[str, Any] | None = None, channels_last: bool = False) -> dict[str, Any]:
    """Train-step (the trainer's :func:`~segtrain.trainer.train_step`: forward, BCE loss, backward, Adam step) and inference images/s of one model
    on random tensors, and the peak CUDA memory of each (None on CPU)."""
    from segtrain.models import build_model, model_info

    amp_name, amp_dtype = amp
    kwargs = dict(model_kwargs or {})
    info = model_info(model_name, size=size, **kwargs)
    row: dict[str, Any] = {"model": model_name, "amp": amp_name, "params": info["params"],
                           "gmacs": None if info["macs"] is None else info["macs"] / 1e9,
                           "train_img_s": None, "infer_img_s": None, "train_peak_mb": None,
                           "infer_peak_mb": None, "status": "ok"}
    if info["macs"] is None:
        row["status"] = f"n/a: size must be divisible by {info['required_divisor']}"
        return row
    torch.manual_seed(0)
    model = build_model(model_name, **kwargs).to(device)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    x = torch.randn(batch_size, model.in_channels, *size, device=device).contiguous(memory_format=memory_format)
    # a binary target (class indices), every pixel inside the ROI, as the loader gives them
    target = torch.randint(0, max(2, model.num_classes), (batch_size, *size), device=device)
    roi = torch.ones(batch_size, *size, dtype=torch.uint8, device=device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    criterion = DeepSupervisionLoss(build_loss("bce"))
    timer = _timer(device)
    cuda = device.type == "cuda"

    def train_step_() -> None:
        train_step(model, criterion, optimizer, scaler, x, target, roi, amp_dtype)

    def infer_step() -> None:
        with torch.inference_mode(), autocast(device, amp_dtype):
            model(x)

    try:
        for phase, step, mode in (("train", train_step_, True), ("infer", infer_step, False)):
            model.train(mode)
            for _ in range(warmup):
                step()
            if cuda:
                torch.cuda.synchronize(device)
                torch.cuda.reset_peak_memory_stats(device)
            stop = timer()
            for _ in range(steps):
                step()
            seconds = stop()
            row[f"{phase}_img_s"] = steps * batch_size / seconds if seconds > 0 else None
            if cuda:
                row[f"{phase}_peak_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    except torch.cuda.OutOfMemoryError:
        row["status"] = f"out of memory at batch size {batch_size}"
    except RuntimeError as exc:
        if amp_dtype is None:
            raise
        # e.g. an operator without a bf16 kernel on this CPU: a fact for the table, not a failure
        row["status"] = f"n/a: {str(exc).splitlines()[0][:80]}"
    finally:
        del model, optimizer, x, target, roi
        if cuda:
            torch.cuda.empty_cache()
    return row


def speed_benchmark(models: Sequence[str], *, size: tuple[int, int], batch_size: int, device: str = "auto",
                    steps: int = 10, warmup: int = 3, model_kwargs: dict[str, Any] | None = None,
                    channels_last: bool = False, amp: Sequence[str] = ("off", "on"),
                    on_row: Callable[[dict[str, Any]], None] | None = None) -> pd.DataFrame:
    """``measure_speed`` for every model, AMP off and on (bf16 on CPU and on GPUs that have it,
    fp16 otherwise). Every name and option is checked before anything is timed."""
    from segtrain.models import MODELS, build_model
    from segtrain.trainer import resolve_device

    unknown = [m for m in models if m not in MODELS]
    if unknown:
        raise SegtrainError(f"unknown model(s) {', '.join(unknown)}; valid models: {', '.join(MODELS)}")
    if steps < 1 or warmup < 0 or batch_size < 1:
        raise SegtrainError(f"need steps >= 1, warmup >= 0, batch size >= 1; got {steps}, {warmup}, {batch_size}")
    for name in models:
        with torch.device("meta"):
            build_model(name, **(model_kwargs or {}))
    torch_device = resolve_device(device)
    modes = [m for m in _amp_modes(torch_device) if ("off" if m[1] is None else "on") in amp]
    rows = []
    for name in models:
        for mode in modes:
            row = measure_speed(name, size=size, batch_size=batch_size, device=torch_device, amp=mode,
                                steps=steps, warmup=warmup, model_kwargs=model_kwargs,
                                channels_last=channels_last)
            row["device"] = str(torch_device)
            rows.append(row)
            if on_row is not None:
                on_row(row)
    return pd.DataFrame(rows, columns=[*SPEED_COLUMNS, "device"])


def format_speed(frame: pd.DataFrame) -> list[list[str]]:
    header = ["model", "amp", "params (M)", "GMACs", "train img/s", "infer img/s", "train peak MB",
              "infer peak MB", "status"]
    table = [header]
    for _, r in frame.iterrows():
        table.append([r["model"], r["amp"], cell(r["params"] / 1e6, 3), gmacs_cell(r["gmacs"]),
                      cell(r["train_img_s"], 1), cell(r["infer_img_s"], 1),
                      cell(r["train_peak_mb"], 0), cell(r["infer_peak_mb"], 0), r["status"]])
    return table


def write_speed(frame: pd.DataFrame, out: Path, *, title: str) -> dict[str, Path]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"csv": out / "speed.csv", "md": out / "speed.md"}
    atomic_write_csv(paths["csv"], frame, float_format="%.6g")
    text = [f"# {title}", "", markdown_table(format_speed(frame)), "",
            "Random tensors; train = forward + BCE + backward + Adam step; infer = eval-mode forward. "
            "Peak memory: CUDA only.", ""]
    atomic_write_text(paths["md"], "\n".join(text))
    return paths
