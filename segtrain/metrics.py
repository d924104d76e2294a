"""Binary segmentation metrics per image and over a dataset, in the style of MONAI's metrics.

Masks are ``(H,W)`` arrays; any nonzero value is foreground (so 0/1, bool and class-index masks
all work, foreground = classes > 0). Where a sample has a region of interest (DRIVE's field of
view), every metric is computed inside it: pixels outside the ROI are ignored, and for HD95 both
masks are cut to the ROI before their surfaces are taken.

Conventions for the cases a formula leaves undefined (0/0), chosen so that every value is finite
and means over images stay defined:

=================================  =====  =====  =========  ======  ====
case                               Dice   IoU    precision  recall  HD95
=================================  =====  =====  =========  ======  ====
prediction and target both empty   1      1      1          1       0
target empty, prediction not       0      0      0          0       diag
prediction empty, target not       0      0      0          0       diag
=================================  =====  =====  =========  ======  ====

``diag`` is the image diagonal ``sqrt((H*sy)**2 + (W*sx)**2)`` (in pixels for unit spacing): a
finite worst case, larger than any distance two pixels of the image can have. Specificity with no
negative pixel is 1, accuracy over zero pixels (an empty ROI) is 1.

Aggregation (:func:`aggregate`) reports both the mean over images (each image counts the same)
and the global value from TP/FP/FN/TN summed over all images (each pixel counts the same, so large
or foreground-rich images weigh more). The two differ; report which one a number is.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from scipy import ndimage

from segtrain.errors import SegtrainError

__all__ = [
    "METRIC_NAMES",
    "COUNT_NAMES",
    "confusion",
    "scores",
    "image_metrics",
    "aggregate",
    "hd95",
    "batch_confusion",
]

METRIC_NAMES = ("dice", "iou", "precision", "recall", "specificity", "accuracy", "hd95")
COUNT_NAMES = ("tp", "fp", "fn", "tn")


def _binary(mask: np.ndarray, name: str) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (H,W) mask, got shape {mask.shape}")
    return mask != 0


def _inputs(
    pred: np.ndarray, target: np.ndarray, roi: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    p, t = _binary(pred, "pred"), _binary(target, "target")
    if p.shape != t.shape:
        raise ValueError(f"pred and target shapes differ: {p.shape} vs {t.shape}")
    r = None
    if roi is not None:
        r = _binary(roi, "roi")
        if r.shape != p.shape:
            raise ValueError(f"roi shape {r.shape} differs from the mask shape {p.shape}")
    return p, t, r


def confusion(pred: np.ndarray, target: np.ndarray, roi: np.ndarray | None = None) -> dict[str, int]:
    """Pixel counts ``tp, fp, fn, tn`` of a binary prediction against a target, inside ``roi``."""
    p, t, r = _inputs(pred, target, roi)
    if r is not None:
        p, t = p[r], t[r]
    return {
        "tp": int(np.count_nonzero(p & t)),
        "fp": int(np.count_nonzero(p & ~t)),
        "fn": int(np.count_nonzero(~p & t)),
        "tn": int(np.count_nonzero(~p & ~t)),
    }


def _ratio(num: float, den: float, if_empty: float) -> float:
    return float(num) / float(den) if den > 0 else if_empty


def scores(tp: float, fp: float, fn: float, tn: float) -> dict[str, float]:
    """Dice, IoU, precision, recall, specificity and accuracy from counts, with the module's conventions."""
    # both masks empty is the one case where an undefined ratio counts as success
    both_empty = 1.0 if tp + fp + fn == 0 else 0.0
    return {
        "dice": _ratio(2 * tp, 2 * tp + fp + fn, both_empty),
        "iou": _ratio(tp, tp + fp + fn, both_empty),
        "precision": _ratio(tp, tp + fp, both_empty),
        "recall": _ratio(tp, tp + fn, both_empty),
        "specificity": _ratio(tn, tn + fp, 1.0),
        "accuracy": _ratio(tp + tn, tp + fp + fn + tn, 1.0),
    }


def _surface(mask: np.ndarray) -> np.ndarray:
    """Boundary pixels: the mask minus its 4-connected erosion, outside the array counting as background."""
    return mask & ~ndimage.binary_erosion(mask, border_value=0)


