"""U-Net (Ronneberger et al. 2015) and the encoder/decoder parts its variants reuse."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from segtrain.models.base import SegModel, channel_widths, check_choice, check_int
from segtrain.models.blocks import UP_MODES, AttentionGate, ConvBNReLU, DoubleConv, make_upsample

ConvUnit = Callable[[int, int], nn.Module]


class UNetEncoder(nn.Module):
    """A DoubleConv stem, then ``len(widths) - 1`` stages of (downsample, DoubleConv).

    ``down="pool"`` halves the resolution by 2x2 max-pooling (the paper); ``down="stride"`` by
    a learned 3x3 stride-2 ConvBNReLU. ``bottleneck`` replaces the last stage's DoubleConv.
    Returns the feature of every level, finest first.
    """

    def __init__(self, in_channels: int, widths: list[int], down: str = "pool",
                 bottleneck: nn.Module | None = None) -> None:
        super().__init__()
        self.stem = DoubleConv(in_channels, widths[0])
        stages = []
        for level in range(1, len(widths)):
            down_layer = (nn.MaxPool2d(2) if down == "pool"
                          else ConvBNReLU(widths[level - 1], widths[level - 1], stride=2))
            if level == len(widths) - 1 and bottleneck is not None:
                body = bottleneck
            else:
                body = DoubleConv(widths[level - 1], widths[level])
            stages.append(nn.Sequential(down_layer, body))
        self.stages = nn.ModuleList(stages)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = [self.stem(x)]
        for stage in self.stages:
            features.append(stage(features[-1]))
        return features


class UNetDecoderBlock(nn.Module):
    """Upsample the coarser feature, concatenate the skip, fuse with ``conv_unit``.

    With ``attention=True`` the skip first passes an attention gate driven by the coarser
    (not yet upsampled) decoder feature, as in Attention U-Net.
    """

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int,
                 up: str = "transpose", attention: bool = False,
                 conv_unit: ConvUnit = DoubleConv) -> None:
        super().__init__()
        self.gate = AttentionGate(skip_channels, in_channels) if attention else None
        self.up = make_upsample(in_channels, out_channels, up)
        self.conv = conv_unit(skip_channels + out_channels, out_channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        if self.gate is not None:
            skip = self.gate(skip, x)
        return self.conv(torch.cat([skip, self.up(x)], dim=1))


class UNetDecoder(nn.Module):
    """One UNetDecoderBlock per level, coarsest first; returns the full-resolution feature."""

    def __init__(self, widths: list[int], up: str = "transpose", attention: bool = False,
                 conv_unit: ConvUnit = DoubleConv) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            UNetDecoderBlock(widths[level + 1], widths[level], widths[level], up, attention, conv_unit)
            for level in reversed(range(len(widths) - 1))
        )

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        x = features[-1]
        for block, skip in zip(self.blocks, reversed(features[:-1])):
            x = block(x, skip)
        return x


class UNet(SegModel):
    """U-Net: Ronneberger, Fischer, Brox, MICCAI 2015, with batch norm and 'same' padding.

    Widths 64-128-256-512-1024 (depth 4). With ``up="transpose"`` (2x2 up-convolutions, as in
    the paper): 31.04M parameters, 48.2 GMACs at 256x256. With ``up="bilinear"`` (resize + 1x1
    conv): 28.9M. Padded convolutions replace the paper's valid ones so output size equals
    input size; batch norm, absent from the 2015 paper, is the usual modern addition.
    """

    segkit_name = "unet"

    def __init__(self, in_channels: int = 3, num_classes: int = 1, base_channels: int = 64,
                 depth: int = 4, up: str = "transpose") -> None:
        depth = check_int(self.segkit_name, "depth", depth)
        super().__init__(in_channels, num_classes, required_divisor=2**depth)
        check_choice(self.segkit_name, "up", up, UP_MODES)
        widths = channel_widths(check_int(self.segkit_name, "base_channels", base_channels), depth)
        self.encoder = UNetEncoder(in_channels, widths)
        self.decoder = UNetDecoder(widths, up)
        self.head = nn.Conv2d(widths[0], num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return self.head(self.decoder(self.encoder(x)))
