"""SegNet (Badrinarayanan et al. 2015): a VGG16 encoder and a decoder upsampling by max-unpooling."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from segtrain.models.base import SegModel, check_int
from segtrain.models.blocks import ConvBNReLU

# VGG16's five stages: (width as a multiple of base_channels, number of 3x3 convolutions).
VGG16_STAGES = ((1, 2), (2, 2), (4, 3), (8, 3), (8, 3))


class SegNet(SegModel):
    """SegNet: Badrinarayanan, Kendall, Cipolla, arXiv 2015 (IEEE TPAMI 2017).

    Encoder: the 13 convolutions of VGG16 (with batch norm), 2x2 max-pooling after each stage
    that keeps the argmax indices. Decoder: the mirror image; each stage first max-unpools
    with the indices saved by its encoder stage, so boundaries return to where they were
    without learned upsampling and without storing the encoder features themselves. The last
    decoder convolution (3x3, no norm) gives the class logits, as in the reference model.
    Widths 64-128-256-512-512, always five stages (required divisor 32): 29.4M parameters
    (the paper: 29.5M).
    """

    segkit_name = "segnet"

    def __init__(self, in_channels: int = 3, num_classes: int = 1, base_channels: int = 64) -> None:
        super().__init__(in_channels, num_classes, required_divisor=2 ** len(VGG16_STAGES))
        base = check_int(self.segkit_name, "base_channels", base_channels)
        widths = [base * mult for mult, _ in VGG16_STAGES]
        self.encoder = nn.ModuleList()
        prev = in_channels
        for width, (_, n_convs) in zip(widths, VGG16_STAGES):
            self.encoder.append(nn.Sequential(*(ConvBNReLU(prev if i == 0 else width, width)
                                                for i in range(n_convs))))
            prev = width
        # Decoder stage s mirrors encoder stage s: its last conv narrows to the width of
        # stage s-1. Stage 0 keeps one ConvBNReLU; its mirrored last conv is the head.
        self.decoder = nn.ModuleList()
        for stage in reversed(range(len(VGG16_STAGES))):
            width, n_convs = widths[stage], VGG16_STAGES[stage][1]
            out = widths[stage - 1] if stage > 0 else width
            convs = [ConvBNReLU(width, width) for _ in range(n_convs - 1)]
            if stage > 0:
                convs.append(ConvBNReLU(width, out))
            self.decoder.append(nn.Sequential(*convs))
        self.head = nn.Conv2d(widths[0], num_classes, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        saved = []
        for stage in self.encoder:
            x, indices = F.max_pool2d(stage(x), 2, stride=2, return_indices=True)
            saved.append(indices)
        for stage, indices in zip(self.decoder, reversed(saved)):
            x = stage(unpool(x, indices))
        return self.head(x)


def unpool(x: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """2x2 max-unpooling: each value back at its argmax, zeros elsewhere. What
    ``F.max_unpool2d`` computes for the sides check_input allows (multiples of 32), written as a
    scatter because ONNX tracing cannot follow max_unpool2d's output-size arithmetic."""
    n, c, h, w = x.shape
    out = x.new_zeros(n, c, 4 * h * w).scatter(2, indices.flatten(2), x.flatten(2))
    return out.view(n, c, 2 * h, 2 * w)
