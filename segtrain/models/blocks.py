"""Building blocks shared by the architectures in this package.

Convolutions followed by batch norm carry no bias: the norm's shift makes it redundant.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

UP_MODES = ("transpose", "bilinear", "nearest")


class ConvBNReLU(nn.Sequential):
    """3x3 (by default) convolution, batch norm, ReLU; 'same' padding for any dilation."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3,
                 stride: int = 1, dilation: int = 1) -> None:
        padding = dilation * (kernel_size - 1) // 2
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding,
                      dilation=dilation, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class DoubleConv(nn.Sequential):
    """The U-Net unit: two ConvBNReLU at the same resolution."""

    def __init__(self, in_channels: int, out_channels: int, dilation: int = 1) -> None:
        super().__init__(
            ConvBNReLU(in_channels, out_channels, dilation=dilation),
            ConvBNReLU(out_channels, out_channels, dilation=dilation),
        )


class ResidualUnit(nn.Module):
    """Pre-activation residual unit (He et al. 2016) as used by ResUNet and ResUNet++.

    Body: BN-ReLU-conv3x3(stride)-BN-ReLU-conv3x3; shortcut: 1x1 conv + BN whenever the shape
    changes. ``preactivate=False`` drops the leading BN-ReLU: that is the ResUNet "stem", which
    sees raw pixels where a normalisation + ReLU would throw away the sign of the input.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1,
                 preactivate: bool = True) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        if preactivate:
            layers += [nn.BatchNorm2d(in_channels), nn.ReLU(inplace=True)]
        layers += [
            nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
        ]
        self.body = nn.Sequential(*layers)
        if stride == 1 and in_channels == out_channels:
            self.shortcut: nn.Module = nn.Identity()
        else:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + self.shortcut(x)


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation (Hu et al. 2018): reweights channels from their global averages."""

    def __init__(self, channels: int, reduction: int = 8) -> None:
        super().__init__()
        hidden = max(channels // reduction, 1)
        self.gate = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(channels, hidden, 1, bias=False),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, 1, bias=False),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x)