def hd95(
    pred: np.ndarray,
    target: np.ndarray,
    roi: np.ndarray | None = None,
    spacing: Sequence[float] = (1.0, 1.0),
) -> float:
    """95th-percentile Hausdorff distance between the surfaces of ``pred`` and ``target``.

    Matches MONAI's ``compute_hausdorff_distance(..., percentile=95, directed=False)``: the surface
    of a mask is the mask XOR its binary erosion (4-connected structuring element, pixels on the
    image border are surface); for each surface pixel of one mask the Euclidean distance to the
    nearest surface pixel of the other is taken (``distance_transform_edt`` with ``sampling =
    spacing``, spacing given as (row, column)); the result is the larger of the two directed 95th
    percentiles (``np.percentile``, linear interpolation). It is not the percentile of the union of
    both distance sets.

    Both masks are restricted to ``roi`` first. Both empty -> 0.0; exactly one empty -> the image
    diagonal ``sqrt((H*sy)**2 + (W*sx)**2)``, a finite worst case so that means stay defined.
    """
    p, t, r = _inputs(pred, target, roi)
    if r is not None:
        p, t = p & r, t & r
    has_p, has_t = bool(p.any()), bool(t.any())
    if not has_p and not has_t:
        return 0.0
    if has_p != has_t:
        return math.hypot(p.shape[0] * spacing[0], p.shape[1] * spacing[1])

    # distances between surface pixels do not depend on what lies outside the union's bounding
    # box, so cropping to it only saves time (MONAI crops the same way)
    rows, cols = np.nonzero(p | t)
    box = (slice(rows.min(), rows.max() + 1), slice(cols.min(), cols.max() + 1))
    edges_p, edges_t = _surface(p[box]), _surface(t[box])
    to_t = ndimage.distance_transform_edt(~edges_t, sampling=spacing)[edges_p]
    to_p = ndimage.distance_transform_edt(~edges_p, sampling=spacing)[edges_t]
    return float(max(np.percentile(to_t, 95), np.percentile(to_p, 95)))


def image_metrics(
    pred: np.ndarray,
    target: np.ndarray,
    roi: np.ndarray | None = None,
    with_hd95: bool = True,
) -> dict[str, float]:
    """All metrics of one image inside ``roi``, plus its raw ``tp, fp, fn, tn`` counts.

    Keys: ``METRIC_NAMES`` (``hd95`` only when ``with_hd95``) and ``COUNT_NAMES``. The counts let
    :func:`aggregate` compute the global values.
    """
    counts = confusion(pred, target, roi)
    row: dict[str, float] = dict(scores(**counts))
    if with_hd95:
        row["hd95"] = hd95(pred, target, roi)
    row.update(counts)
    return row


def aggregate(rows: list[dict]) -> dict[str, dict[str, float]]:
    """Summarise per-image rows (outputs of :func:`image_metrics`) over a dataset.

    Returns ``{"mean", "std", "min", "max"}``, each ``{metric: value over images}`` for the
    metrics present in the rows (``std`` is the population standard deviation, ddof=0), and
    ``"global"``: the metrics (no HD95) recomputed from TP/FP/FN/TN summed over all rows.
    """
    if not rows:
        raise SegtrainError("cannot aggregate metrics over zero images")
    present = [m for m in METRIC_NAMES if all(m in row for row in rows)]
    values = {m: np.array([float(row[m]) for row in rows]) for m in present}
    summary: dict[str, dict[str, float]] = {
        "mean": {m: float(v.mean()) for m, v in values.items()},
        "std": {m: float(v.std()) for m, v in values.items()},
        "min": {m: float(v.min()) for m, v in values.items()},
        "max": {m: float(v.max()) for m, v in values.items()},
    }
    missing = [c for c in COUNT_NAMES if not all(c in row for row in rows)]
    if missing:
        raise SegtrainError(f"metric rows lack the counts {missing} needed for the global values")
    totals = {c: sum(int(row[c]) for row in rows) for c in COUNT_NAMES}
    summary["global"] = scores(**totals)
    return summary


@torch.no_grad()
def batch_confusion(
    pred_logits: torch.Tensor,
    target: torch.Tensor,
    roi: torch.Tensor | None = None,
    threshold: float = 0.5,
) -> torch.Tensor:
    """Per-image ``(tp, fp, fn, tn)`` counts, shape ``(N, 4)`` int64, on the logits' device.

    ``pred_logits (N,1,H,W)``: foreground where ``sigmoid(logit) > threshold``.
    ``pred_logits (N,C,H,W)``, ``C > 1``: foreground where the argmax class is > 0.
    ``target`` and ``roi``: ``(N,H,W)`` or ``(N,1,H,W)``; target foreground is any class > 0,
    pixels where ``roi`` is 0 are not counted. Equals :func:`confusion` image by image.
    """
    if pred_logits.dim() != 4:
        raise ValueError(f"pred_logits must have shape (N,C,H,W), got {tuple(pred_logits.shape)}")
    if pred_logits.shape[1] == 1:
        pred = torch.sigmoid(pred_logits[:, 0].float()) > threshold
    else:
        pred = pred_logits.argmax(dim=1) > 0
    if target.dim() == 4:
        target = target[:, 0]
    tgt = target > 0
    if tgt.shape != pred.shape:
        raise ValueError(
            f"target shape {tuple(target.shape)} does not match logits {tuple(pred_logits.shape)}"
        )
    if roi is None:
        inside = torch.ones_like(pred)
    else:
        inside = (roi[:, 0] if roi.dim() == 4 else roi) != 0
        if inside.shape != pred.shape:
            raise ValueError(
                f"roi shape {tuple(roi.shape)} does not match logits {tuple(pred_logits.shape)}"
            )
    dims = (1, 2)
    tp = (pred & tgt & inside).sum(dim=dims)
    fp = (pred & ~tgt & inside).sum(dim=dims)
    fn = (~pred & tgt & inside).sum(dim=dims)
    tn = (~pred & ~tgt & inside).sum(dim=dims)
    return torch.stack([tp, fp, fn, tn], dim=1)
