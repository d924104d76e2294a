"""ResUNet++ with CBAM, strided attention and resize-convolution upsampling, deeply supervised."""

from __future__ import annotations

from segtrain.models.blocks import CBAM
from segtrain.models.resunetpp import ResUNetPPBase


class ResUNetPlusPlusCBAM(ResUNetPPBase):
    """ResUNet++ variant: CBAM (Woo et al. 2018) in place of squeeze-and-excitation.

    Differences from ``resunetpp``, everything else equal:
    - CBAM (channel gate on average- and max-pooled features, then a 7x7 spatial gate) after
      every residual unit, where ResUNet++ has SE: SE only says *which* channels matter, CBAM
      also *where*.
    - The decoder attention reduces the skip with a stride-2 convolution instead of
      max-pooling (the encoder already downsamples with stride-2 residual units in both).
    - Upsampling is nearest-neighbour followed by a 3x3 ConvBNReLU (ResUNet++: plain
      nearest), the resize-convolution that avoids transposed-convolution checkerboards.
    - Deep supervision (on by default): in training mode forward returns
      ``[main, aux_1, ..., aux_(depth-1)]``, the auxiliary 1x1 heads on the coarser decoder
      outputs resized bilinearly to full resolution, finest first; eval mode returns ``main``.
    Widths 16-...-256, depth 3: 4.83M parameters.
    """

    segkit_name = "resunetpp-cbam"

    def __init__(self, in_channels: int = 3, num_classes: int = 1, base_channels: int = 16,
                 depth: int = 3, deep_supervision: bool = True) -> None:
        super().__init__(in_channels, num_classes, base_channels, depth,
                         channel_gate=CBAM, strided_attention=True, up_conv=True,
                         deep_supervision=deep_supervision)
