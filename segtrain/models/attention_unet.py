"""Attention U-Net (Oktay et al. 2018): U-Net with attention gates on the skip connections."""

from __future__ import annotations

import torch
from torch import nn

from segtrain.models.base import SegModel, channel_widths, check_int
from segtrain.models.unet import UNetDecoder, UNetEncoder


class AttentionUNet(SegModel):
    """Attention U-Net: Oktay et al., MIDL 2018.

    "Attention U-Net: Learning Where to Look for the Pancreas".

    Every skip passes an additive attention gate (``blocks.AttentionGate``) whose gating signal
    is the decoder feature one level coarser, so irrelevant encoder activations are suppressed
    before concatenation. Widths 64-...-1024, depth 4 (the width of the common 2D re-
    implementations; the paper's 3D model is narrower): 32.4M parameters.
    """

    segkit_name = "attention-unet"

    def __init__(self, in_channels: int = 3, num_classes: int = 1, base_channels: int = 64,
                 depth: int = 4) -> None:
        depth = check_int(self.segkit_name, "depth", depth)
        super().__init__(in_channels, num_classes, required_divisor=2**depth)
        widths = channel_widths(check_int(self.segkit_name, "base_channels", base_channels), depth)
        self.encoder = UNetEncoder(in_channels, widths)
        self.decoder = UNetDecoder(widths, up="transpose", attention=True)
        self.head = nn.Conv2d(widths[0], num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return self.head(self.decoder(self.encoder(x)))
