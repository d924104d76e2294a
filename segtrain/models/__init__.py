"""The model zoo: every architecture registered by name, with its paper and default options.

>>> model = build_model("unet", base_channels=32)
>>> model.segkit_name, model.segkit_kwargs["depth"]
('unet', 4)

Each model's ``forward`` returns logits ``(N, num_classes, H, W)``; a model built with
``deep_supervision=True`` returns, in training mode, a list of full-resolution logits with
the main output first. ``model.required_divisor`` is what H and W must be divisible by.

Decoders on pretrained encoders (:data:`ENCODER_MODELS`): ``build_model("unet",
encoder="resnet34", encoder_weights="imagenet")`` builds the U-Net decoder on timm's ResNet-34
(:mod:`segtrain.models.encoders`); so do ``attention-unet``, ``unetpp``, ``linknet`` and ``fpn``.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from itertools import chain
from typing import Any

import torch
from torch import nn
from torch.func import functional_call
from torch.utils.flop_counter import FlopCounterMode

from segtrain.errors import SegtrainError
from segtrain.models.attention_unet import AttentionUNet
from segtrain.models.base import SegModel
from segtrain.models.dilated_unet import DilatedUNet
from segtrain.models.encoder_fpn import EncoderFPN
from segtrain.models.encoder_linknet import EncoderLinkNet
from segtrain.models.encoder_unet import EncoderAttentionUNet, EncoderUNet
from segtrain.models.encoder_unetpp import EncoderUNetPlusPlus
from segtrain.models.linknet import LinkNet
from segtrain.models.resunetpp import ResUNetPlusPlus
from segtrain.models.resunetpp_cbam import ResUNetPlusPlusCBAM
from segtrain.models.sa_unet import SAUNet
from segtrain.models.segnet import SegNet
from segtrain.models.unet import UNet
from segtrain.models.unet_res_aspp_cbam import ResASPPCBAMUNet
from segtrain.models.unet_strided import StridedUNet
from segtrain.models.unetpp import UNetPlusPlus

__all__ = ["ENCODER_MODELS", "MODELS", "ModelSpec", "SegModel", "build_model", "count_macs",
           "count_parameters", "model_info", "model_names"]


@dataclass(frozen=True)
class ModelSpec:
    name: str
    cls: type[SegModel]
    paper: str
    defaults: dict[str, Any]


def _spec(cls: type[SegModel], paper: str) -> ModelSpec:
    # The constructor signature is the single source of the options and their defaults.
    params = list(inspect.signature(cls.__init__).parameters.values())[1:]
    return ModelSpec(cls.segkit_name, cls, paper, {p.name: p.default for p in params})


MODELS: dict[str, ModelSpec] = {spec.name: spec for spec in (
    _spec(UNet, "Ronneberger et al. 2015, U-Net (MICCAI)"),
    _spec(StridedUNet, "U-Net with stride-2 conv downsampling"),
    _spec(AttentionUNet, "Oktay et al. 2018, Attention U-Net (MIDL)"),
    _spec(UNetPlusPlus, "Zhou et al. 2018, UNet++ (DLMIA; TMI 2019)"),
    _spec(ResUNetPlusPlus, "Jha et al. 2019, ResUNet++ (IEEE ISM)"),
    _spec(ResUNetPlusPlusCBAM, "ResUNet++ + CBAM (Woo et al. 2018), deep sup."),
    _spec(SegNet, "Badrinarayanan et al. 2015, SegNet (TPAMI 2017)"),
    _spec(LinkNet, "Chaurasia & Culurciello 2017, LinkNet (VCIP)"),
    _spec(DilatedUNet, "Sun et al. 2019, U-Net with dilation conv (ICMLA)"),
    _spec(ResASPPCBAMUNet, "U-Net + residual units, ASPP, CBAM, attention gates"),
    _spec(SAUNet, "Guo et al. 2020, SA-UNet (ICPR)"),
)}


# Decoders on any timm encoder (``encoder=NAME``); fpn exists only on one.
ENCODER_MODELS: dict[str, ModelSpec] = {spec.name: spec for spec in (
    _spec(EncoderUNet, "U-Net decoder on a timm encoder (segmentation_models.pytorch's Unet)"),
    _spec(EncoderAttentionUNet, "Attention U-Net decoder on a timm encoder"),
    _spec(EncoderUNetPlusPlus, "UNet++ decoder on a timm encoder (smp's UnetPlusPlus)"),
    _spec(EncoderLinkNet, "LinkNet decoder on a timm encoder (ResNet-18 in the paper)"),
    _spec(EncoderFPN, "Kirillov et al. 2019, FPN semantic branch on a timm encoder"),
)}


def model_names() -> list[str]:
    """Every name ``build_model`` takes."""
    return list(dict.fromkeys([*MODELS, *ENCODER_MODELS]))


def model_spec(name: str, encoder: str | None = None) -> ModelSpec:
    """The registry entry ``build_model`` uses: the encoder decoder when an encoder is given
    (or the model exists only on one), else the model trained from scratch."""
    if encoder is not None or name not in MODELS:
        spec = ENCODER_MODELS.get(name)
        if spec is None:
            valid = ", ".join(ENCODER_MODELS) if encoder is not None else ", ".join(model_names())
            what = "with an --encoder" if encoder is not None else ""
            raise SegtrainError(f"unknown model {name!r}{' ' + what if what else ''}; choose from: {valid}")
        return spec
    return MODELS[name]


def build_model(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered model; ``kwargs`` override its defaults (``encoder=NAME``: the
    decoder on a timm encoder, :data:`ENCODER_MODELS`).

    The model carries ``segkit_name`` and ``segkit_kwargs`` (every option, resolved), so a
    checkpoint can rebuild it with ``build_model(model.segkit_name, **model.segkit_kwargs)``.
    Options that only pick initial weights (``encoder_weights``) are recorded as None there,
    since the state dict holds the weights and the file may be gone where the checkpoint is
    loaded; ``model.segkit_init`` keeps what was given.
    """
    spec = model_spec(name, kwargs.get("encoder"))
    unknown = [key for key in kwargs if key not in spec.defaults]
    if unknown:
        raise SegtrainError(f"model {name!r} has no option {', '.join(map(repr, unknown))}; "
                            f"valid options: {', '.join(spec.defaults)}")
    resolved = {**spec.defaults, **kwargs}
    model = spec.cls(**resolved)
    init_only = spec.cls.init_only_options
    model.segkit_name = name
    model.segkit_kwargs = {k: (None if k in init_only else v) for k, v in resolved.items()}
    model.segkit_init = {k: resolved[k] for k in init_only}
    return model


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (all of them; every parameter of these models is trainable)."""
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, size: tuple[int, int] = (256, 256), in_channels: int = 3) -> int:
    """Multiply-accumulates of one eval-mode forward pass on a ``1 x in_channels x H x W`` input.

    Counted by ``torch.utils.flop_counter.FlopCounterMode`` (MACs = FLOPs / 2; convolutions and
    matrix products only, so pooling, norms and activations are not included). The pass runs
    on the meta device with meta stand-ins for the weights: instant, no memory, and the model
    itself is untouched (its train/eval flags are restored).
    """
    meta = {name: torch.empty_like(t, device="meta")
            for name, t in chain(model.named_parameters(), model.named_buffers())}
    x = torch.empty(1, in_channels, *size, device="meta")
    modes = {module: module.training for module in model.modules()}
    model.eval()  # deep supervision heads and DropBlock are training-only
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            functional_call(model, meta, (x,))
    finally:
        for module, mode in modes.items():
            module.training = mode
    return counter.get_total_flops() // 2


def model_info(name: str, size: tuple[int, int] = (256, 256), **kwargs: Any) -> dict[str, Any]:
    """Name, paper, parameters and MACs of a model at ``size``; built on the meta device, so instant.

    Returns ``{"name", "paper", "params", "macs", "size", "required_divisor", "kwargs"}``;
    ``macs`` is None when ``size`` is not divisible by ``required_divisor``.
    """
    with torch.device("meta"):
        model = build_model(name, **kwargs)
    divisor = model.required_divisor
    fits = size[0] % divisor == 0 and size[1] % divisor == 0
    return {
        "name": name,
        "paper": model_spec(name, kwargs.get("encoder")).paper,
        "params": count_parameters(model),
        "macs": count_macs(model, size, model.in_channels) if fits else None,
        "size": list(size),
        "required_divisor": divisor,
        "kwargs": model.segkit_kwargs,
    }
