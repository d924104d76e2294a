"""FPN (Kirillov et al. 2019, panoptic FPN's semantic branch) decoder on a pretrained timm encoder.

A feature pyramid over the encoder's features at strides 4 and deeper: 1x1 lateral convolutions
to ``pyramid_channels``, summed top-down with the coarser level upsampled. Each pyramid level then
goes through 3x3 ConvBNReLU blocks, each followed by a x2 upsampling, until stride 4
(``segmentation_channels`` wide); the levels are summed, and a 1x1 convolution and a bilinear x4
upsampling give full-resolution logits. As segmentation_models.pytorch's FPN, with batch norm.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from segtrain.models.base import EncoderSegModel, check_int
from segtrain.models.blocks import ConvBNReLU


class _Upsampling(nn.Sequential):
    """``steps`` times: ConvBNReLU then x2 nearest (once ConvBNReLU alone when ``steps`` is 0)."""

    def __init__(self, in_channels: int, out_channels: int, steps: int) -> None:
        layers: list[nn.Module] = [ConvBNReLU(in_channels, out_channels)]
        for k in range(steps):
            if k:
                layers.append(ConvBNReLU(out_channels, out_channels))
            layers.append(nn.Upsample(scale_factor=2, mode="nearest"))
        super().__init__(*layers)


class EncoderFPN(EncoderSegModel):
    """FPN decoder on a pretrained encoder."""

    segkit_name = "fpn"

    def __init__(self, in_channels: int = 3, num_classes: int = 1, encoder: str = "resnet34",
                 encoder_weights: str | None = None, pyramid_channels: int = 256,
                 segmentation_channels: int = 128) -> None:
        super().__init__(in_channels, num_classes, encoder, encoder_weights)
        pyramid = check_int(self.segkit_name, "pyramid_channels", pyramid_channels)
        segmentation = check_int(self.segkit_name, "segmentation_channels", segmentation_channels)
        self.used = [k for k, r in enumerate(self.encoder.reductions) if r >= 4]
        reductions = [self.encoder.reductions[k] for k in self.used]
        if not reductions or reductions[0] != 4:
            raise ValueError(f"fpn: encoder {encoder} has no feature at stride 4 "
                             f"(strides {self.encoder.reductions})")
        self.lateral = nn.ModuleList(nn.Conv2d(self.encoder.channels[k], pyramid, 1) for k in self.used)
        self.branches = nn.ModuleList(_Upsampling(pyramid, segmentation, (r // 4).bit_length() - 1)
                                      for r in reductions)
        self.head = nn.Conv2d(segmentation, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        features = self.encoder(x)
        used = [features[k] for k in self.used]
        levels = [None] * len(used)
        top = None
        for k in reversed(range(len(used))):
            lateral = self.lateral[k](used[k])
            top = lateral if top is None else lateral + F.interpolate(top, size=lateral.shape[-2:],
                                                                      mode="nearest")
            levels[k] = top
        merged = sum(branch(level) for branch, level in zip(self.branches, levels))
        return F.interpolate(self.head(merged), scale_factor=4.0, mode="bilinear", align_corners=False)
