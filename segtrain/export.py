"""``segtrain export``: a trained run as an ONNX (or TorchScript) model, checked against PyTorch.

The exported graph takes what a deployment has at hand: ``image``, float32 ``(N, 3, H, W)`` RGB
pixels in 0-255, and returns ``logits`` ``(N, C, H, W)``. The run's normalisation is inside the
graph (no mean/std for the user to get wrong); the size the model was trained at, the
threshold, the classes and how to read the output are in the ONNX metadata (``segkit``, JSON)
or, for TorchScript, in the archive's ``segkit.json``. Batch, height and width are dynamic where
the architecture allows it (sizes that are multiples of its ``required_divisor``), which the
export checks at a second size; otherwise the model is exported at its training size, and the
metadata says so.

Parity is checked at export time with onnxruntime (TorchScript: the reloaded module) on random
pixels and on real images of the run's manifest (its test split, else val): the largest absolute
logit difference and the share of pixels whose mask agrees. Above ``tolerance``, or under
``MIN_AGREEMENT``, the export fails and the file is removed.
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from segprep.work import atomic_path
from segtrain.errors import SegtrainError

log = logging.getLogger(__name__)

FORMATS = ("onnx", "torchscript")
OPSET = 17
MIN_AGREEMENT = 0.999  # share of mask pixels that must agree between PyTorch and the export


class Deployed(nn.Module):
    """A segkit model with its normalisation in front: raw RGB pixels in, main logits out."""

    def __init__(self, model: nn.Module, mean: np.ndarray, std: np.ndarray) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        output = self.model((image - self.mean) / self.std)
        return output[0] if isinstance(output, (list, tuple)) else output


def find_checkpoint(run: Path, which: str = "best") -> Path:
    """``run`` as a checkpoint file: a .pt file itself, or a run folder's best.pt / last.pt."""
    run = Path(run)
    if run.is_file():
        return run
    if not run.is_dir():
        raise SegtrainError(f"{run}: no such run folder or checkpoint (give a `segtrain run` folder "
                            f"or its best.pt / last.pt)")
    path = run / f"{which}.pt"
    if not path.is_file():
        found = sorted(p.name for p in run.glob("*.pt"))
        raise SegtrainError(f"{run}: no {which}.pt (a finished `segtrain run` folder has best.pt"
                            f"{'; found ' + ', '.join(found) if found else ''})")
    return path


def load_deployed(checkpoint: Path) -> tuple[Deployed, dict[str, Any]]:
    """The checkpoint's model with its normalisation, in eval mode on the CPU, and the facts a
    deployment needs (the metadata written beside the graph)."""
    from segtrain.checkpoint import load_model
    from segtrain.data import resolve_normalization

    model, ckpt = load_model(checkpoint, "cpu")
    input_size = list(ckpt.get("input_size") or [])
    if len(input_size) != 2:
        raise SegtrainError(f"{checkpoint}: no input_size recorded; checkpoints from `segtrain run` have one")
    mean, std = resolve_normalization(ckpt.get("normalize", "imagenet"))
    deployed = Deployed(model, mean, std).eval()
    meta = {"format": "segkit-deployed", "version": 1, "model": ckpt["model_name"],
            "model_kwargs": ckpt["model_kwargs"], "input_size": input_size,
            "required_divisor": int(getattr(model, "required_divisor", 1) or 1),
            "num_classes": int(getattr(model, "num_classes", 1)),
            "threshold": float(ckpt.get("threshold", 0.5)),
            "input": "image: float32 (N, 3, H, W), RGB pixels 0-255 (normalisation is inside)",
            "output": "logits: float32 (N, C, H, W); C=1: foreground where sigmoid > threshold, "
                      "else argmax > 0",
            "normalize_inside": {"mean": [float(v) for v in mean], "std": [float(v) for v in std]},
            "epoch": ckpt.get("epoch"), "source": str(checkpoint)}
    return deployed, meta


def require_onnx() -> None:
    """ONNX export and inference need onnx and onnxruntime (the ``export`` extra)."""
    import importlib.util

    missing = [name for name in ("onnx", "onnxruntime") if importlib.util.find_spec(name) is None]
    if missing:
        raise SegtrainError(f"ONNX needs {' and '.join(missing)}, which are not installed: "
                            f"pip install 'segkit[export]' (or use --format torchscript)")


