"""``segtrain predict``: run a trained checkpoint on image files, folders or manifests.

Each input image is resized to the size the model was trained at, run through the model, and
its logits are resized back (bilinear) and thresholded, so the mask PNG (0/255) and the overlay
(the image with the predicted contour) have the input's own size and the mask stays binary.

Inputs: image files (png, jpg, bmp, tif), folders of them (not recursive), and manifests
(``.csv``: every non-excluded row, or one ``--split``; images are read from the shards).
An unreadable file is reported and skipped; the other images are still predicted.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from segprep.imageio import IMAGE_SUFFIXES, read_image
from segprep.progress import progress

from segprep.errors import SegprepError
from segtrain.errors import SegtrainError

log = logging.getLogger(__name__)

CONTOUR_BGR = (0, 255, 255)  # yellow: visible on endoscopy, dermoscopy and fundus images alike


@dataclass
class Item:
    name: str                                 # output file stem
    source: str                               # what to report: a file path or manifest:sample_id
    read: Callable[[], np.ndarray]            # -> uint8 RGB (H, W, 3)


def read_image_file(path: Path) -> np.ndarray:
    """uint8 RGB (H, W, 3) through segprep's decoder, as ingest reads images (GIF, TIFFs whose
    colour OpenCV would drop, 16-bit, palette, RGBA; the pixel limit; damaged files refused)."""
    return read_image(Path(path))


def _safe_name(text: str) -> str:
    """A file stem from a sample id or file stem: ``kvasir-seg/cju0q`` -> ``kvasir-seg__cju0q``."""
    return re.sub(r"[^\w.~+-]", "_", text.replace("/", "__")) or "image"


def _manifest_items(path: Path, split: str | None) -> Iterator[Item]:
    from segprep.manifest import active, read_manifest
    from segprep.shards import read_image

    table = active(read_manifest(path), split)
    if table.empty:
        raise SegtrainError(f"{path}: no rows that are not excluded"
                            f"{f' in split {split!r}' if split else ''}")
    root = path.parent
    for row in table.itertuples(index=False):
        shard, index = root / row.image_shard, int(row.image_index)
        yield Item(_safe_name(row.sample_id), f"{path}:{row.sample_id}",
                   lambda shard=shard, index=index: read_image(shard, index))


def collect_inputs(inputs: list[Path], split: str | None = None) -> tuple[list[Item], list[list[str]]]:
    """The images named by ``inputs``, in order, with unique output names, and the files of the
    folders that are not images ([path, reason]: reported with the unreadable ones)."""
    items: list[Item] = []
    ignored: list[list[str]] = []
    manifests = 0
    for path in map(Path, inputs):
        if not path.exists():
            raise SegtrainError(f"{path}: input not found (give image files, folders or manifest .csv files)")
        if path.is_dir():
            entries = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
            files = [p for p in entries if p.suffix.lower() in IMAGE_SUFFIXES]
            if not files:
                raise SegtrainError(f"{path}: folder holds no images ({', '.join(IMAGE_SUFFIXES)})")
            ignored += [[str(p), f"not an image by its name (expected {', '.join(IMAGE_SUFFIXES)})"]
                        for p in entries if p.suffix.lower() not in IMAGE_SUFFIXES]
            items += [Item(_safe_name(f.stem), str(f), lambda f=f: read_image_file(f)) for f in files]
        elif path.suffix.lower() == ".csv":
            manifests += 1
            items += list(_manifest_items(path, split))
        else:
            items.append(Item(_safe_name(path.stem), str(path), lambda p=path: read_image_file(p)))
    if split is not None and not manifests:
        raise SegtrainError(f"--split {split} applies to manifest inputs (.csv) only")
    seen: dict[str, int] = {}
    for item in items:  # two inputs with the same stem must not overwrite each other's outputs
        count = seen.get(item.name, 0)
        seen[item.name] = count + 1
        if count:
            item.name = f"{item.name}-{count + 1}"
    return items, ignored


def overlay(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """BGR copy of ``image`` (RGB) with the contour of ``mask`` drawn on it."""
    canvas = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
    thickness = max(1, round(min(mask.shape) / 200))
    cv2.drawContours(canvas, contours, -1, CONTOUR_BGR, thickness)
    return canvas


def write_png(path: Path, array: np.ndarray) -> None:
    ok, encoded = cv2.imencode(".png", array)
    if not ok:
        raise SegtrainError(f"{path}: could not encode the PNG")
    encoded.tofile(path)  # tofile: non-ASCII paths work everywhere


@dataclass
class Loaded:
    """A model ready to predict: prepared batches (N, 3, H, W) at ``input_size`` -> logits."""

    forward: Callable[[torch.Tensor], torch.Tensor]
    input_size: tuple[int, int]
    threshold: float
    mean: np.ndarray
    std: np.ndarray
    device: torch.device


def load_checkpoint(checkpoint: Path, device: str) -> Loaded:
    """A `segtrain run` checkpoint, on ``device`` (autocast where the trainer would use it)."""
    from segtrain.checkpoint import load_model
    from segtrain.data import resolve_normalization
    from segtrain.evaluate import forward_at_size
    from segtrain.trainer import resolve_amp, resolve_device, set_cpu_threads

    torch_device = resolve_device(device)
    if torch_device.type == "cpu":
        set_cpu_threads()
    model, ckpt = load_model(checkpoint, torch_device)
    input_size = tuple(ckpt.get("input_size") or ())
    if len(input_size) != 2:
        raise SegtrainError(f"{checkpoint}: no input_size recorded; checkpoints from `segtrain run` have one")
    mean, std = resolve_normalization(ckpt.get("normalize", "imagenet"))
    amp_dtype = resolve_amp("auto", torch_device)
    divisor = int(getattr(model, "required_divisor", 1) or 1)
    channels_last = torch_device.type == "cuda" and bool(ckpt.get("config", {}).get("channels_last"))
    if channels_last:
        model = model.to(memory_format=torch.channels_last)

    def forward(x: torch.Tensor) -> torch.Tensor:
        return forward_at_size(model, x.to(torch_device), None, divisor=divisor, amp_dtype=amp_dtype,
                               channels_last=channels_last)
    return Loaded(forward, input_size, float(ckpt.get("threshold", 0.5)), mean, std, torch_device)


def load_onnx(path: Path) -> Loaded:
    """A `segtrain export` ONNX model on onnxruntime's CPU provider; the normalisation is inside
    the graph, so the batches are raw pixels (mean 0, std 1)."""
    from segtrain.export import read_metadata, require_onnx

    require_onnx()
    import onnxruntime as ort

    meta = read_metadata(path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def forward(x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(session.run(["logits"], {"image": x.numpy()})[0])
    return Loaded(forward, tuple(meta["input_size"]), float(meta["threshold"]),
                  np.zeros(3, np.float32), np.ones(3, np.float32), torch.device("cpu"))


@torch.no_grad()
def image_logits(model: Loaded, images: list[np.ndarray]) -> list[torch.Tensor]:
    """Each RGB image's logits ``(C, H, W)`` at the image's own size: resized to the model's
    input size, normalised as in training, through the model, and resized back (bilinear).
    The one inference path of ``predict`` and of ``segkit app``."""
    from segtrain.data import image_to_tensor, resize

    x = torch.stack([image_to_tensor(resize(image, model.input_size, smooth=True), model.mean, model.std)
                     for image in images])
    logits = model.forward(x)
    return [F.interpolate(item[None].float(), size=image.shape[:2], mode="bilinear",
                          align_corners=False)[0] for image, item in zip(images, logits)]


def foreground_probability(logits: torch.Tensor) -> np.ndarray:
    """``(H, W)`` float32 foreground probability from one image's logits ``(C, H, W)``:
    the sigmoid for one channel, 1 - P(background) for several."""
    if logits.shape[0] == 1:
        return torch.sigmoid(logits[0]).cpu().numpy().astype(np.float32)
    return (1.0 - torch.softmax(logits, dim=0)[0]).cpu().numpy().astype(np.float32)


@torch.no_grad()
def predict(checkpoint: Path, inputs: list[Path], out: Path, *, threshold: float | None = None,
            device: str = "auto", split: str | None = None, batch_size: int = 8) -> dict[str, Any]:
    """Write ``out/masks/<name>.png`` (0/255), ``out/overlays/<name>.png`` and ``out/predictions.csv``.

    ``checkpoint`` is a `segtrain run` checkpoint, or an ONNX model from `segtrain export`
    (``.onnx``: run on onnxruntime, with the same resize and threshold).
    Returns ``{"written", "skipped" (list of [input, reason]), "out", "seconds", "images_per_s"}``.
    """
    from segtrain.evaluate import foreground

    if batch_size < 1:
        raise SegtrainError(f"batch size must be >= 1; got {batch_size}")
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise SegtrainError(f"{checkpoint}: model file not found (a best.pt of `segtrain run`, or "
                            f"a .onnx of `segtrain export`)")
    items, skipped = collect_inputs(inputs, split)
    model = load_onnx(checkpoint) if checkpoint.suffix.lower() == ".onnx" else load_checkpoint(checkpoint, device)
    threshold = float(model.threshold if threshold is None else threshold)
    if not 0.0 < threshold < 1.0:
        raise SegtrainError(f"threshold must be between 0 and 1; got {threshold}")

    out = Path(out)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    (out / "overlays").mkdir(parents=True, exist_ok=True)
    records: list[dict[str, Any]] = []
    start = time.perf_counter()
    bar = progress(total=len(items), desc="predict", unit="image")
    for first in range(0, len(items), batch_size):
        batch: list[tuple[Item, np.ndarray]] = []
        for item in items[first:first + batch_size]:
            try:
                batch.append((item, item.read()))
            except Exception as exc:  # noqa: BLE001  one bad image never stops the others
                reason = str(exc) if isinstance(exc, SegprepError) else f"{type(exc).__name__}: {exc}"
                reason = reason.removeprefix(f"{item.source}: ")  # the source is reported beside it
                log.info("skipping %s: %s", item.source, reason)  # info: the result lists it, the CLI prints it
                skipped.append([item.source, reason])
        bar.update(len(items[first:first + batch_size]))
        if not batch:
            continue
        for (item, image), resized in zip(batch, image_logits(model, [image for _, image in batch])):
            height, width = image.shape[:2]
            mask = foreground(resized[None], threshold)[0].cpu().numpy().astype(np.uint8)
            write_png(out / "masks" / f"{item.name}.png", mask * 255)
            write_png(out / "overlays" / f"{item.name}.png", overlay(image, mask))
            records.append({"name": item.name, "input": item.source, "height": height, "width": width,
                            "fg_fraction": float(mask.mean())})
    bar.close()
    seconds = time.perf_counter() - start
    pd.DataFrame(records, columns=["name", "input", "height", "width", "fg_fraction"]).to_csv(
        out / "predictions.csv", index=False, float_format="%.6g", lineterminator="\n")
    if not records:
        raise SegtrainError(f"no image could be read ({len(skipped)} skipped; first: {skipped[0][0]}: "
                            f"{skipped[0][1]})" if skipped else "no input images")
    return {"written": len(records), "skipped": skipped, "out": str(out), "seconds": seconds,
            "images_per_s": len(records) / seconds if seconds > 0 else None}
