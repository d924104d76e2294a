"""LinkNet (Chaurasia & Culurciello 2017): a ResNet-18 encoder linked to a light decoder by addition."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from segtrain.errors import SegtrainError
from segtrain.models.base import SegModel, check_int

log = logging.getLogger(__name__)


class BasicBlock(nn.Module):
    """ResNet basic block. Attribute names follow torchvision so its state dicts load as they are."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNet18Encoder(nn.Module):
    """ResNet-18 (He et al. 2016) without its pooling and classifier; returns layer1..layer4.

    Written here because torchvision is not a dependency; the module names match
    ``torchvision.models.resnet18`` so an ImageNet state dict (``fc.*`` ignored) loads.
    """

    def __init__(self, in_channels: int = 3, base_channels: int = 64) -> None:
        super().__init__()
        widths = [base_channels * 2**i for i in range(4)]
        self.conv1 = nn.Conv2d(in_channels, widths[0], 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.layer1 = self._layer(widths[0], widths[0], stride=1)
        self.layer2 = self._layer(widths[0], widths[1], stride=2)
        self.layer3 = self._layer(widths[1], widths[2], stride=2)
        self.layer4 = self._layer(widths[2], widths[3], stride=2)

    @staticmethod
    def _layer(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
        return nn.Sequential(BasicBlock(in_channels, out_channels, stride),
                             BasicBlock(out_channels, out_channels))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        features = []
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = layer(x)
            features.append(x)
        return features


def load_encoder_weights(encoder: nn.Module, path: str | Path) -> None:
    """Load a local state dict into ``encoder``; anything unusable is a SegtrainError naming the file.

    Accepts a plain state dict or one wrapped as ``{"state_dict": ...}``, keys with or without
    an ``encoder.`` prefix, and ignores a classifier (``fc.*``). Never downloads anything.
    """
    path = Path(path)
    if not path.is_file():
        raise SegtrainError(f"encoder weights {path}: no such file (pretrained weights are never "
                            "downloaded; give the path of a local ResNet-18 state dict)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle, zip and torch errors all mean "not a state dict we can read"
        raise SegtrainError(f"encoder weights {path}: cannot be read as a torch state dict "
                            f"({exc})") from exc
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise SegtrainError(f"encoder weights {path}: not a state dict (a mapping of names to tensors)")
    state = {key.removeprefix("encoder."): value for key, value in state.items()
             if not key.startswith(("fc.", "encoder.fc."))}
    expected = encoder.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
                  for k, v in expected.items() if k in state and state[k].shape != v.shape]
    if missing or unexpected or mismatched:
        details = []
        if missing:
            details.append(f"missing {len(missing)} keys (e.g. {', '.join(missing[:3])})")
        if unexpected:
            details.append(f"{len(unexpected)} unexpected keys (e.g. {', '.join(unexpected[:3])})")
        if mismatched:
            details.append(f"shape mismatches (file vs model): {'; '.join(mismatched[:3])}")
        raise SegtrainError(f"encoder weights {path}: not a ResNet-18 encoder for this model: "
                            + "; ".join(details))
    encoder.load_state_dict(state)
    log.info("loaded encoder weights from %s", path)


class LinkNetDecoderBlock(nn.Sequential):
    """1x1 conv m -> m/4, 3x3 full convolution (x``stride``) m/4 -> m/4, 1x1 conv m/4 -> n; each BN-ReLU.

    The 4x bottleneck is what keeps the LinkNet decoder cheap.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 2) -> None:
        mid = max(in_channels // 4, 1)
        super().__init__(
            nn.Conv2d(in_channels, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
            nn.ConvTranspose2d(mid, mid, 3, stride=stride, padding=1, output_padding=stride - 1,
                               bias=False),
            nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
            nn.Conv2d(mid, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True),
        )


def linknet_head(channels: int, num_classes: int) -> nn.Sequential:
    """The paper's head from stride 4 to full resolution: full convolution x2, 3x3 convolution,
    full convolution x2 to the logits."""
    half = max(channels // 2, 1)
    return nn.Sequential(
        nn.ConvTranspose2d(channels, half, 3, stride=2, padding=1, output_padding=1, bias=False),
        nn.BatchNorm2d(half), nn.ReLU(inplace=True),
        nn.Conv2d(half, half, 3, padding=1, bias=False), nn.BatchNorm2d(half), nn.ReLU(inplace=True),
        nn.ConvTranspose2d(half, num_classes, 2, stride=2),
    )


class LinkNet(SegModel):
    """LinkNet: Chaurasia & Culurciello, VCIP 2017.

    "LinkNet: Exploiting Encoder Representations for Efficient Semantic Segmentation".

    Encoder: ResNet-18 (7x7/2 conv, 3x3/2 max-pool, four stages of two basic blocks). Decoder:
    one LinkNetDecoderBlock per encoder stage, the output of each *added* to the encoder
    feature of the next finer stage (no concatenation, so the decoder stays narrow), then
    a 3x3 full convolution x2, a 3x3 convolution and a 2x2 full convolution x2 to the logits.
    ``encoder_weights``: optional path to a local ResNet-18 state dict (e.g. torchvision's
    ImageNet weights saved with ``torch.save``); needs ``base_channels=64``, ``in_channels=3``.
    Widths 64-128-256-512 (required divisor 32): 11.53M parameters (the paper: 11.5M).
    """

    segkit_name = "linknet"
    init_only_options = ("encoder_weights",)

    def __init__(self, in_channels: int = 3, num_classes: int = 1, base_channels: int = 64,
                 encoder_weights: str | None = None) -> None:
        super().__init__(in_channels, num_classes, required_divisor=32)
        b = check_int(self.segkit_name, "base_channels", base_channels)
        self.encoder = ResNet18Encoder(in_channels, b)
        if encoder_weights is not None:
            load_encoder_weights(self.encoder, encoder_weights)
        self.decoder4 = LinkNetDecoderBlock(8 * b, 4 * b)
        self.decoder3 = LinkNetDecoderBlock(4 * b, 2 * b)
        self.decoder2 = LinkNetDecoderBlock(2 * b, b)
        self.decoder1 = LinkNetDecoderBlock(b, b, stride=1)  # layer1 does not downsample
        self.head = linknet_head(b, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        e1, e2, e3, e4 = self.encoder(x)
        d = self.decoder4(e4) + e3
        d = self.decoder3(d) + e2
        d = self.decoder2(d) + e1
        return self.head(self.decoder1(d))