class ChannelAttention(nn.Module):
    """CBAM's channel gate: like SE, but the shared MLP sees both the average- and the max-pool."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = max(channels // reduction, 1)
        self.mlp = nn.Sequential(
            nn.Conv2d(channels, hidden, 1, bias=False),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, 1, bias=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        avg = self.mlp(F.adaptive_avg_pool2d(x, 1))
        peak = self.mlp(F.adaptive_max_pool2d(x, 1))
        return x * torch.sigmoid(avg + peak)


class SpatialAttention(nn.Module):
    """Spatial gate of CBAM (Woo et al. 2018) and SA-UNet (Guo et al. 2020).

    A kxk convolution over the channel-wise mean and max maps gives one weight per pixel.
    """

    def __init__(self, kernel_size: int = 7) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.conv(pooled))


class CBAM(nn.Sequential):
    """Convolutional block attention module (Woo et al. 2018): channel gate, then spatial gate."""

    def __init__(self, channels: int, reduction: int = 16, kernel_size: int = 7) -> None:
        super().__init__(ChannelAttention(channels, reduction), SpatialAttention(kernel_size))


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling in the ResUNet++ form (Jha et al. 2019).

    Parallel 3x3 convolutions (rate 1 and the atrous rates), each with batch norm, are summed
    (not concatenated, as in DeepLab) and fused by a 1x1 convolution.
    """

    def __init__(self, in_channels: int, out_channels: int,
                 rates: Sequence[int] = (6, 12, 18)) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 3, padding=rate, dilation=rate, bias=False),
                nn.BatchNorm2d(out_channels),
            )
            for rate in (1, *rates)
        )
        self.project = nn.Conv2d(out_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(sum(branch(x) for branch in self.branches))


class AttentionGate(nn.Module):
    """Additive attention gate of Attention U-Net (Oktay et al. 2018).

    ``skip`` (encoder features at resolution H) is weighted per pixel by coefficients computed
    from itself and from ``gate`` (decoder features one level coarser, H/2). As in the paper,
    the skip is brought to the gate's grid by a strided 2x2 convolution, so the comparison
    happens at the coarse scale, and the coefficients are resampled bilinearly back to H.
    """

    def __init__(self, skip_channels: int, gate_channels: int,
                 inter_channels: int | None = None) -> None:
        super().__init__()
        inter = inter_channels or max(skip_channels // 2, 1)
        self.theta = nn.Conv2d(skip_channels, inter, 2, stride=2, bias=False)
        self.phi = nn.Conv2d(gate_channels, inter, 1)
        self.psi = nn.Conv2d(inter, 1, 1)
        self.out = nn.Sequential(nn.Conv2d(skip_channels, skip_channels, 1, bias=False),
                                 nn.BatchNorm2d(skip_channels))

    def forward(self, skip: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
        alpha = torch.sigmoid(self.psi(F.relu(self.theta(skip) + self.phi(gate))))
        alpha = F.interpolate(alpha, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return self.out(skip * alpha)


class DecoderAttention(nn.Module):
    """The attention block of the ResUNet++ decoder (Jha et al. 2019, official Keras code).

    The encoder feature ``skip`` (resolution H) and the decoder feature ``x`` (H/2) each pass
    BN-ReLU-conv3x3; the skip path is then max-pooled to H/2 (or, with ``strided=True``,
    reduced by a stride-2 convolution instead), the two are summed, pass BN-ReLU-conv3x3, and
    the result multiplies ``x``. The official code applies no sigmoid; neither do we.
    """

    def __init__(self, skip_channels: int, channels: int, strided: bool = False) -> None:
        super().__init__()
        stride = 2 if strided else 1
        self.skip_path = nn.Sequential(
            nn.BatchNorm2d(skip_channels), nn.ReLU(inplace=True),
            nn.Conv2d(skip_channels, channels, 3, stride=stride, padding=1, bias=False),
            nn.Identity() if strided else nn.MaxPool2d(2),
        )
        self.x_path = nn.Sequential(
            nn.BatchNorm2d(channels), nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
        )
        self.fuse = nn.Sequential(
            nn.BatchNorm2d(channels), nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
        )

    def forward(self, skip: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.fuse(self.skip_path(skip) + self.x_path(x)) * x


class DropBlock2d(nn.Module):
    """DropBlock (Ghiasi et al. 2018): drops contiguous squares instead of single activations.

    Neighbouring activations are correlated, so plain dropout hardly regularises convolutions;
    dropping whole ``block_size`` squares does. Identity in eval mode. Seeds are drawn only
    where a whole block fits, with the rate from the paper's gamma formula, and the kept
    activations are rescaled so the expected sum is unchanged.
    """

    def __init__(self, drop_prob: float = 0.1, block_size: int = 7) -> None:
        super().__init__()
        self.drop_prob = drop_prob
        self.block_size = block_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.drop_prob <= 0:
            return x
        n, c, h, w = x.shape
        block = min(self.block_size, h, w)
        valid_h, valid_w = h - block + 1, w - block + 1
        gamma = self.drop_prob / block**2 * (h * w) / (valid_h * valid_w)
        # The mask stays float32 even under autocast: a float16 sum of a large mask overflows.
        seeds = (torch.rand(n, c, valid_h, valid_w, device=x.device) < gamma).float()
        # Pad seeds back to HxW so each one sits at the centre of the block it grows into.
        seeds = F.pad(seeds, (block // 2, (block - 1) // 2, block // 2, (block - 1) // 2))
        dropped = F.max_pool2d(seeds, block, stride=1, padding=block // 2)[..., :h, :w]
        keep = 1.0 - dropped
        scale = keep.numel() / keep.sum().clamp_min(1.0)
        return x * (keep * scale).to(x.dtype)

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}, block_size={self.block_size}"


def make_upsample(in_channels: int, out_channels: int, mode: str) -> nn.Module:
    """A x2 upsampling that also maps ``in_channels`` to ``out_channels``.

    ``transpose``: 2x2 stride-2 transposed convolution (the U-Net paper's up-convolution).
    ``bilinear``: bilinear resize, then a 1x1 convolution for the channels.
    ``nearest``: nearest resize, then a 3x3 ConvBNReLU; resize-then-convolve avoids the
    checkerboard artifacts of transposed convolutions (Odena et al. 2016).
    """
    if mode == "transpose":
        return nn.ConvTranspose2d(in_channels, out_channels, 2, stride=2)
    if mode == "bilinear":
        return nn.Sequential(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                             nn.Conv2d(in_channels, out_channels, 1))
    if mode == "nearest":
        return nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"),
                             ConvBNReLU(in_channels, out_channels))
    raise ValueError(f"unknown upsampling mode {mode!r}; choose from {', '.join(UP_MODES)}")
