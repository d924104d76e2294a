"""U-Net with a dilated-convolution bottleneck (after Sun et al. 2019)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from segtrain.models.base import SegModel, channel_widths, check_int
from segtrain.models.blocks import ConvBNReLU
from segtrain.models.unet import UNetDecoder, UNetEncoder


class DilatedBottleneck(nn.Module):
    """A cascade of 3x3 ConvBNReLU with growing dilation whose outputs are summed.

    At the coarsest level the receptive field grows without losing more resolution; summing
    every stage of the cascade (as in D-LinkNet's centre block) mixes the field sizes, so small
    and large polyps both find a matching scale.
    """

    def __init__(self, in_channels: int, out_channels: int, rates: Sequence[int] = (1, 2, 4, 8)) -> None:
        super().__init__()
        self.stages = nn.ModuleList(
            ConvBNReLU(in_channels if i == 0 else out_channels, out_channels, dilation=rate)
            for i, rate in enumerate(rates)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        total = None
        for stage in self.stages:
            x = stage(x)
            total = x if total is None else total + x
        return total


class DilatedUNet(SegModel):
    """U-Net whose bottleneck is a dilated cascade (rates 1, 2, 4, 8).

    After Sun, Zhang, Wang, Cao, Liu, "Colorectal Polyp Segmentation by U-Net with Dilation
    Convolution", ICMLA 2019: dilated convolutions enlarge the receptive field of the deepest
    features without further downsampling. Widths 32-...-512, depth 4 (the paper stresses a
    lighter model than U-Net): 12.5M parameters.
    """

    segkit_name = "dilated-unet"

    def __init__(self, in_channels: int = 3, num_classes: int = 1, base_channels: int = 32,
                 depth: int = 4) -> None:
        depth = check_int(self.segkit_name, "depth", depth)
        super().__init__(in_channels, num_classes, required_divisor=2**depth)
        widths = channel_widths(check_int(self.segkit_name, "base_channels", base_channels), depth)
        self.encoder = UNetEncoder(in_channels, widths,
                                   bottleneck=DilatedBottleneck(widths[-2], widths[-1]))
        self.decoder = UNetDecoder(widths, up="transpose")
        self.head = nn.Conv2d(widths[0], num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return self.head(self.decoder(self.encoder(x)))
