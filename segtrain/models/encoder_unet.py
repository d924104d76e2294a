"""U-Net and Attention U-Net decoders on a pretrained timm encoder.

The encoder gives feature maps at strides r_0 < r_1 < ... (2, 4, 8, 16, 32 for ResNets and
EfficientNets; 4, 8, 16, 32 for ConvNeXt and PVTv2). From the deepest, each decoder block
resizes to the next shallower feature, concatenates it (through an attention gate in the
Attention U-Net) and fuses with a DoubleConv; blocks without a skip then double the resolution
until stride 1, and a 1x1 convolution gives the logits. Widths: ``decoder_channels`` (one per
block, deepest first; default 256, 128, 64, 32, 16 as in segmentation_models.pytorch).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from segtrain.models.base import EncoderSegModel, decoder_widths
from segtrain.models.blocks import AttentionGate, DoubleConv


class SkipBlock(nn.Module):
    """Resize ``x`` to the skip's size (or x2 without one), concatenate the skip, DoubleConv.
    With ``attention``, the skip passes an attention gate driven by ``x`` before the resize."""

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int,
                 attention: bool = False) -> None:
        super().__init__()
        self.gate = AttentionGate(skip_channels, in_channels) if attention and skip_channels else None
        self.conv = DoubleConv(in_channels + skip_channels, out_channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        if skip is None:
            return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))
        if self.gate is not None:
            skip = self.gate(skip, x)
        x = F.interpolate(x, size=skip.shape[-2:], mode="nearest")
        return self.conv(torch.cat([x, skip], dim=1))


def full_resolution_steps(reductions: list[int], model: str) -> int:
    """Blocks without a skip that bring the shallowest feature (stride r_0) to stride 1."""
    steps = math.log2(reductions[0])
    if steps != int(steps):
        raise ValueError(f"{model}: the encoder's shallowest stride {reductions[0]} is not a power of 2")
    return int(steps)


class EncoderUNet(EncoderSegModel):
    """U-Net (Ronneberger et al. 2015) decoder on a pretrained encoder, as segmentation_models.pytorch's Unet."""

    segkit_name = "unet"
    attention = False

    def __init__(self, in_channels: int = 3, num_classes: int = 1, encoder: str = "resnet34",
                 encoder_weights: str | None = None, decoder_channels: list[int] | None = None) -> None:
        super().__init__(in_channels, num_classes, encoder, encoder_weights)
        skips = self.encoder.channels[:-1][::-1]   # deepest skip first
        extra = full_resolution_steps(self.encoder.reductions, self.segkit_name)
        widths = decoder_widths(decoder_channels, len(skips) + extra, self.segkit_name)
        blocks, previous = [], self.encoder.channels[-1]
        for k, width in enumerate(widths):
            skip = skips[k] if k < len(skips) else 0
            blocks.append(SkipBlock(previous, skip, width, attention=self.attention))
            previous = width
        self.blocks = nn.ModuleList(blocks)
        self.head = nn.Conv2d(previous, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        features = self.encoder(x)
        skips = features[:-1][::-1]
        y = features[-1]
        for k, block in enumerate(self.blocks):
            y = block(y, skips[k] if k < len(skips) else None)
        return self.head(y)


class EncoderAttentionUNet(EncoderUNet):
    """Attention U-Net (Oktay et al. 2018) decoder on a pretrained encoder: every skip passes an
    additive attention gate driven by the coarser decoder feature."""

    segkit_name = "attention-unet"
    attention = True
