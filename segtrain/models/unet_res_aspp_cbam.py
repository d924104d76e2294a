"""U-Net with residual units, CBAM, an ASPP bridge and attention-gated skips."""

from __future__ import annotations

import torch
from torch import nn

from segtrain.models.base import SegModel, channel_widths, check_int
from segtrain.models.blocks import ASPP, CBAM, ResidualUnit
from segtrain.models.unet import UNetDecoder


class ResASPPCBAMUNet(SegModel):
    """U-Net combining the ideas of ResUNet++, CBAM and Attention U-Net (no single paper).

    Encoder: a stem residual unit, then ``depth - 1`` stages of 2x2 max-pool + pre-activation
    residual unit, each followed by CBAM (Woo et al. 2018). Bridge: max-pool + ASPP (the
    ResUNet++ form, rates 6/12/18). Decoder: at every level an Oktay attention gate on the
    skip (gated by the coarser decoder feature), a 2x2 transposed convolution, concatenation
    and a residual unit. Widths 32-64-128-256-512, depth 4: 9.79M parameters.
    """

    segkit_name = "unet-res-aspp-cbam"

    def __init__(self, in_channels: int = 3, num_classes: int = 1, base_channels: int = 32,
                 depth: int = 4) -> None:
        depth = check_int(self.segkit_name, "depth", depth)
        super().__init__(in_channels, num_classes, required_divisor=2**depth)
        w = channel_widths(check_int(self.segkit_name, "base_channels", base_channels), depth)
        self.stem = nn.Sequential(ResidualUnit(in_channels, w[0], preactivate=False), CBAM(w[0]))
        self.encoder = nn.ModuleList(
            nn.Sequential(nn.MaxPool2d(2), ResidualUnit(w[level - 1], w[level]), CBAM(w[level]))
            for level in range(1, depth)
        )
        self.bridge = nn.Sequential(nn.MaxPool2d(2), ASPP(w[depth - 1], w[depth]))
        self.decoder = UNetDecoder(w, up="transpose", attention=True, conv_unit=ResidualUnit)
        self.head = nn.Conv2d(w[0], num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        features = [self.stem(x)]
        for stage in self.encoder:
            features.append(stage(features[-1]))
        features.append(self.bridge(features[-1]))
        return self.head(self.decoder(features))
