"""Segmentation losses for binary and multi-class logits, in the style of MONAI's losses.

Every loss is an ``nn.Module`` called as ``loss(logits, target, valid=None)`` and returns a scalar.

Inputs
------
- binary: ``logits (N,1,H,W)``; ``target (N,H,W)`` or ``(N,1,H,W)`` holding 0/1 (float, int or
  bool). Probabilities are ``sigmoid(logits)``.
- multi-class: ``logits (N,C,H,W)`` with ``C > 1``; ``target (N,H,W)`` (or ``(N,1,H,W)``) holding
  integer class indices in ``[0, C)``. Probabilities are ``softmax(logits, dim=1)`` and the target
  is one-hot encoded.
- ``valid``: optional ``(N,H,W)`` or ``(N,1,H,W)`` mask, nonzero inside the region of interest
  (DRIVE's field of view). Pixels outside it contribute nothing to any loss.

Reductions
----------
- Pixel-wise losses (``bce``, ``focal``) average over all valid pixels of the batch, as torch's
  ``reduction="mean"`` does; a batch with no valid pixel gives 0.
- Region losses (``dice``, ``tversky``, ``focal-tversky``) sum soft TP/FP/FN per image and per
  class, score each (image, class) pair, then average over classes and images. ``batch=True``
  pools the sums over the whole batch before scoring (MONAI's ``batch`` flag), which keeps images
  with an empty target from dominating the loss.
- Smoothing ``smooth_nr``/``smooth_dr`` (default 1e-5, as in MONAI) are added to numerator and
  denominator, so an empty target with an empty prediction scores ~0 loss and never NaN. With such
  a small smoothing an empty target pushes the prediction all the way to empty: a probability
  mass of even 1e-4 spread over the image gives a loss near 1. Raise both to 1.0 if that is too
  harsh for a dataset with many empty masks.
- Multi-class region losses include the background channel unless ``include_background=False``
  (MONAI's default is to include it). For binary logits the single channel is the foreground and
  the flag is ignored.

With ``C == 2`` and logits ``[0, z]``, softmax gives ``[1 - sigmoid(z), sigmoid(z)]``; the
multi-class losses (background excluded for the region losses) then equal the binary losses on
``z``. The tests rely on that.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from segtrain.errors import SegtrainError

__all__ = [
    "LOSSES",
    "build_loss",
    "BCELoss",
    "DiceLoss",
    "BCEDiceLoss",
    "FocalLoss",
    "TverskyLoss",
    "FocalTverskyLoss",
    "DeepSupervisionLoss",
]


def _as_nchw(x: Tensor, name: str, n: int, hw: tuple[int, int]) -> Tensor:
    """Bring a target/valid tensor of shape (N,H,W) or (N,1,H,W) to (N,1,H,W)."""
    if x.dim() == 3:
        x = x.unsqueeze(1)
    if x.dim() != 4 or x.shape[1] != 1 or x.shape[0] != n or tuple(x.shape[2:]) != hw:
        raise ValueError(
            f"{name} must have shape ({n},{hw[0]},{hw[1]}) or ({n},1,{hw[0]},{hw[1]}), "
            f"got {tuple(x.shape)}"
        )
    return x


def _check_inputs(
    logits: Tensor, target: Tensor, valid: Tensor | None
) -> tuple[Tensor, Tensor | None]:
    """Validate shapes; return target and valid as (N,1,H,W) (valid as float in logits' dtype)."""
    if logits.dim() != 4:
        raise ValueError(f"logits must have shape (N,C,H,W), got {tuple(logits.shape)}")
    n, _, h, w = logits.shape
    target = _as_nchw(target, "target", n, (h, w))
    if valid is not None:
        valid = _as_nchw(valid, "valid", n, (h, w)).to(dtype=logits.dtype)
    return target, valid


def _masked_mean(values: Tensor, valid: Tensor | None) -> Tensor:
    """Mean of per-pixel values (N,1,H,W) or (N,H,W) over valid pixels; 0 when none is valid."""
    if valid is None:
        return values.mean()
    valid = valid.reshape(values.shape)
    # clamp keeps an all-invalid batch at 0 (not NaN) while staying connected to the graph
    return (values * valid).sum() / valid.sum().clamp_min(1.0)


def _probs_and_onehot(logits: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """Probabilities and a same-shaped float target: sigmoid for C == 1, softmax + one-hot for C > 1."""
    n_classes = logits.shape[1]
    if n_classes == 1:
        return torch.sigmoid(logits), target.to(dtype=logits.dtype)
    onehot = F.one_hot(target[:, 0].long(), n_classes).permute(0, 3, 1, 2)
    return torch.softmax(logits, dim=1), onehot.to(dtype=logits.dtype)


def _soft_counts(
    logits: Tensor,
    target: Tensor,
    valid: Tensor | None,
    batch: bool,
    include_background: bool,
) -> tuple[Tensor, Tensor, Tensor]:
    """Soft TP, FP, FN summed per (image, class), shape (N, C'), or per class (1, C') when ``batch``."""
    target, valid = _check_inputs(logits, target, valid)
    probs, onehot = _probs_and_onehot(logits, target)
    if valid is not None:
        probs = probs * valid
        onehot = onehot * valid
    if logits.shape[1] > 1 and not include_background:
        probs, onehot = probs[:, 1:], onehot[:, 1:]
    dims = (0, 2, 3) if batch else (2, 3)
    tp = (probs * onehot).sum(dim=dims)
    fp = (probs * (1.0 - onehot)).sum(dim=dims)
    fn = ((1.0 - probs) * onehot).sum(dim=dims)
    if batch:
        tp, fp, fn = tp.unsqueeze(0), fp.unsqueeze(0), fn.unsqueeze(0)
    return tp, fp, fn


class BCELoss(nn.Module):
    """Binary cross-entropy on logits (C == 1), categorical cross-entropy for C > 1.

    Wraps ``F.binary_cross_entropy_with_logits`` / ``F.cross_entropy`` with ``reduction="none"``
    and averages over the valid pixels of the batch.
    """

    def forward(self, logits: Tensor, target: Tensor, valid: Tensor | None = None) -> Tensor:
        target, valid = _check_inputs(logits, target, valid)
        if logits.shape[1] == 1:
            per_pixel = F.binary_cross_entropy_with_logits(
                logits, target.to(dtype=logits.dtype), reduction="none"
            )
        else:
            per_pixel = F.cross_entropy(logits, target[:, 0].long(), reduction="none")
        return _masked_mean(per_pixel, valid)


class DiceLoss(nn.Module):
    """Soft Dice loss: ``1 - (2*TP + smooth_nr) / (2*TP + FP + FN + smooth_dr)``.

    ``2*TP + FP + FN`` is ``sum(p) + sum(t)``, MONAI's denominator. Scored per (image, class) and
    averaged (or pooled over the batch with ``batch=True``). Perfect prediction -> 0, fully wrong
    -> 1, empty target and empty prediction -> ~0.
    """

    def __init__(
        self,
        smooth_nr: float = 1e-5,
        smooth_dr: float = 1e-5,
        batch: bool = False,
        include_background: bool = True,
    ) -> None:
        super().__init__()
        self.smooth_nr = smooth_nr
        self.smooth_dr = smooth_dr
        self.batch = batch
        self.include_background = include_background

    def forward(self, logits: Tensor, target: Tensor, valid: Tensor | None = None) -> Tensor:
        tp, fp, fn = _soft_counts(logits, target, valid, self.batch, self.include_background)
        dice = (2.0 * tp + self.smooth_nr) / (2.0 * tp + fp + fn + self.smooth_dr)
        return (1.0 - dice).mean()


class BCEDiceLoss(nn.Module):
    """``bce_weight * BCELoss + dice_weight * DiceLoss`` (MONAI's DiceCELoss, weights 1 and 1).

    Extra keyword arguments (``smooth_nr``, ``smooth_dr``, ``batch``, ``include_background``) go to
    the Dice part.
    """

    def __init__(self, bce_weight: float = 1.0, dice_weight: float = 1.0, **dice_kwargs: object) -> None:
        super().__init__()
        if bce_weight < 0 or dice_weight < 0:
            raise ValueError(f"loss weights must be >= 0, got bce {bce_weight}, dice {dice_weight}")
        self.bce_weight = bce_weight
        self.dice_weight = dice_weight
        self.bce = BCELoss()
        self.dice = DiceLoss(**dice_kwargs)  # type: ignore[arg-type]

    def forward(self, logits: Tensor, target: Tensor, valid: Tensor | None = None) -> Tensor:
        return self.bce_weight * self.bce(logits, target, valid) + self.dice_weight * self.dice(
            logits, target, valid
        )


class FocalLoss(nn.Module):
    """Focal loss (Lin et al. 2017): ``alpha_t * (1 - p_t)**gamma * CE``, mean over valid pixels.

    Binary: as ``torchvision.ops.sigmoid_focal_loss`` -- ``alpha`` weights foreground pixels and
    ``1 - alpha`` background pixels (default 0.25, ``None`` disables the weighting).
    Multi-class: softmax cross-entropy with ``p_t`` the probability of the true class; ``alpha``
    weights every foreground class and ``1 - alpha`` the background class 0 (MONAI's softmax
    focal loss), so a 2-class softmax matches the binary case.
    """

    def __init__(self, alpha: float | None = 0.25, gamma: float = 2.0) -> None:
        super().__init__()
        if alpha is not None and not 0.0 <= alpha <= 1.0:
            raise ValueError(f"focal alpha must be in [0, 1] or None, got {alpha}")
        if gamma < 0:
            raise ValueError(f"focal gamma must be >= 0, got {gamma}")
        self.alpha = alpha
        self.gamma = gamma

    def forward(self, logits: Tensor, target: Tensor, valid: Tensor | None = None) -> Tensor:
        target, valid = _check_inputs(logits, target, valid)
        if logits.shape[1] == 1:
            t = target.to(dtype=logits.dtype)
            ce = F.binary_cross_entropy_with_logits(logits, t, reduction="none")
            p = torch.sigmoid(logits)
            p_t = p * t + (1.0 - p) * (1.0 - t)
            is_fg = t
        else:
            classes = target[:, 0].long()
            ce = F.cross_entropy(logits, classes, reduction="none")
            # exp(-CE) is the softmax probability of the true class, without a second softmax
            p_t = torch.exp(-ce)
            is_fg = (classes > 0).to(dtype=logits.dtype)
        loss = ce * (1.0 - p_t) ** self.gamma
        if self.alpha is not None:
            loss = loss * (self.alpha * is_fg + (1.0 - self.alpha) * (1.0 - is_fg))
        return _masked_mean(loss, valid)


class TverskyLoss(nn.Module):
    """Tversky loss (Salehi et al. 2017): ``1 - TI``, ``TI = (TP + nr) / (TP + alpha*FP + beta*FN + dr)``.

    ``alpha`` weights false positives (default 0.3), ``beta`` false negatives (default 0.7), so
    missed foreground costs more than spurious foreground. ``alpha = beta = 0.5`` is Dice (up to
    smoothing). Reduction as :class:`DiceLoss`.
    """

    def __init__(
        self,
        alpha: float = 0.3,
        beta: float = 0.7,
        smooth_nr: float = 1e-5,
        smooth_dr: float = 1e-5,
        batch: bool = False,
        include_background: bool = True,
    ) -> None:
        super().__init__()
        if alpha < 0 or beta < 0:
            raise ValueError(f"tversky alpha and beta must be >= 0, got {alpha}, {beta}")
        self.alpha = alpha
        self.beta = beta
        self.smooth_nr = smooth_nr
        self.smooth_dr = smooth_dr
        self.batch = batch
        self.include_background = include_background

    def tversky_index(self, logits: Tensor, target: Tensor, valid: Tensor | None) -> Tensor:
        """Per-(image, class) Tversky index, shape (N, C') or (1, C') with ``batch``."""
        tp, fp, fn = _soft_counts(logits, target, valid, self.batch, self.include_background)
        return (tp + self.smooth_nr) / (tp + self.alpha * fp + self.beta * fn + self.smooth_dr)

    def forward(self, logits: Tensor, target: Tensor, valid: Tensor | None = None) -> Tensor:
        return (1.0 - self.tversky_index(logits, target, valid)).mean()


class FocalTverskyLoss(TverskyLoss):
    """Focal Tversky loss (Abraham & Khan 2019): mean of ``(1 - TI) ** gamma`` over (image, class).

    ``gamma = 0.75`` is the paper's exponent ``1/γ`` with ``γ = 4/3``: below 1 it raises the loss
    of well-segmented (high TI) examples relative to plain Tversky, focusing on the hard ones.
    Other arguments as :class:`TverskyLoss`.
    """

    def __init__(self, alpha: float = 0.3, beta: float = 0.7, gamma: float = 0.75, **kwargs: object) -> None:
        super().__init__(alpha=alpha, beta=beta, **kwargs)  # type: ignore[arg-type]
        if gamma <= 0:
            raise ValueError(f"focal-tversky gamma must be > 0, got {gamma}")
        self.gamma = gamma

    def forward(self, logits: Tensor, target: Tensor, valid: Tensor | None = None) -> Tensor:
        one_minus_ti = 1.0 - self.tversky_index(logits, target, valid)
        # x**0.75 has an infinite slope at 0 (perfect prediction) and is NaN below 0 (possible when
        # smooth_nr > smooth_dr); the tiny floor keeps both the value and the gradient finite
        return one_minus_ti.clamp_min(1e-7).pow(self.gamma).mean()


LOSSES: dict[str, type[nn.Module]] = {
    "bce": BCELoss,
    "dice": DiceLoss,
    "bce+dice": BCEDiceLoss,
    "focal": FocalLoss,
    "tversky": TverskyLoss,
    "focal-tversky": FocalTverskyLoss,
}


def build_loss(name: str, **kwargs: object) -> nn.Module:
    """Instantiate the loss registered as ``name`` with ``kwargs``.

    Raises ``SegtrainError`` for an unknown name (listing the valid ones) or for keyword arguments
    the loss does not take.
    """
    if name not in LOSSES:
        raise SegtrainError(f"unknown loss {name!r}; valid losses: {', '.join(LOSSES)}")
    try:
        return LOSSES[name](**kwargs)
    except (TypeError, ValueError) as exc:
        raise SegtrainError(f"loss {name!r}: {exc}") from exc


class DeepSupervisionLoss(nn.Module):
    """Weighted sum of ``base_loss`` over deep-supervision outputs.

    ``outputs[0]`` is the main (final) output; level ``i`` gets weight ``2**-i`` before the weights
    are normalised to sum 1 (e.g. 3 outputs: 4/7, 2/7, 1/7). An output whose spatial size differs
    from the target's gets the target (and ``valid``) resized to its size with nearest-neighbour
    interpolation, so class indices stay class indices. A single tensor is passed straight to
    ``base_loss``.
    """

    def __init__(self, base_loss: nn.Module) -> None:
        super().__init__()
        self.base_loss = base_loss

    @staticmethod
    def weights(n: int) -> list[float]:
        """Normalised halving weights for ``n`` outputs, largest first."""
        raw = [0.5**i for i in range(n)]
        total = sum(raw)
        return [r / total for r in raw]

    def forward(
        self,
        outputs: Tensor | list[Tensor] | tuple[Tensor, ...],
        target: Tensor,
        valid: Tensor | None = None,
    ) -> Tensor:
        if isinstance(outputs, Tensor):
            return self.base_loss(outputs, target, valid)
        if len(outputs) == 0:
            raise ValueError("DeepSupervisionLoss got an empty list of outputs")
        total: Tensor | None = None
        for weight, logits in zip(self.weights(len(outputs)), outputs):
            size = tuple(logits.shape[-2:])
            level_target = _resize_nearest(target, size)
            level_valid = None if valid is None else _resize_nearest(valid, size)
            term = weight * self.base_loss(logits, level_target, level_valid)
            total = term if total is None else total + term
        assert total is not None
        return total


def _resize_nearest(x: Tensor, size: tuple[int, ...]) -> Tensor:
    """Resize a (N,H,W) or (N,1,H,W) mask to ``size`` with nearest; no-op when already that size."""
    if tuple(x.shape[-2:]) == size:
        return x
    squeeze = x.dim() == 3
    x4 = x.unsqueeze(1) if squeeze else x
    # interpolate needs floating point; nearest copies values, so the cast back is exact
    resized = F.interpolate(x4.float(), size=size, mode="nearest").to(dtype=x.dtype)
    return resized[:, 0] if squeeze else resized
