"""Run a model over a split and score every image with :mod:`segtrain.metrics`.

Scores are taken at each sample's stored size, inside its ROI: when the model was trained at
another size the input is resized to the training size, and the logits are resized back
(bilinear) before thresholding, so a prediction is judged against the untouched mask.
The same forward helper serves ``segtrain predict``.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset, Subset

from segprep.work import atomic_write_csv

from segtrain.metrics import COUNT_NAMES, METRIC_NAMES, image_metrics

log = logging.getLogger(__name__)

# issues: the sample's clean findings (a test image whose mask clean flagged is scored against
# that mask: its metrics say as much about the label as about the model)
PER_IMAGE_COLUMNS = ("sample_id", *METRIC_NAMES, *COUNT_NAMES, "issues")


def autocast(device: torch.device, amp_dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    if amp_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=amp_dtype)


def main_logits(output: torch.Tensor | list[torch.Tensor] | tuple) -> torch.Tensor:
    """The full-resolution logits of a model output (deep supervision returns a list, main first)."""
    return output[0] if isinstance(output, (list, tuple)) else output


@torch.no_grad()
def forward_at_size(model: nn.Module, images: torch.Tensor, input_size: tuple[int, int] | None, *,
                    divisor: int = 1, amp_dtype: torch.dtype | None = None,
                    channels_last: bool = False) -> torch.Tensor:
    """float32 logits ``(N, C, H, W)`` at the size of ``images`` (``(N, 3, H, W)``, on the model's device).

    The batch is resized to ``input_size`` (the size the model was trained at) and padded up to a
    multiple of ``divisor`` when needed; the logits are cropped and resized back.
    """
    height, width = images.shape[-2:]
    x = images
    if input_size is not None and (height, width) != tuple(input_size):
        # antialias when shrinking: close to the area resize the training samples went through
        shrinking = input_size[0] <= height and input_size[1] <= width
        x = F.interpolate(x, size=tuple(input_size), mode="bilinear", align_corners=False, antialias=shrinking)
    in_h, in_w = x.shape[-2:]
    pad_h, pad_w = (-in_h) % divisor, (-in_w) % divisor
    if pad_h or pad_w:
        # replicate: a zero border would read as a dark frame the model never saw
        x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with autocast(x.device, amp_dtype):
        logits = main_logits(model(x))
    logits = logits.float()[..., :in_h, :in_w]
    if (in_h, in_w) != (height, width):
        logits = F.interpolate(logits, size=(height, width), mode="bilinear", align_corners=False)
    return logits.contiguous()


def foreground(logits: torch.Tensor, threshold: float) -> torch.Tensor:
    """Boolean ``(N, H, W)`` foreground: sigmoid > threshold for one channel, argmax > 0 for several."""
    if logits.shape[1] == 1:
        # sigmoid(z) > t  <=>  z > logit(t): no sigmoid over the whole map
        return logits[:, 0] > math.log(threshold / (1.0 - threshold))
    return logits.argmax(dim=1) > 0


def _collate_single(items: list[dict]) -> dict:
    return items[0]


@torch.no_grad()
def evaluate(model: nn.Module, dataset: Dataset, *, device: torch.device, threshold: float = 0.5,
             input_size: tuple[int, int] | None = None, batch_size: int = 8,
             indices: list[int] | None = None, amp_dtype: torch.dtype | None = None,
             channels_last: bool = False, workers: int = 0, with_hd95: bool = True,
             progress: bool = False) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """Per-image metric rows (``PER_IMAGE_COLUMNS``) for ``dataset`` (or its ``indices``).

    Returns the rows and timing ``{"images", "forward_seconds"}``: the forward pass alone
    (synchronised on CUDA), which is what inference images/s are computed from.
    Samples of different sizes are run one at a time.
    """
    from segprep.progress import progress as progress_bar

    from segtrain.data import make_loader

    model.eval()
    subset: Dataset = Subset(dataset, indices) if indices is not None else dataset
    sizes = getattr(dataset, "rows", None)
    uniform = sizes is None or len(set(zip(sizes["height"], sizes["width"]))) == 1
    loader = make_loader(subset, batch_size=batch_size if uniform else 1, shuffle=False,
                         workers=workers, pin_memory=device.type == "cuda", device=device)
    divisor = int(getattr(model, "required_divisor", 1) or 1)
    rows: list[dict[str, Any]] = []
    forward_seconds = 0.0
    for batch in progress_bar(loader, desc="evaluate", unit="batch", enabled=progress, leave=False):
        images = batch["image"].to(device, non_blocking=True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        logits = forward_at_size(model, images, input_size, divisor=divisor, amp_dtype=amp_dtype,
                                 channels_last=channels_last)
        pred = foreground(logits, threshold).cpu().numpy()  # .cpu() waits for the GPU
        forward_seconds += time.perf_counter() - start
        masks, rois = batch["mask"].cpu().numpy(), batch["roi"].cpu().numpy()  # on the GPU when the loader finished there
        for i, sample_id in enumerate(batch["sample_id"]):
            metrics = image_metrics(pred[i], masks[i], rois[i], with_hd95=with_hd95)
            rows.append({"sample_id": sample_id, **metrics})
    return rows, {"images": float(len(rows)), "forward_seconds": forward_seconds}


def predict_masks(model: nn.Module, dataset: Dataset, indices: list[int], *, device: torch.device,
                  threshold: float = 0.5, input_size: tuple[int, int] | None = None,
                  amp_dtype: torch.dtype | None = None) -> list[np.ndarray]:
    """Binary predictions (uint8 0/1, stored size) for a few samples, for the plots."""
    model.eval()
    divisor = int(getattr(model, "required_divisor", 1) or 1)
    masks = []
    for index in indices:
        image = dataset[index]["image"].unsqueeze(0).to(device)
        logits = forward_at_size(model, image, input_size, divisor=divisor, amp_dtype=amp_dtype)
        masks.append(foreground(logits, threshold)[0].cpu().numpy().astype(np.uint8))
    return masks


def write_per_image(rows: list[dict[str, Any]], path: Path) -> Path:
    """``test_per_image.csv``: one row per image, sorted by sample_id for stable diffs."""
    frame = pd.DataFrame(rows)
    columns = [c for c in PER_IMAGE_COLUMNS if c in frame.columns]
    frame = frame[columns].sort_values("sample_id", kind="stable")
    return atomic_write_csv(Path(path), frame, float_format="%.6g")
