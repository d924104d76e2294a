"""SA-UNet (Guo et al. 2020): a small U-Net with DropBlock and spatial attention at the bottleneck."""

from __future__ import annotations

import torch
from torch import nn

from segtrain.errors import SegtrainError
from segtrain.models.base import SegModel, channel_widths, check_int
from segtrain.models.blocks import DropBlock2d, SpatialAttention


class DropConvBNReLU(nn.Sequential):
    """3x3 conv, DropBlock, BN, ReLU: SA-UNet's replacement of U-Net's conv unit."""

    def __init__(self, in_channels: int, out_channels: int, drop_prob: float, block_size: int) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
            DropBlock2d(drop_prob, block_size),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class SAUNet(SegModel):
    """SA-UNet: Guo, Szemenyei, Yi, Wang, Chen, Fan, ICPR 2020.

    "SA-UNet: Spatial Attention U-Net for Retinal Vessel Segmentation".

    Every convolution is followed by DropBlock (Ghiasi et al. 2018) before batch norm, so a
    model this small does not overfit the 20 DRIVE training images. The bottleneck is
    conv unit, spatial attention (7x7 over channel mean and max), conv unit. Upsampling by 3x3
    stride-2 transposed convolutions, as in the authors' code. Widths 16-32-64-128, depth 3,
    DropBlock ``block_size=7``, ``drop_prob=0.1`` (their DRIVE setting; keep_prob 0.9):
    0.54M parameters (the paper: 0.54M).
    """

    segkit_name = "sa-unet"

    def __init__(self, in_channels: int = 3, num_classes: int = 1, base_channels: int = 16,
                 depth: int = 3, drop_prob: float = 0.1, block_size: int = 7) -> None:
        depth = check_int(self.segkit_name, "depth", depth)
        super().__init__(in_channels, num_classes, required_divisor=2**depth)
        w = channel_widths(check_int(self.segkit_name, "base_channels", base_channels), depth)
        check_int(self.segkit_name, "block_size", block_size)
        if (isinstance(drop_prob, bool) or not isinstance(drop_prob, (int, float))
                or not 0 <= drop_prob < 1):
            raise SegtrainError(f"{self.segkit_name}: drop_prob must be in [0, 1); got {drop_prob!r}")

        def unit(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(DropConvBNReLU(cin, cout, drop_prob, block_size),
                                 DropConvBNReLU(cout, cout, drop_prob, block_size))

        self.pool = nn.MaxPool2d(2)
        self.encoder = nn.ModuleList(unit(in_channels if level == 0 else w[level - 1], w[level])
                                     for level in range(depth))
        self.bottleneck = nn.Sequential(
            DropConvBNReLU(w[depth - 1], w[depth], drop_prob, block_size),
            SpatialAttention(7),
            DropConvBNReLU(w[depth], w[depth], drop_prob, block_size),
        )
        self.ups = nn.ModuleList(
            nn.ConvTranspose2d(w[level + 1], w[level], 3, stride=2, padding=1, output_padding=1)
            for level in reversed(range(depth))
        )
        self.decoder = nn.ModuleList(unit(2 * w[level], w[level]) for level in reversed(range(depth)))
        self.head = nn.Conv2d(w[0], num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        skips = []
        for stage in self.encoder:
            x = stage(x)
            skips.append(x)
            x = self.pool(x)
        x = self.bottleneck(x)
        for up, conv, skip in zip(self.ups, self.decoder, reversed(skips)):
            x = conv(torch.cat([skip, up(x)], dim=1))
        return self.head(x)
