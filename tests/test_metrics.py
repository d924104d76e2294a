"""Metrics against hand-computed values on tiny masks, the empty conventions, ROI and aggregation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage.metrics import hausdorff_distance

from segtrain.errors import SegtrainError
from segtrain.metrics import (
    METRIC_NAMES,
    aggregate,
    batch_confusion,
    confusion,
    hd95,
    image_metrics,
)

# 3x3 case:          pred            target
#                    1 1 0           1 0 0
#                    0 1 0           1 1 0
#                    0 0 0           0 0 1
# tp: (0,0) (1,1) = 2;  fp: (0,1) = 1;  fn: (1,0) (2,2) = 2;  tn: the other 4
PRED = np.array([[1, 1, 0], [0, 1, 0], [0, 0, 0]])
TARGET = np.array([[1, 0, 0], [1, 1, 0], [0, 0, 1]])


def test_confusion_by_hand():
    assert confusion(PRED, TARGET) == {"tp": 2, "fp": 1, "fn": 2, "tn": 4}
    assert confusion(PRED.astype(bool), TARGET.astype(float)) == {"tp": 2, "fp": 1, "fn": 2, "tn": 4}


def test_image_metrics_by_hand():
    m = image_metrics(PRED, TARGET, with_hd95=False)
    assert m["dice"] == pytest.approx(2 * 2 / (2 * 2 + 1 + 2))  # 4/7
    assert m["iou"] == pytest.approx(2 / (2 + 1 + 2))  # 2/5
    assert m["precision"] == pytest.approx(2 / 3)
    assert m["recall"] == pytest.approx(2 / 4)
    assert m["specificity"] == pytest.approx(4 / 5)
    assert m["accuracy"] == pytest.approx(6 / 9)
    assert (m["tp"], m["fp"], m["fn"], m["tn"]) == (2, 1, 2, 4)
    assert "hd95" not in m
    assert set(image_metrics(PRED, TARGET)) == set(METRIC_NAMES) | {"tp", "fp", "fn", "tn"}


def test_class_index_masks_count_any_class_as_foreground():
    assert confusion(PRED * 2, TARGET * 3) == confusion(PRED, TARGET)


def test_dice_iou_relation():
    rng = np.random.default_rng(0)
    for _ in range(20):
        pred, target = rng.random((2, 6, 6)) > rng.random(2)[:, None, None]
        m = image_metrics(pred, target, with_hd95=False)
        assert m["iou"] == pytest.approx(m["dice"] / (2 - m["dice"]))


# ---------------------------------------------------------------- empty conventions


def test_both_empty():
    z = np.zeros((4, 4))
    m = image_metrics(z, z)
    for name in ("dice", "iou", "precision", "recall", "specificity", "accuracy"):
        assert m[name] == 1.0, name
    assert m["hd95"] == 0.0


def test_exactly_one_empty():
    z = np.zeros((3, 4))
    some = np.zeros((3, 4))
    some[1, 1] = 1
    diagonal = 5.0  # sqrt(3^2 + 4^2)
    # prediction empty, target not: nothing predicted, so precision 0 (something was missed)
    m = image_metrics(z, some)
    assert (m["dice"], m["iou"], m["precision"], m["recall"]) == (0.0, 0.0, 0.0, 0.0)
    assert m["specificity"] == 1.0 and m["accuracy"] == pytest.approx(11 / 12)
    assert m["hd95"] == pytest.approx(diagonal)
    # target empty, prediction not
    m = image_metrics(some, z)
    assert (m["dice"], m["iou"], m["precision"], m["recall"]) == (0.0, 0.0, 0.0, 0.0)
    assert m["specificity"] == pytest.approx(11 / 12)
    assert m["hd95"] == pytest.approx(diagonal)
    assert hd95(some, z, spacing=(2.0, 1.0)) == pytest.approx(math.hypot(6, 4))


def test_specificity_without_negatives():
    full = np.ones((2, 2))
    m = image_metrics(full, full)
    assert m["specificity"] == 1.0 and m["dice"] == 1.0 and m["accuracy"] == 1.0


def test_empty_roi_is_defined():
    m = image_metrics(PRED, TARGET, roi=np.zeros((3, 3)))
    assert all(math.isfinite(v) for v in m.values())
    assert m["dice"] == 1.0 and m["hd95"] == 0.0 and m["tp"] + m["fp"] + m["fn"] + m["tn"] == 0


# ---------------------------------------------------------------- ROI


def test_roi_restricts_counts_by_hand():
    roi = np.array([[1, 0, 1], [1, 1, 1], [1, 1, 0]])  # drops (0,1) = the fp and (2,2) = an fn
    assert confusion(PRED, TARGET, roi) == {"tp": 2, "fp": 0, "fn": 1, "tn": 4}
    m = image_metrics(PRED, TARGET, roi)
    assert m["dice"] == pytest.approx(4 / 5) and m["precision"] == 1.0


def test_pixels_outside_roi_change_nothing():
    rng = np.random.default_rng(1)
    pred = rng.random((12, 12)) > 0.6
    target = rng.random((12, 12)) > 0.6
    roi = np.zeros((12, 12), bool)
    roi[2:10, 3:11] = True
    base = image_metrics(pred, target, roi)
    for _ in range(5):
        p2, t2 = pred.copy(), target.copy()
        p2[~roi] = rng.random(np.count_nonzero(~roi)) > 0.5
        t2[~roi] = rng.random(np.count_nonzero(~roi)) > 0.5
        assert image_metrics(p2, t2, roi) == base
    # and the ROI matters
    assert image_metrics(pred, target) != base


def test_hd95_cuts_masks_to_roi():
    target = np.zeros((8, 8))
    target[2, 2] = 1
    pred = target.copy()
    pred[7, 7] = 1  # a far stray pixel, outside the ROI
    roi = np.ones((8, 8))
    roi[6:, 6:] = 0
    assert hd95(pred, target, roi) == 0.0
    assert hd95(pred, target) > 0.0
    # a mask that lies wholly outside the ROI is empty inside it -> the diagonal of the 8x8 image
    stray = np.zeros((8, 8))
    stray[7, 7] = 1
    assert hd95(target, stray, roi) == pytest.approx(math.hypot(8, 8))


# ---------------------------------------------------------------- HD95


def test_hd95_single_points_match_skimage():
    rng = np.random.default_rng(2)
    for _ in range(10):
        pred = np.zeros((9, 7), bool)
        target = np.zeros((9, 7), bool)
        pred[tuple(rng.integers(0, (9, 7)))] = True
        target[tuple(rng.integers(0, (9, 7)))] = True
        # one distance per direction, so the 95th percentile is the maximum
        assert hd95(pred, target) == pytest.approx(hausdorff_distance(pred, target))


def test_hd95_line_by_hand():
    # target: the single pixel (2,2); pred: a 1-pixel-thick line (2,2) (2,3) (2,4), all surface
    target = np.zeros((5, 6), bool)
    target[2, 2] = True
    pred = np.zeros((5, 6), bool)
    pred[2, 2:5] = True
    # pred -> target distances [0, 1, 2]: 95th percentile by linear interpolation at rank
    # 0.95 * 2 = 1.9 -> 1 + 0.9 * (2 - 1) = 1.9; target -> pred: [0]. max(1.9, 0) = 1.9.
    # (the percentile of the pooled set [0, 0, 1, 2] would be 1.85: MONAI's is max of directed)
    assert hd95(pred, target) == pytest.approx(1.9)
    assert hd95(target, pred) == pytest.approx(1.9)
    assert hausdorff_distance(pred, target) == pytest.approx(2.0)  # the plain maximum
    # spacing (row, column) = (1, 2): column distances double -> [0, 2, 4] -> 3.8
    assert hd95(pred, target, spacing=(1.0, 2.0)) == pytest.approx(3.8)
    assert hd95(pred, target, spacing=(2.0, 1.0)) == pytest.approx(1.9)


def test_hd95_uses_surfaces_not_interiors():
    # target: filled 3x3 square, whose surface is the 8-pixel ring (the centre erodes away);
    # pred: only the centre pixel.
    target = np.zeros((7, 7), bool)
    target[2:5, 2:5] = True
    pred = np.zeros((7, 7), bool)
    pred[3, 3] = True
    # pred -> target surface: centre to the ring = 1 (to the interior it would be 0)
    # target -> pred: 4 edge-middles at 1, 4 corners at sqrt(2); percentile rank 0.95 * 7 = 6.65
    # lies between two sqrt(2) values -> sqrt(2). max(1, sqrt 2) = sqrt 2.
    assert hd95(pred, target) == pytest.approx(math.sqrt(2))
    # a 5x5 square around it: its 16-pixel ring -> the 3x3 ring is 1 for the 12 non-corner
    # pixels and sqrt(2) for the 4 corners; rank 0.95 * 15 = 14.25 falls between two sqrt(2).
    # The 3x3 ring -> the 5x5 ring is 1 for all 8 pixels. max(sqrt 2, 1) = sqrt 2.
    outer = np.zeros((7, 7), bool)
    outer[1:6, 1:6] = True
    assert hd95(outer, target) == pytest.approx(math.sqrt(2))
    assert hd95(target, outer) == pytest.approx(math.sqrt(2))


def test_hd95_identical_masks_and_border():
    mask = np.zeros((6, 6), bool)
    mask[:3, :4] = True  # touches the image border: border pixels are surface
    assert hd95(mask, mask) == 0.0
    assert hd95(np.ones((4, 4)), np.ones((4, 4))) == 0.0


# ---------------------------------------------------------------- aggregation


def test_mean_and_global_differ_by_hand():
    # image A: 4 foreground pixels predicted exactly -> Dice 1, IoU 1
    a_t = np.zeros((4, 4))
    a_t[:2, :2] = 1
    # image B: 1 target pixel, 1 predicted pixel elsewhere -> Dice 0, IoU 0
    b_t = np.zeros((4, 4))
    b_t[0, 0] = 1
    b_p = np.zeros((4, 4))
    b_p[3, 3] = 1
    rows = [image_metrics(a_t, a_t), image_metrics(b_p, b_t)]
    summary = aggregate(rows)
    assert summary["mean"]["dice"] == pytest.approx(0.5)
    assert summary["mean"]["iou"] == pytest.approx(0.5)
    # global: tp = 4, fp = 1, fn = 1, tn = 12 + 14 = 26
    assert summary["global"]["dice"] == pytest.approx(8 / 10)
    assert summary["global"]["iou"] == pytest.approx(4 / 6)
    assert summary["global"]["precision"] == pytest.approx(4 / 5)
    assert summary["global"]["recall"] == pytest.approx(4 / 5)
    assert summary["global"]["specificity"] == pytest.approx(26 / 27)
    assert summary["global"]["accuracy"] == pytest.approx(30 / 32)
    assert "hd95" not in summary["global"]
    # hd95: 0 for A, distance (0,0)-(3,3) = 3 sqrt 2 for B
    assert summary["mean"]["hd95"] == pytest.approx(3 * math.sqrt(2) / 2)
    assert summary["std"]["dice"] == pytest.approx(0.5)  # population std of [1, 0]
    assert summary["min"]["dice"] == 0.0 and summary["max"]["dice"] == 1.0
    assert summary["max"]["hd95"] == pytest.approx(3 * math.sqrt(2))
    assert set(summary) == {"mean", "std", "min", "max", "global"}


def test_aggregate_without_hd95_and_errors():
    rows = [image_metrics(PRED, TARGET, with_hd95=False)]
    summary = aggregate(rows)
    assert "hd95" not in summary["mean"]
    assert summary["global"]["dice"] == pytest.approx(summary["mean"]["dice"])
    with pytest.raises(SegtrainError):
        aggregate([])
    with pytest.raises(SegtrainError, match="tp"):
        aggregate([{"dice": 1.0}])


# ---------------------------------------------------------------- batch_confusion


def numpy_counts(pred: np.ndarray, target: np.ndarray, roi: np.ndarray | None) -> list[list[int]]:
    out = []
    for i in range(len(pred)):
        c = confusion(pred[i], target[i], None if roi is None else roi[i])
        out.append([c["tp"], c["fp"], c["fn"], c["tn"]])
    return out


def test_batch_confusion_binary_matches_numpy():
    gen = torch.Generator().manual_seed(3)
    logits = torch.randn(3, 1, 5, 6, generator=gen)
    target = torch.randint(0, 2, (3, 5, 6), generator=gen)
    roi = torch.rand(3, 5, 6, generator=gen) > 0.3
    for r in (None, roi):
        got = batch_confusion(logits, target, r)
        assert got.shape == (3, 4) and got.dtype == torch.int64
        pred = (torch.sigmoid(logits[:, 0]) > 0.5).numpy()
        expected = numpy_counts(pred, target.numpy(), None if r is None else r.numpy())
        assert got.tolist() == expected
    # threshold 0.8 and a (N,1,H,W) target/roi
    got = batch_confusion(logits, target.unsqueeze(1), roi.unsqueeze(1), threshold=0.8)
    pred = (torch.sigmoid(logits[:, 0]) > 0.8).numpy()
    assert got.tolist() == numpy_counts(pred, target.numpy(), roi.numpy())


def test_batch_confusion_multiclass_matches_numpy():
    gen = torch.Generator().manual_seed(4)
    logits = torch.randn(2, 3, 4, 4, generator=gen)
    target = torch.randint(0, 3, (2, 4, 4), generator=gen)
    roi = torch.rand(2, 4, 4, generator=gen) > 0.3
    got = batch_confusion(logits, target, roi)
    pred = (logits.argmax(1) > 0).numpy()
    assert got.tolist() == numpy_counts(pred, target.numpy() > 0, roi.numpy())


def test_batch_confusion_by_hand():
    # logits +-5 reproduce PRED; sums must equal the 3x3 hand counts
    logits = torch.tensor(PRED * 10.0 - 5.0).reshape(1, 1, 3, 3)
    got = batch_confusion(logits, torch.tensor(TARGET).unsqueeze(0))
    assert got.tolist() == [[2, 1, 2, 4]]


def test_hd95_crop_changes_nothing():
    # hd95 crops to the union's bounding box for speed; the same definition on the full image,
    # spelled out with scipy, must give the same numbers (including masks touching the border)
    from scipy import ndimage

    def full_image_hd95(p: np.ndarray, t: np.ndarray) -> float:
        ep = p & ~ndimage.binary_erosion(p, border_value=0)
        et = t & ~ndimage.binary_erosion(t, border_value=0)
        d_pt = ndimage.distance_transform_edt(~et)[ep]
        d_tp = ndimage.distance_transform_edt(~ep)[et]
        return float(max(np.percentile(d_pt, 95), np.percentile(d_tp, 95)))

    rng = np.random.default_rng(5)
    for _ in range(10):
        p = ndimage.binary_dilation(rng.random((20, 24)) > 0.97, iterations=2)
        t = ndimage.binary_dilation(rng.random((20, 24)) > 0.97, iterations=2)
        if p.any() and t.any():
            assert hd95(p, t) == pytest.approx(full_image_hd95(p, t))
