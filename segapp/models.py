"""The model page's side: trained runs, uploads decoded safely, and predictions through
``segtrain.predict``'s own path (same resize, normalisation and threshold)."""

from __future__ import annotations

import threading
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from segprep.errors import DecodeError, SegprepError
from segprep.imageio import decode_image

MAX_UPLOAD_BYTES = 25 * 1024 * 1024
MAX_UPLOAD_PIXELS = 40_000_000     # 40 MP: a photograph, not a decompression bomb
KEPT_PREDICTIONS = 16              # probability maps kept for the threshold slider


@dataclass
class Prediction:
    image: np.ndarray          # RGB
    probability: np.ndarray    # (H, W) float32
    threshold: float
    truth: np.ndarray | None   # 0/1 ground truth where the image came from the manifest


def list_runs(runs: Path | None) -> list[str]:
    """Run folders under ``runs`` that hold a best.pt, by name."""
    if runs is None or not Path(runs).is_dir():
        return []
    return sorted(p.parent.name for p in Path(runs).glob("*/best.pt"))


def decode_upload(name: str, data: bytes) -> np.ndarray:
    """An uploaded file as RGB, through segprep's decoder, or a SegprepError saying why not."""
    if len(data) > MAX_UPLOAD_BYTES:
        raise SegprepError(f"{name}: {len(data) / 2**20:.1f} MB is over the {MAX_UPLOAD_BYTES // 2**20} MB "
                           f"upload limit")
    try:
        return decode_image(Path(Path(name).name or "upload"), MAX_UPLOAD_PIXELS, data=data).array
    except DecodeError as exc:
        raise SegprepError(str(exc)) from None


class Models:
    """Loaded runs (one at a time is kept) and recent predictions, shared by requests."""

    def __init__(self, runs: Path | None, device: str = "auto") -> None:
        self.runs = Path(runs) if runs is not None else None
        self.device = device
        self._lock = threading.Lock()
        self._loaded: tuple[str, object] | None = None
        self._predictions: OrderedDict[str, Prediction] = OrderedDict()

    def _model(self, run: str):
        if run not in list_runs(self.runs):
            raise SegprepError(f"unknown run {run!r}; runs under {self.runs}: "
                               f"{', '.join(list_runs(self.runs)) or 'none'}")
        if self._loaded is None or self._loaded[0] != run:
            from segtrain.predict import load_checkpoint

            self._loaded = (run, load_checkpoint(self.runs / run / "best.pt", self.device))
        return self._loaded[1]

    def predict(self, run: str, image: np.ndarray, truth: np.ndarray | None = None) -> tuple[str, Prediction]:
        from segtrain.predict import foreground_probability, image_logits

        with self._lock:  # one model in memory, one forward at a time
            model = self._model(run)
            probability = foreground_probability(image_logits(model, [image])[0])
            key = uuid.uuid4().hex
            self._predictions[key] = Prediction(image, probability, float(model.threshold), truth)
            while len(self._predictions) > KEPT_PREDICTIONS:
                self._predictions.popitem(last=False)
        return key, self._predictions[key]

    def get(self, key: str) -> Prediction:
        prediction = self._predictions.get(key)
        if prediction is None:
            raise SegprepError("that prediction has expired; predict again")
        return prediction
