"""Losses against values worked out by hand on 2x2 tensors, plus edge cases and the registry."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from segtrain.errors import SegtrainError
from segtrain.losses import LOSSES, DeepSupervisionLoss, build_loss

TOL = 1e-5
SMOOTH = 1e-5  # the default smooth_nr / smooth_dr

# Binary case used throughout: probabilities chosen so that every term is a short logarithm.
#   p = [[0.8, 0.2],      t = [[1, 0],
#        [0.5, 0.9]]           [1, 0]]
P_BIN = [[0.8, 0.2], [0.5, 0.9]]
T_BIN = [[1, 0], [1, 0]]


def logit(p: float) -> float:
    return math.log(p / (1.0 - p))


def binary_case() -> tuple[torch.Tensor, torch.Tensor]:
    logits = torch.tensor([[[[logit(p) for p in row] for row in P_BIN]]], dtype=torch.float64)
    target = torch.tensor([T_BIN], dtype=torch.float64)  # (1,2,2)
    return logits, target


# Multi-class case: 3 classes on 2x2 pixels, logits = log(p) so that softmax gives p back exactly.
#   pixel (0,0): p = [0.7, 0.2, 0.1], class 0
#   pixel (0,1): p = [0.1, 0.6, 0.3], class 1
#   pixel (1,0): p = [0.2, 0.2, 0.6], class 2
#   pixel (1,1): p = [0.5, 0.25, 0.25], class 1
P_MC = [[[0.7, 0.2, 0.1], [0.1, 0.6, 0.3]], [[0.2, 0.2, 0.6], [0.5, 0.25, 0.25]]]
T_MC = [[0, 1], [2, 1]]


def multiclass_case() -> tuple[torch.Tensor, torch.Tensor]:
    probs = torch.tensor(P_MC, dtype=torch.float64).permute(2, 0, 1).unsqueeze(0)  # (1,3,2,2)
    return probs.log(), torch.tensor([T_MC], dtype=torch.long)


# Soft counts of the multi-class case, per class (tp = p of the true class where it is true):
#   class 0: tp = 0.7,         sum p = 0.7+0.1+0.2+0.5 = 1.5,   sum t = 1 -> fp = 0.8,  fn = 0.3
#   class 1: tp = 0.6 + 0.25,  sum p = 0.2+0.6+0.2+0.25 = 1.25, sum t = 2 -> fp = 0.4,  fn = 1.15
#   class 2: tp = 0.6,         sum p = 0.1+0.3+0.6+0.25 = 1.25, sum t = 1 -> fp = 0.65, fn = 0.4
MC_TP = np.array([0.7, 0.85, 0.6])
MC_FP = np.array([0.8, 0.4, 0.65])
MC_FN = np.array([0.3, 1.15, 0.4])


def value(loss: nn.Module, logits: torch.Tensor, target: torch.Tensor, valid=None) -> float:
    return float(loss(logits, target, valid))


# ---------------------------------------------------------------- hand-computed values, binary


def test_bce_binary_by_hand():
    logits, target = binary_case()
    # -log p where t = 1, -log(1-p) where t = 0
    expected = (-math.log(0.8) - math.log(1 - 0.2) - math.log(0.5) - math.log(1 - 0.9)) / 4
    assert value(build_loss("bce"), logits, target) == pytest.approx(expected, abs=TOL)
    assert expected == pytest.approx(0.860505, abs=1e-6)


def test_dice_binary_by_hand():
    logits, target = binary_case()
    # tp = 0.8 + 0.5 = 1.3, fp = 0.2 + 0.9 = 1.1, fn = 0.2 + 0.5 = 0.7
    dice = (2 * 1.3 + SMOOTH) / (2 * 1.3 + 1.1 + 0.7 + SMOOTH)  # 2.6 / 4.4
    assert value(build_loss("dice"), logits, target) == pytest.approx(1 - dice, abs=TOL)
    assert 1 - dice == pytest.approx(1 - 2.6 / 4.4, abs=1e-5)


def test_bce_dice_weights_by_hand():
    logits, target = binary_case()
    bce = (-2 * math.log(0.8) - math.log(0.5) - math.log(0.1)) / 4
    dice_loss = 1 - 2.6 / 4.4
    loss = build_loss("bce+dice", bce_weight=0.5, dice_weight=2.0)
    assert value(loss, logits, target) == pytest.approx(0.5 * bce + 2.0 * dice_loss, abs=TOL)
    assert value(build_loss("bce+dice"), logits, target) == pytest.approx(bce + dice_loss, abs=TOL)


def test_focal_binary_by_hand():
    logits, target = binary_case()
    # per pixel: alpha_t * (1 - p_t)^2 * (-log p_t), alpha_t = 0.25 on foreground, 0.75 on background
    terms = [
        0.25 * (1 - 0.8) ** 2 * -math.log(0.8),  # t=1, p=0.8 -> p_t = 0.8
        0.75 * (1 - 0.8) ** 2 * -math.log(0.8),  # t=0, p=0.2 -> p_t = 0.8
        0.25 * (1 - 0.5) ** 2 * -math.log(0.5),  # t=1, p=0.5 -> p_t = 0.5
        0.75 * (1 - 0.1) ** 2 * -math.log(0.1),  # t=0, p=0.9 -> p_t = 0.1
    ]
    assert value(build_loss("focal"), logits, target) == pytest.approx(sum(terms) / 4, abs=TOL)
    no_alpha = [t / a for t, a in zip(terms, [0.25, 0.75, 0.25, 0.75])]
    assert value(build_loss("focal", alpha=None), logits, target) == pytest.approx(sum(no_alpha) / 4, abs=TOL)
    # gamma = 0 and no alpha is plain BCE
    bce = value(build_loss("bce"), logits, target)
    assert value(build_loss("focal", alpha=None, gamma=0.0), logits, target) == pytest.approx(bce, abs=TOL)


def test_tversky_binary_by_hand():
    logits, target = binary_case()
    # TI = tp / (tp + 0.3 fp + 0.7 fn) = 1.3 / (1.3 + 0.33 + 0.49) = 1.3 / 2.12
    ti = (1.3 + SMOOTH) / (1.3 + 0.3 * 1.1 + 0.7 * 0.7 + SMOOTH)
    assert value(build_loss("tversky"), logits, target) == pytest.approx(1 - ti, abs=TOL)
    # swapping the weights: 1.3 / (1.3 + 0.77 + 0.21)
    ti_swapped = 1.3 / (1.3 + 0.7 * 1.1 + 0.3 * 0.7)
    loss = build_loss("tversky", alpha=0.7, beta=0.3)
    assert value(loss, logits, target) == pytest.approx(1 - ti_swapped, abs=TOL)


def test_focal_tversky_binary_by_hand():
    logits, target = binary_case()
    ti = 1.3 / 2.12
    assert value(build_loss("focal-tversky"), logits, target) == pytest.approx((1 - ti) ** 0.75, abs=TOL)
    assert value(build_loss("focal-tversky", gamma=1.0), logits, target) == pytest.approx(1 - ti, abs=TOL)


def test_tversky_half_half_is_dice():
    logits, target = binary_case()
    tversky = value(build_loss("tversky", alpha=0.5, beta=0.5), logits, target)
    assert tversky == pytest.approx(value(build_loss("dice"), logits, target), abs=1e-4)


# ---------------------------------------------------------------- hand-computed values, multi-class


def test_ce_multiclass_by_hand():
    logits, target = multiclass_case()
    # -log of the true class's probability at each pixel
    expected = (-math.log(0.7) - math.log(0.6) - math.log(0.6) - math.log(0.25)) / 4
    assert value(build_loss("bce"), logits, target) == pytest.approx(expected, abs=TOL)


def test_dice_multiclass_by_hand():
    logits, target = multiclass_case()
    dice = 2 * MC_TP / (2 * MC_TP + MC_FP + MC_FN)  # [1.4/2.5, 1.7/3.25, 1.2/2.25]
    assert dice == pytest.approx([0.56, 1.7 / 3.25, 1.2 / 2.25])
    assert value(build_loss("dice"), logits, target) == pytest.approx(1 - dice.mean(), abs=TOL)
    no_bg = build_loss("dice", include_background=False)
    assert value(no_bg, logits, target) == pytest.approx(1 - dice[1:].mean(), abs=TOL)


def test_focal_multiclass_by_hand():
    logits, target = multiclass_case()
    # p_t = 0.7 (class 0, weight 1-alpha), 0.6, 0.6, 0.25 (foreground classes, weight alpha)
    terms = [
        0.75 * (1 - 0.7) ** 2 * -math.log(0.7),
        0.25 * (1 - 0.6) ** 2 * -math.log(0.6),
        0.25 * (1 - 0.6) ** 2 * -math.log(0.6),
        0.25 * (1 - 0.25) ** 2 * -math.log(0.25),
    ]
    assert value(build_loss("focal"), logits, target) == pytest.approx(sum(terms) / 4, abs=TOL)


def test_tversky_and_focal_tversky_multiclass_by_hand():
    logits, target = multiclass_case()
    ti = MC_TP / (MC_TP + 0.3 * MC_FP + 0.7 * MC_FN)
    # class 1: 0.85 / (0.85 + 0.12 + 0.805)
    assert ti[1] == pytest.approx(0.85 / 1.775)
    assert value(build_loss("tversky"), logits, target) == pytest.approx((1 - ti).mean(), abs=TOL)
    assert value(build_loss("focal-tversky"), logits, target) == pytest.approx(
        ((1 - ti) ** 0.75).mean(), abs=TOL
    )
    no_bg = build_loss("tversky", include_background=False)
    assert value(no_bg, logits, target) == pytest.approx((1 - ti[1:]).mean(), abs=TOL)


# ---------------------------------------------------------------- edge cases

REGION = ["dice", "tversky", "focal-tversky"]


def const_logits(value_: float, n: int = 1, c: int = 1, size: int = 2) -> torch.Tensor:
    return torch.full((n, c, size, size), value_, dtype=torch.float32)


@pytest.mark.parametrize("name", list(LOSSES))
def test_perfect_prediction_is_near_zero(name):
    # empty target predicted empty, full target predicted full: both ~0, never NaN
    for logit_value, target_value in [(-50.0, 0.0), (50.0, 1.0)]:
        loss = value(build_loss(name), const_logits(logit_value), torch.full((1, 2, 2), target_value))
        assert loss == pytest.approx(0.0, abs=1e-4), (logit_value, target_value)


@pytest.mark.parametrize("name", list(LOSSES))
def test_perfect_multiclass_prediction_is_near_zero(name):
    target = torch.tensor([[[0, 1, 2], [2, 1, 0], [1, 1, 2]]])
    logits = torch.nn.functional.one_hot(target, 3).permute(0, 3, 1, 2).float() * 100
    assert value(build_loss(name), logits, target) == pytest.approx(0.0, abs=1e-4)


@pytest.mark.parametrize("name", REGION)
def test_fully_wrong_is_near_one(name):
    for logit_value, target_value in [(-50.0, 1.0), (50.0, 0.0)]:
        loss = value(build_loss(name), const_logits(logit_value), torch.full((1, 2, 2), target_value))
        assert loss == pytest.approx(1.0, abs=1e-4), (logit_value, target_value)


def test_all_foreground_target_by_hand():
    # p = 0.8 everywhere on a full target: tp = 3.2, fp = 0, fn = 0.8
    logits, target = const_logits(logit(0.8)).double(), torch.ones(1, 2, 2)
    assert value(build_loss("dice"), logits, target) == pytest.approx(1 - 6.4 / 7.2, abs=TOL)
    assert value(build_loss("tversky"), logits, target) == pytest.approx(1 - 3.2 / (3.2 + 0.7 * 0.8), abs=TOL)
    assert value(build_loss("bce"), logits, target) == pytest.approx(-math.log(0.8), abs=TOL)


def test_empty_target_is_harsh_and_batch_flag_pools():
    # image 0: empty target, p = 0.2 everywhere -> Dice ~0 (only smoothing), loss ~1
    # image 1: full target,  p = 0.8 everywhere -> Dice = 6.4 / 7.2
    logits = torch.cat([const_logits(logit(0.2)), const_logits(logit(0.8))]).double()
    target = torch.stack([torch.zeros(2, 2), torch.ones(2, 2)])
    per_image = (1.0 + (1 - 6.4 / 7.2)) / 2
    assert value(build_loss("dice"), logits, target) == pytest.approx(per_image, abs=1e-4)
    # pooled: tp = 3.2, sum p = 0.8 + 3.2, sum t = 4 -> 6.4 / 8
    assert value(build_loss("dice", batch=True), logits, target) == pytest.approx(1 - 6.4 / 8, abs=TOL)


def test_target_forms_agree():
    logits, target = binary_case()
    forms = [target, target.long(), target.bool(), target.unsqueeze(1), target.float()]
    for name in LOSSES:
        values = [value(build_loss(name), logits, t) for t in forms]
        assert values == pytest.approx([values[0]] * len(values), abs=1e-6), name


@pytest.mark.parametrize("name", list(LOSSES))
def test_two_class_softmax_matches_sigmoid(name):
    # softmax([0, z]) = [1 - sigmoid(z), sigmoid(z)], so the 2-class losses without background
    # equal the binary losses on z
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(2, 1, 3, 3, generator=gen, dtype=torch.float64) * 2
    target = (torch.rand(2, 3, 3, generator=gen) > 0.5).long()
    valid = (torch.rand(2, 3, 3, generator=gen) > 0.3).float()
    two_class = torch.cat([torch.zeros_like(z), z], dim=1)
    kwargs = {} if name in ("bce", "focal") else {"include_background": False}
    for v in (None, valid):
        binary = value(build_loss(name), z, target.double(), v)
        multi = value(build_loss(name, **kwargs), two_class, target, v)
        assert multi == pytest.approx(binary, abs=1e-6)


# ---------------------------------------------------------------- valid mask


def test_valid_mask_by_hand():
    logits, target = binary_case()
    valid = torch.tensor([[[1, 1], [1, 0]]])  # drops the pixel p = 0.9, t = 0
    bce = (-2 * math.log(0.8) - math.log(0.5)) / 3
    assert value(build_loss("bce"), logits, target, valid) == pytest.approx(bce, abs=TOL)
    # tp = 1.3, fp = 0.2, fn = 0.7
    assert value(build_loss("dice"), logits, target, valid) == pytest.approx(1 - 2.6 / 3.5, abs=TOL)


@pytest.mark.parametrize("name", list(LOSSES))
@pytest.mark.parametrize("classes", [1, 3])
def test_valid_mask_ignores_outside(name, classes):
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(2, classes, 3, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    target = torch.randint(0, max(classes, 2), (2, 3, 3), generator=gen)
    valid = torch.zeros(2, 3, 3)
    valid[:, :2, :2] = 1
    loss = build_loss(name)
    out = loss(logits, target, valid)
    out.backward()
    base = out.item()
    # no gradient flows to pixels outside the ROI
    assert torch.all(logits.grad[:, :, 2, :] == 0) and torch.all(logits.grad[:, :, :, 2] == 0)
    # scrambling logits and target outside the ROI changes nothing
    logits2 = logits.detach().clone()
    target2 = target.clone()
    outside = valid == 0
    logits2[outside.unsqueeze(1).expand_as(logits2)] = 25.0
    target2[outside] = (target2[outside] + 1) % max(classes, 2)
    assert float(loss(logits2, target2, valid)) == pytest.approx(base, abs=1e-9)
    # and it differs from the loss without a mask (the mask is actually used)
    assert float(loss(logits2, target2)) != pytest.approx(base, abs=1e-6)


@pytest.mark.parametrize("name", list(LOSSES))
def test_nothing_valid_gives_zero_not_nan(name):
    logits, target = binary_case()
    loss = value(build_loss(name), logits, target, torch.zeros(1, 2, 2))
    assert math.isfinite(loss)


# ---------------------------------------------------------------- gradients


@pytest.mark.parametrize("name", list(LOSSES))
@pytest.mark.parametrize("classes", [1, 3])
@pytest.mark.parametrize("scale", [1.0, 60.0])  # 60: saturated, perfect and fully wrong pixels
def test_gradients_finite(name, classes, scale):
    gen = torch.Generator().manual_seed(2)
    target = torch.randint(0, max(classes, 2), (2, 4, 4), generator=gen)
    if classes == 1:
        base = (target.float() * 2 - 1).unsqueeze(1)  # +1 on foreground: a perfect prediction
    else:
        base = torch.nn.functional.one_hot(target, classes).permute(0, 3, 1, 2).float()
    logits = (base * scale + 0.1 * torch.randn(base.shape, generator=gen)).requires_grad_(True)
    for t in (target, torch.zeros_like(target)):  # also an empty target
        logits.grad = None
        loss = build_loss(name)(logits, t)
        loss.backward()
        assert torch.isfinite(loss)
        assert torch.isfinite(logits.grad).all()


def test_focal_tversky_perfect_prediction_gradient_finite():
    logits = const_logits(-100.0).requires_grad_(True)  # sigmoid underflows to exactly 0
    loss = build_loss("focal-tversky")(logits, torch.zeros(1, 2, 2))
    loss.backward()
    assert torch.isfinite(logits.grad).all()


# ---------------------------------------------------------------- deep supervision


class Recorder(nn.Module):
    """Returns 1, 2, 3, ... on successive calls and remembers the targets it saw."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[torch.Tensor, torch.Tensor | None]] = []

    def forward(self, logits, target, valid=None):
        self.calls.append((target, valid))
        return logits.sum() * 0 + len(self.calls)


