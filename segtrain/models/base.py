"""What every segkit model shares: its name, its input checks and its option checks."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from segtrain.errors import SegtrainError


def channel_widths(base_channels: int, depth: int) -> list[int]:
    """Channels per resolution level, doubling at every downsampling (level 0 = full resolution)."""
    return [base_channels * 2**level for level in range(depth + 1)]


def nearest_multiple(value: int, divisor: int) -> int:
    """The multiple of ``divisor`` closest to ``value`` (ties round up), never below ``divisor``."""
    return max(divisor, (value + divisor // 2) // divisor * divisor)


def check_int(model: str, option: str, value: Any, minimum: int = 1) -> int:
    # bool is an int subclass; depth=True is a mistake, not a 1.
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise SegtrainError(f"{model}: {option} must be an integer >= {minimum}; got {value!r}")
    return value


def check_choice(model: str, option: str, value: Any, choices: Iterable[str]) -> str:
    choices = tuple(choices)
    if value not in choices:
        raise SegtrainError(f"{model}: {option} must be one of {', '.join(choices)}; got {value!r}")
    return value


class SegModel(nn.Module):
    """Base class: stores the common options and rejects inputs the network cannot take.

    Subclasses set ``segkit_name`` (the registry name) and call ``check_input`` first in
    ``forward`` so that a bad size fails with a message that says what to do, instead of
    a shape mismatch deep inside a ``torch.cat``.
    """

    segkit_name: str = "model"
    # Options that only choose initial weights (e.g. a local pretrained file), not the
    # architecture: a checkpoint's state dict already holds their effect.
    init_only_options: tuple[str, ...] = ()

    def __init__(self, in_channels: int, num_classes: int, required_divisor: int) -> None:
        super().__init__()
        self.in_channels = check_int(self.segkit_name, "in_channels", in_channels)
        self.num_classes = check_int(self.segkit_name, "num_classes", num_classes)
        self.required_divisor = required_divisor

    def check_input(self, x: torch.Tensor) -> None:
        name = self.segkit_name
        if x.dim() != 4:
            raise SegtrainError(f"{name} expects a batch shaped (N, C, H, W); "
                                f"got shape {tuple(x.shape)}")
        if x.shape[1] != self.in_channels:
            raise SegtrainError(f"{name} was built for {self.in_channels} input channels; "
                                f"got {x.shape[1]}")
        height, width = int(x.shape[-2]), int(x.shape[-1])
        d = self.required_divisor
        if height % d or width % d:
            raise SegtrainError(
                f"{name} needs sides divisible by {d}; got {height}x{width}, "
                f"nearest valid {nearest_multiple(height, d)}x{nearest_multiple(width, d)}")


def decoder_widths(decoder_channels: Any, blocks: int, model: str) -> list[int]:
    """Widths of a decoder's ``blocks`` blocks, deepest first: the given list (one per block) or,
    when None, 256, 128, 64, 32, 16 (16 for any further block), as segmentation_models.pytorch."""
    if decoder_channels is None:
        widths = [256, 128, 64, 32, 16]
        return (widths + [16] * blocks)[:blocks]
    widths = list(decoder_channels) if isinstance(decoder_channels, (list, tuple)) else None
    if widths is None or len(widths) != blocks or not all(isinstance(w, int) and w > 0 for w in widths):
        raise SegtrainError(f"{model}: decoder_channels must be {blocks} positive integers for "
                            f"this encoder (one per decoder block, deepest first); got {decoder_channels!r}")
    return widths


class EncoderSegModel(SegModel):
    """A decoder on a timm encoder (:class:`segtrain.models.encoders.Encoder`): the encoder's
    deepest stride is the required divisor, and the normalisation its weights expect travels
    with the model (``segkit_normalize``) into checkpoints and prediction."""

    init_only_options = ("encoder_weights",)

    def __init__(self, in_channels: int, num_classes: int, encoder: str,
                 encoder_weights: str | None) -> None:
        from segtrain.models.encoders import Encoder

        super().__init__(in_channels, num_classes, required_divisor=1)
        if not isinstance(encoder, str) or not encoder:
            raise SegtrainError(f"{self.segkit_name}: encoder must be a timm model name; got {encoder!r}")
        self.encoder = Encoder(encoder, self.in_channels, encoder_weights)
        self.required_divisor = max(self.encoder.reductions)
        self.segkit_normalize = self.encoder.normalize