def export_model(run: Path, out: Path, *, fmt: str = "onnx", which: str = "best",
                 tolerance: float = 1e-3, manifest: Path | None = None, real_images: int = 8,
                 opset: int = OPSET) -> dict[str, Any]:
    """Export ``run`` (folder or checkpoint) to ``out``; see the module docstring. Returns the
    report: format, dynamic (or why not), parity figures, seconds."""
    if fmt not in FORMATS:
        raise SegtrainError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if fmt == "onnx":
        require_onnx()
    started = time.perf_counter()
    checkpoint = find_checkpoint(run, which)
    deployed, meta = load_deployed(checkpoint)
    out = Path(out)
    height, width = meta["input_size"]
    example = torch.rand(1, 3, height, width) * 255
    second = _second_size(meta["input_size"], meta["required_divisor"])
    with atomic_path(out) as tmp:
        dynamic, why = _write(deployed, example, tmp, fmt, meta, opset, second)
        meta["dynamic"] = dynamic
        runner = _runner(tmp, fmt)
        inputs = [("random", torch.rand(2, 3, height, width) * 255)]
        if dynamic:
            inputs.append(("random, second size", torch.rand(1, 3, *second) * 255))
        real = _real_inputs(manifest, checkpoint, meta["input_size"], real_images)
        inputs += real
        parity = [_compare(deployed, runner, name, x, meta["threshold"]) for name, x in inputs]
        worst = max(parity, key=lambda p: p["max_abs_diff"])
        bad = [p for p in parity if p["max_abs_diff"] > tolerance or p["mask_agreement"] < MIN_AGREEMENT]
        if bad:
            raise SegtrainError(
                f"{out}: the export disagrees with PyTorch on {bad[0]['inputs']}: max |logit "
                f"difference| {bad[0]['max_abs_diff']:.2e} (tolerance {tolerance:g}), mask agreement "
                f"{bad[0]['mask_agreement']:.5f} (needs {MIN_AGREEMENT}); nothing written")
        if fmt == "onnx":
            _set_metadata(tmp, meta)
    return {"out": str(out), "format": fmt, "checkpoint": str(checkpoint), "model": meta["model"],
            "input_size": meta["input_size"], "dynamic": dynamic, "static_because": why,
            "parity": parity, "max_abs_diff": worst["max_abs_diff"],
            "min_mask_agreement": min(p["mask_agreement"] for p in parity),
            "real_images": sum(p["n"] for p in parity if not p["inputs"].startswith("random")),
            "seconds": time.perf_counter() - started}


def _second_size(size: list[int], divisor: int) -> tuple[int, int]:
    """Another valid input size (to check dynamic axes): a few divisors larger, not square."""
    step = max(divisor, 8)
    return size[0] + 2 * step, size[1] + 4 * step


def _write(deployed: Deployed, example: torch.Tensor, path: Path, fmt: str, meta: dict, opset: int,
           second: tuple[int, int]) -> tuple[bool, str]:
    """Write the graph; dynamic sizes when the model keeps them (checked at ``second``),
    else static. Returns (dynamic, why not)."""
    if fmt == "torchscript":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer warnings about shape checks in Python
            traced = torch.jit.trace(deployed, example, check_trace=False)
        torch.jit.save(traced, str(path))
        dynamic, why = _check_second_size(deployed, _runner(path, fmt), second)
        torch.jit.save(traced, str(path), _extra_files={"segkit.json": json.dumps({**meta, "dynamic": dynamic})})
        return dynamic, why
    try:
        _onnx_export(deployed, example, path, opset, dynamic=True)
        dynamic, why = _check_second_size(deployed, _runner(path, fmt), second)
    except Exception as exc:  # noqa: BLE001  an operator without dynamic shapes: go static
        dynamic, why = False, f"dynamic export failed: {str(exc).splitlines()[0][:160]}"
    if not dynamic:
        log.info("exporting at the fixed size %s: %s", meta["input_size"], why)
        try:
            _onnx_export(deployed, example, path, opset, dynamic=False)
        except Exception as exc:  # noqa: BLE001  the exporter's own errors: name the model and why
            raise SegtrainError(f"{meta['model']} cannot be exported to ONNX: "
                                f"{str(exc).splitlines()[0][:200]}") from None
    return dynamic, why