def test_deep_supervision_weights_and_resizing():
    target = torch.arange(16).reshape(1, 4, 4) % 2
    valid = torch.ones(1, 4, 4)
    outputs = [torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 1, 1)]
    base = Recorder()
    loss = DeepSupervisionLoss(base)(outputs, target, valid)
    # weights 1, 1/2, 1/4 normalised: 4/7, 2/7, 1/7; the recorder returns 1, 2, 3
    assert float(loss) == pytest.approx(4 / 7 * 1 + 2 / 7 * 2 + 1 / 7 * 3)
    assert DeepSupervisionLoss.weights(3) == pytest.approx([4 / 7, 2 / 7, 1 / 7])
    # same size: the target itself; smaller: nearest picks every other pixel
    assert base.calls[0][0] is target
    assert torch.equal(base.calls[1][0], target[:, ::2, ::2])
    assert torch.equal(base.calls[2][0], target[:, :1, :1])
    assert base.calls[1][0].dtype == target.dtype
    assert base.calls[1][1].shape == (1, 2, 2)


def test_deep_supervision_single_tensor_and_real_loss():
    logits, target = binary_case()
    bce = build_loss("bce")
    ds = DeepSupervisionLoss(bce)
    assert float(ds(logits, target)) == pytest.approx(float(bce(logits, target)))
    # two identical full-size outputs: weights 2/3 + 1/3 give the plain loss back
    assert float(ds([logits, logits], target)) == pytest.approx(float(bce(logits, target)))


# ---------------------------------------------------------------- registry


def test_registry_names():
    assert set(LOSSES) == {"bce", "dice", "bce+dice", "focal", "tversky", "focal-tversky"}
    for name in LOSSES:
        assert isinstance(build_loss(name), nn.Module)


def test_unknown_loss_lists_valid_names():
    with pytest.raises(SegtrainError) as info:
        build_loss("hinge")
    message = str(info.value)
    assert "hinge" in message
    for name in LOSSES:
        assert name in message


def test_bad_kwargs_are_segtrain_errors():
    with pytest.raises(SegtrainError, match="bce"):
        build_loss("bce", gamma=2.0)
    with pytest.raises(SegtrainError, match="alpha"):
        build_loss("focal", alpha=1.5)


def test_shape_mismatch_is_clear():
    logits, _ = binary_case()
    with pytest.raises(ValueError, match="target"):
        build_loss("dice")(logits, torch.zeros(1, 3, 3))
