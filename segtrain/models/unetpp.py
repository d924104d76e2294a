"""UNet++ (Zhou et al. 2018): U-Net with nested, dense skip pathways."""

from __future__ import annotations

import torch
from torch import nn

from segtrain.models.base import SegModel, channel_widths, check_int
from segtrain.models.blocks import DoubleConv


class UNetPlusPlus(SegModel):
    """UNet++: Zhou, Siddiquee, Tajbakhsh, Liang, DLMIA 2018 (and IEEE TMI 2019).

    Node X(i, j) sits at level i (resolution H / 2^i) and column j. Column 0 is a plain U-Net
    encoder; every other node is a DoubleConv over the concatenation of all earlier nodes of
    its level, X(i, 0..j-1), and the 2x2 up-convolution of X(i+1, j-1). The skips so carry
    features already partly decoded, narrowing the semantic gap between encoder and decoder.

    With ``deep_supervision=True`` every top node X(0, 1..depth) has its own 1x1 head; in
    training mode forward returns ``[head(X(0, depth)), ..., head(X(0, 1))]`` (main output
    first, all at full resolution); in eval mode only the main output (the paper's "accurate"
    mode would average them; pruning at inference is left to the caller).

    Widths 32-64-128-256-512, depth 4, as in the paper: 9.05M parameters (the paper: 9.04M).
    """

    segkit_name = "unetpp"

    def __init__(self, in_channels: int = 3, num_classes: int = 1, base_channels: int = 32,
                 depth: int = 4, deep_supervision: bool = False) -> None:
        depth = check_int(self.segkit_name, "depth", depth)
        super().__init__(in_channels, num_classes, required_divisor=2**depth)
        widths = channel_widths(check_int(self.segkit_name, "base_channels", base_channels), depth)
        self.depth = depth
        self.deep_supervision = bool(deep_supervision)
        self.pool = nn.MaxPool2d(2)
        self.nodes = nn.ModuleDict()
        self.ups = nn.ModuleDict()
        for level in range(depth + 1):
            self.nodes[f"x{level}_0"] = DoubleConv(in_channels if level == 0 else widths[level - 1],
                                                   widths[level])
        for col in range(1, depth + 1):
            for level in range(depth + 1 - col):
                # One up-convolution per node, as in the reference code: X(i+1, j-1) -> level i.
                self.ups[f"x{level}_{col}"] = nn.ConvTranspose2d(widths[level + 1], widths[level],
                                                                 2, stride=2)
                self.nodes[f"x{level}_{col}"] = DoubleConv(widths[level] * (col + 1), widths[level])
        n_heads = depth if self.deep_supervision else 1
        self.heads = nn.ModuleList(nn.Conv2d(widths[0], num_classes, 1) for _ in range(n_heads))

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        self.check_input(x)
        nodes: dict[tuple[int, int], torch.Tensor] = {(0, 0): self.nodes["x0_0"](x)}
        for level in range(1, self.depth + 1):
            nodes[level, 0] = self.nodes[f"x{level}_0"](self.pool(nodes[level - 1, 0]))
        for col in range(1, self.depth + 1):
            for level in range(self.depth + 1 - col):
                up = self.ups[f"x{level}_{col}"](nodes[level + 1, col - 1])
                dense = [nodes[level, k] for k in range(col)]
                nodes[level, col] = self.nodes[f"x{level}_{col}"](torch.cat([*dense, up], dim=1))
        if not self.deep_supervision:
            return self.heads[0](nodes[0, self.depth])
        main = self.heads[-1](nodes[0, self.depth])
        if not self.training:
            return main
        # heads[j - 1] belongs to X(0, j); the main (deepest) one first, then shallower ones.
        return [main] + [self.heads[col - 1](nodes[0, col]) for col in range(self.depth - 1, 0, -1)]