def _onnx_export(deployed: Deployed, example: torch.Tensor, path: Path, opset: int, dynamic: bool) -> None:
    axes = {0: "batch", 2: "height", 3: "width"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript-based exporter's deprecation and tracer notes
        try:
            # the TorchScript-based exporter first: seconds where torch.export takes minutes
            torch.onnx.export(deployed, (example,), str(path), input_names=["image"],
                              output_names=["logits"], opset_version=opset, dynamo=False,
                              dynamic_axes={"image": axes, "logits": axes} if dynamic else None)
        except Exception as exc:  # noqa: BLE001  an operator it cannot trace, or a torch without it
            log.info("TorchScript-based export failed (%s); trying torch.export",
                     str(exc).splitlines()[0][:120])
            dims = {0: torch.export.Dim("batch"), 2: torch.export.Dim.AUTO, 3: torch.export.Dim.AUTO}
            torch.onnx.export(deployed, (example,), str(path), input_names=["image"],
                              output_names=["logits"], opset_version=opset,
                              dynamic_shapes={"image": dims} if dynamic else None)


def _check_second_size(deployed: Deployed, runner, second: tuple[int, int]) -> tuple[bool, str]:
    x = torch.rand(1, 3, *second) * 255
    try:
        got = runner(x)
    except Exception as exc:  # noqa: BLE001  the runtime refuses the other size: static graph
        return False, f"at {second[0]}x{second[1]} the exported graph fails ({str(exc).splitlines()[0][:120]})"
    with torch.no_grad():
        want = deployed(x).numpy()
    if got.shape != want.shape or float(np.abs(got - want).max()) > 1e-2:
        return False, f"at {second[0]}x{second[1]} the exported graph gives other logits (sizes baked in)"
    return True, ""


def _runner(path: Path, fmt: str):
    """A function: float32 tensor -> logits (numpy), through the exported file."""
    if fmt == "torchscript":
        module = torch.jit.load(str(path), map_location="cpu").eval()

        def run_script(x: torch.Tensor) -> np.ndarray:
            with torch.no_grad():
                return module(x).numpy()
        return run_script
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return lambda x: session.run(["logits"], {"image": x.numpy()})[0]


def _compare(deployed: Deployed, runner, name: str, x: torch.Tensor, threshold: float) -> dict[str, Any]:
    with torch.no_grad():
        want = deployed(x).numpy()
    got = runner(x)
    if want.shape[1] == 1:
        cut = np.log(threshold / (1 - threshold))
        agree = float(((want > cut) == (got > cut)).mean())
    else:
        agree = float((want.argmax(1) == got.argmax(1)).mean())
    return {"inputs": name, "n": int(x.shape[0]), "max_abs_diff": float(np.abs(want - got).max()),
            "mask_agreement": agree}


def _real_inputs(manifest: Path | None, checkpoint: Path, size: list[int], n: int
                 ) -> list[tuple[str, torch.Tensor]]:
    """Up to ``n`` real images of the run's manifest (test split, else val), at the model's size."""
    from segprep.manifest import active, read_manifest
    from segprep.shards import read_image
    from segtrain.checkpoint import read_checkpoint
    from segtrain.data import resize

    if n <= 0:
        return []
    if manifest is None:
        manifest = read_checkpoint(checkpoint).get("config", {}).get("manifest")
    if not manifest or not Path(manifest).is_file():
        log.warning("no manifest to take real images from (%s); parity on random pixels only", manifest)
        return []
    manifest = Path(manifest)
    table = read_manifest(manifest)
    rows = active(table, "test")
    rows = rows if len(rows) else active(table, "val")
    images = [resize(read_image(manifest.parent / row.image_shard, int(row.image_index)), tuple(size), smooth=True)
              for row in rows.head(n).itertuples()]
    if not images:
        return []
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float().contiguous()
    return [(f"{len(images)} real images of {manifest.name}", x)]


def _set_metadata(path: Path, meta: dict[str, Any]) -> None:
    import onnx

    model = onnx.load(str(path))
    entry = model.metadata_props.add()
    entry.key, entry.value = "segkit", json.dumps(meta)
    onnx.save(model, str(path))


def read_metadata(path: Path) -> dict[str, Any]:
    """The ``segkit`` metadata of an exported ONNX model."""
    import onnxruntime as ort

    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001  onnxruntime raises its own types for a bad file
        raise SegtrainError(f"{path}: not a readable ONNX model ({str(exc).splitlines()[0][:160]})") from None
    text = session.get_modelmeta().custom_metadata_map.get("segkit")
    if not text:
        raise SegtrainError(f"{path}: no segkit metadata; export models with `segtrain export`")
    return json.loads(text)
