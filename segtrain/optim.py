"""The optimizer and the learning-rate schedule of a run, by name (``--optimizer``,
``--scheduler``), and the parameter groups of a pretrained encoder."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from segtrain.errors import SegtrainError


def parameter_groups(model: nn.Module, lr: float, encoder_lr: float) -> list[dict[str, Any]]:
    """The optimizer's parameter groups: a pretrained encoder learns at ``encoder_lr`` x ``lr``
    (fine-tuning: its ImageNet features need small steps, the new decoder large ones)."""
    encoder = getattr(model, "encoder", None)
    if encoder is None or not hasattr(model, "segkit_normalize"):
        return [{"params": list(model.parameters()), "lr": lr}]
    own = {id(p) for p in encoder.parameters()}
    # the decoder's group first: history.csv records param_groups[0]'s rate as the run's lr
    return [{"params": [p for p in model.parameters() if id(p) not in own], "lr": lr},
            {"params": list(encoder.parameters()), "lr": lr * encoder_lr}]


def build_optimizer(name: str, params, lr: float, device: torch.device) -> torch.optim.Optimizer:
    # fused kernels are the fastest Adam on CUDA; the CPU keeps the default (foreach) path
    fused = {"fused": True} if device.type == "cuda" else {}
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, **fused)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=1e-4, **fused)
    if name == "nadam":
        return torch.optim.NAdam(params, lr=lr)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, nesterov=True, weight_decay=1e-4)
    raise SegtrainError(f"unknown optimizer {name!r}; valid: adam, adamw, nadam, sgd")


def build_scheduler(name: str, optimizer: torch.optim.Optimizer, epochs: int):
    """Stepped once per epoch (plateau: on the val Dice)."""
    if name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    if name == "poly":  # the DeepLab schedule
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: max(0.0, 1 - e / epochs) ** 0.9)
    if name == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=0.5, patience=5)
    if name == "none":
        return None
    raise SegtrainError(f"unknown scheduler {name!r}; valid: cosine, plateau, poly, none")
