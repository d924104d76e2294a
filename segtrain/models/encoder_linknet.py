"""LinkNet (Chaurasia & Culurciello 2017) decoder on a pretrained timm encoder.

LinkNet's decoder adds each decoder block's output to the encoder feature one stage shallower
(no concatenation: the decoder stays as narrow as the encoder), on the encoder's features at
strides 4 and deeper (its first feature, at stride 2, is left out as in the paper, where the
ResNet's first stage follows the stem's max-pooling). The paper's head (full convolution x2,
3x3 convolution, full convolution x2) then brings stride 4 to full resolution.
"""

from __future__ import annotations

import torch
from torch import nn

from segtrain.models.base import EncoderSegModel
from segtrain.models.linknet import LinkNetDecoderBlock, linknet_head


class EncoderLinkNet(EncoderSegModel):
    """LinkNet decoder on a pretrained encoder (ResNet-18 in the paper)."""

    segkit_name = "linknet"

    def __init__(self, in_channels: int = 3, num_classes: int = 1, encoder: str = "resnet18",
                 encoder_weights: str | None = None) -> None:
        super().__init__(in_channels, num_classes, encoder, encoder_weights)
        self.used = [k for k, r in enumerate(self.encoder.reductions) if r >= 4]
        if not self.used or self.encoder.reductions[self.used[0]] != 4:
            raise ValueError(f"linknet: encoder {encoder} has no feature at stride 4 "
                             f"(strides {self.encoder.reductions})")
        channels = [self.encoder.channels[k] for k in self.used]
        self.decoders = nn.ModuleList(LinkNetDecoderBlock(channels[k + 1], channels[k])
                                      for k in reversed(range(len(channels) - 1)))
        first = channels[0]
        self.decoder1 = LinkNetDecoderBlock(first, first, stride=1)
        self.head = linknet_head(first, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        features = self.encoder(x)
        used = [features[k] for k in self.used]
        y = used[-1]
        for decoder, skip in zip(self.decoders, reversed(used[:-1])):
            y = decoder(y) + skip
        return self.head(self.decoder1(y))
