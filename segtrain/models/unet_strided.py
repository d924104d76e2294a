"""U-Net with learned downsampling: stride-2 convolutions instead of max-pooling."""

from __future__ import annotations

import torch
from torch import nn

from segtrain.models.base import SegModel, channel_widths, check_int
from segtrain.models.unet import UNetDecoder, UNetEncoder


class StridedUNet(SegModel):
    """U-Net whose every 2x2 max-pool is a 3x3 stride-2 ConvBNReLU; up by 2x2 transposed convs.

    No pooling anywhere: the network learns how to downsample (as in the all-convolutional
    net of Springenberg et al. 2015). Widths 64-...-1024, depth 4: 34.2M parameters (U-Net's
    31.0M plus 3.1M in the four downsampling convolutions).
    """

    segkit_name = "unet-strided"

    def __init__(self, in_channels: int = 3, num_classes: int = 1, base_channels: int = 64,
                 depth: int = 4) -> None:
        depth = check_int(self.segkit_name, "depth", depth)
        super().__init__(in_channels, num_classes, required_divisor=2**depth)
        widths = channel_widths(check_int(self.segkit_name, "base_channels", base_channels), depth)
        self.encoder = UNetEncoder(in_channels, widths, down="stride")
        self.decoder = UNetDecoder(widths, up="transpose")
        self.head = nn.Conv2d(widths[0], num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return self.head(self.decoder(self.encoder(x)))
