"""Checkpoints that rebuild their model alone and load with ``torch.load(weights_only=True)``.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts (nothing pickled
beyond what the safe loader accepts): the model's registry name and resolved constructor
arguments, its weights, the run config, the epoch, the optimizer/scheduler/grad-scaler
states, the training history and every RNG state (numpy's and Python's converted to lists),
so ``--resume`` continues exactly where a killed run stopped.
"""

from __future__ import annotations

import pickle
import random
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from segprep.work import atomic_path
from segtrain.errors import SegtrainError

FORMAT = "segkit-checkpoint"
VERSION = 1
REQUIRED_KEYS = ("format", "model_name", "model_kwargs", "model_state")


def versions() -> dict[str, str]:
    from segtrain import __version__

    # str(): torch.__version__ is a TorchVersion, which the weights-only loader refuses
    return {"torch": str(torch.__version__), "segkit": str(__version__), "python": sys.version.split()[0]}


# ----------------------------------------------------------------------------- RNG states

def rng_state() -> dict[str, Any]:
    """Every RNG the training loop draws from, in types ``weights_only`` loading accepts."""
    np_state = np.random.get_state()
    py_version, py_internal, py_gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "python": [py_version, list(py_internal), py_gauss],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"].cpu())
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    py_version, py_internal, py_gauss = state["python"]
    random.setstate((py_version, tuple(py_internal), py_gauss))
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = state["cuda"]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all([s.cpu() for s in cuda_states])


# ----------------------------------------------------------------------------- save / load

def unwrap(model: nn.Module) -> nn.Module:
    """The plain module under DDP and ``torch.compile`` wrappers (whose state-dict keys carry
    ``module.`` / ``_orig_mod.`` prefixes)."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        else:
            return model


def save_checkpoint(path: Path, state: dict[str, Any]) -> Path:
    """Write atomically: a kill during the write leaves the previous file intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {"format": FORMAT, "version": VERSION, **state}
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return path


def read_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint safely (``weights_only=True``) and check it is a segkit one."""
    path = Path(path)
    if not path.is_file():
        raise SegtrainError(f"{path}: checkpoint not found")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        # The safe loader met a Python object (a class, a function) it will not build: such a
        # file can run code when loaded, so it is refused, never loaded another way.
        found = re.search(r"(?:Unsupported global|GLOBAL)\s*:?\s*(?:GLOBAL\s+)?([\w.]+)", str(exc))
        what = f" ({found.group(1)})" if found else ""
        raise SegtrainError(f"{path}: holds Python objects{what}, not only tensors and plain data; "
                            f"a file like this can run code when loaded, so it is refused. "
                            f"Checkpoints from `segtrain run` hold no code") from None
    except Exception as exc:  # truncated file, not a torch file
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        raise SegtrainError(f"{path}: not a readable segkit checkpoint ({type(exc).__name__}: "
                            f"{lines[0] if lines else 'unreadable'})") from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != FORMAT:
        raise SegtrainError(f"{path}: not a segkit checkpoint (no format={FORMAT!r} entry); "
                            f"checkpoints come from `segtrain run` (best.pt, last.pt)")
    missing = [key for key in REQUIRED_KEYS if key not in checkpoint]
    if missing:
        raise SegtrainError(f"{path}: checkpoint lacks {', '.join(missing)}")
    return checkpoint


def build_from_checkpoint(checkpoint: dict[str, Any], source: str = "checkpoint") -> nn.Module:
    from segtrain.models import build_model

    model = build_model(checkpoint["model_name"], **checkpoint["model_kwargs"])
    try:
        model.load_state_dict(checkpoint["model_state"])
    except RuntimeError as exc:
        raise SegtrainError(f"{source}: weights do not fit model {checkpoint['model_name']} "
                            f"{checkpoint['model_kwargs']} ({str(exc).splitlines()[0]})") from None
    return model


def load_model(path: Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model of a checkpoint (in eval mode, on ``device``) from the file alone."""
    checkpoint = read_checkpoint(path)
    model = build_from_checkpoint(checkpoint, str(path))
    return model.to(device).eval(), checkpoint
