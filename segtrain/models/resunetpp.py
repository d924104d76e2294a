"""ResUNet++ (Jha et al. 2019) and the machinery its CBAM variant reuses."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from segtrain.models.base import SegModel, channel_widths, check_int
from segtrain.models.blocks import ASPP, ConvBNReLU, DecoderAttention, ResidualUnit, SqueezeExcite

ChannelGate = Callable[[int], nn.Module]


class ResUNetPPDecoderBlock(nn.Module):
    """Attention on the coarse decoder feature, x2 upsampling, concat the skip, residual unit + gate."""

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int,
                 channel_gate: ChannelGate, strided_attention: bool, up_conv: bool) -> None:
        super().__init__()
        self.attention = DecoderAttention(skip_channels, in_channels, strided=strided_attention)
        up: list[nn.Module] = [nn.Upsample(scale_factor=2, mode="nearest")]
        if up_conv:
            # A convolution after the resize smooths the blocky nearest-neighbour output
            # without the checkerboard pattern of a transposed convolution.
            up.append(ConvBNReLU(in_channels, in_channels))
        self.up = nn.Sequential(*up)
        self.conv = nn.Sequential(ResidualUnit(in_channels + skip_channels, out_channels),
                                  channel_gate(out_channels))

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.up(self.attention(skip, x))
        return self.conv(torch.cat([x, skip], dim=1))


class ResUNetPPBase(SegModel):
    """Shared structure of ``resunetpp`` and ``resunetpp-cbam``; the public classes fix the options.

    Widths w_i = base * 2^i. Encoder: a stem residual unit (w_0, full resolution), then
    ``depth`` stride-2 residual units (w_1..w_depth), each followed by a channel gate. Bridge:
    ASPP to w_(depth+1). Decoder: one ResUNetPPDecoderBlock per level (level i outputs
    w_(i+1)). Output: ASPP to w_0, then a 1x1 convolution.
    """

    def __init__(self, in_channels: int, num_classes: int, base_channels: int, depth: int, *,
                 channel_gate: ChannelGate, strided_attention: bool, up_conv: bool,
                 deep_supervision: bool) -> None:
        depth = check_int(self.segkit_name, "depth", depth)
        super().__init__(in_channels, num_classes, required_divisor=2**depth)
        w = channel_widths(check_int(self.segkit_name, "base_channels", base_channels), depth + 1)
        self.deep_supervision = bool(deep_supervision)
        self.stem = nn.Sequential(ResidualUnit(in_channels, w[0], preactivate=False), channel_gate(w[0]))
        self.encoder = nn.ModuleList(
            nn.Sequential(ResidualUnit(w[level - 1], w[level], stride=2), channel_gate(w[level]))
            for level in range(1, depth + 1)
        )
        self.bridge = ASPP(w[depth], w[depth + 1])
        # Decoder block for skip level i takes w_(i+2) channels (the bridge for the deepest one)
        # and returns w_(i+1): the decoder stays one width step above the encoder.
        self.decoder = nn.ModuleList(
            ResUNetPPDecoderBlock(w[level + 2], w[level], w[level + 1], channel_gate,
                                  strided_attention, up_conv)
            for level in reversed(range(depth))
        )
        self.head = nn.Sequential(ASPP(w[1], w[0]), nn.Conv2d(w[0], num_classes, 1))
        # Auxiliary heads on every decoder output but the last (which feeds the main head),
        # ordered finest first so that loss weights halving per entry favour the finer ones.
        self.aux_heads = nn.ModuleList(
            nn.Conv2d(w[level + 1], num_classes, 1) for level in range(1, depth)
        ) if self.deep_supervision else nn.ModuleList()

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        self.check_input(x)
        size = x.shape[-2:]
        skips = [self.stem(x)]
        for stage in self.encoder[:-1]:
            skips.append(stage(skips[-1]))
        y = self.bridge(self.encoder[-1](skips[-1]))
        decoded = []
        for block, skip in zip(self.decoder, reversed(skips)):
            y = block(y, skip)
            decoded.append(y)
        main = self.head(y)
        if not (self.deep_supervision and self.training):
            return main
        # decoded[-2] is one level coarser than the output, decoded[0] the coarsest.
        aux = [F.interpolate(head(feature), size=size, mode="bilinear", align_corners=False)
               for head, feature in zip(self.aux_heads, reversed(decoded[:-1]))]
        return [main, *aux]


class ResUNetPlusPlus(ResUNetPPBase):
    """ResUNet++: Jha et al., IEEE ISM 2019.

    "ResUNet++: An Advanced Architecture for Medical Image Segmentation".

    Follows the authors' code (github.com/DebeshJha/ResUNetPlusPlus): pre-activation residual
    units with stride-2 downsampling, squeeze-and-excitation (ratio 8) after every residual
    unit, an ASPP bridge (rates 6/12/18 plus a plain 3x3, summed), the decoder attention block
    before each nearest-neighbour x2 upsampling, and an ASPP before the 1x1 output.
    Widths 16-32-64-128-256, depth 3: 4.06M parameters (the paper: 4.07M).
    """

    segkit_name = "resunetpp"

    def __init__(self, in_channels: int = 3, num_classes: int = 1, base_channels: int = 16,
                 depth: int = 3) -> None:
        super().__init__(in_channels, num_classes, base_channels, depth,
                         channel_gate=SqueezeExcite, strided_attention=False, up_conv=False,
                         deep_supervision=False)
