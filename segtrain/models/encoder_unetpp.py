"""UNet++ (Zhou et al. 2018) decoder on a pretrained timm encoder.

The encoder's features are column 0 of the nested grid: node X(i, j) at level i fuses every
earlier node of its level, X(i, 0..j-1), with the resized X(i+1, j-1) (a DoubleConv over their
concatenation). The top node X(0, L-1) (at the encoder's shallowest stride) is then brought to
full resolution by blocks without a skip, and a 1x1 convolution gives the logits. Level widths
come from ``decoder_channels`` as for the U-Net decoder (deepest first). With
``deep_supervision``, every top node X(0, j) has a head too; in training mode the output is the
list [main, X(0, L-2), ..., X(0, 1)] of full-resolution logits, in eval mode the main one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from segtrain.models.base import EncoderSegModel, decoder_widths
from segtrain.models.blocks import DoubleConv
from segtrain.models.encoder_unet import SkipBlock, full_resolution_steps


class EncoderUNetPlusPlus(EncoderSegModel):
    """UNet++ decoder on a pretrained encoder, as segmentation_models.pytorch's UnetPlusPlus."""

    segkit_name = "unetpp"

    def __init__(self, in_channels: int = 3, num_classes: int = 1, encoder: str = "resnet34",
                 encoder_weights: str | None = None, decoder_channels: list[int] | None = None,
                 deep_supervision: bool = False) -> None:
        super().__init__(in_channels, num_classes, encoder, encoder_weights)
        channels = self.encoder.channels
        levels = len(channels)
        extra = full_resolution_steps(self.encoder.reductions, self.segkit_name)
        widths = decoder_widths(decoder_channels, levels - 1 + extra, self.segkit_name)
        # level i (0 = shallowest) of the nested grid has width widths[levels - 2 - i]
        width = [widths[levels - 2 - i] for i in range(levels - 1)]
        self.levels = levels
        self.deep_supervision = bool(deep_supervision)
        self.nodes = nn.ModuleDict()
        for j in range(1, levels):
            for i in range(levels - j):
                below = channels[i + 1] if j == 1 else width[i + 1]  # X(i+1, j-1)
                self.nodes[f"x{i}_{j}"] = DoubleConv(channels[i] + (j - 1) * width[i] + below, width[i])
        blocks, previous = [], width[0]
        for w in widths[levels - 1:]:
            blocks.append(SkipBlock(previous, 0, w))
            previous = w
        self.up = nn.ModuleList(blocks)
        self.head = nn.Conv2d(previous, num_classes, 1)
        self.side_heads = nn.ModuleList(nn.Conv2d(width[0], num_classes, 1)
                                        for _ in range(levels - 2)) if self.deep_supervision else None

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        self.check_input(x)
        features = self.encoder(x)
        nodes: dict[tuple[int, int], torch.Tensor] = {(i, 0): f for i, f in enumerate(features)}
        for j in range(1, self.levels):
            for i in range(self.levels - j):
                below = nodes[i + 1, j - 1]
                up = F.interpolate(below, size=nodes[i, 0].shape[-2:], mode="nearest")
                dense = [nodes[i, k] for k in range(j)]
                nodes[i, j] = self.nodes[f"x{i}_{j}"](torch.cat([*dense, up], dim=1))
        y = nodes[0, self.levels - 1]
        for block in self.up:
            y = block(y)
        main = self.head(y)
        if not (self.deep_supervision and self.training):
            return main
        size = x.shape[-2:]
        sides = [F.interpolate(head(nodes[0, j]), size=size, mode="bilinear", align_corners=False)
                 for head, j in zip(self.side_heads, range(self.levels - 2, 0, -1))]
        return [main, *sides]
