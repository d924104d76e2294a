"""The options of one training run, and how they are resolved.

Precedence, lowest first: the defaults of :class:`RunConfig` < a config file (YAML or JSON,
any subset of :data:`CONFIG_KEYS`) < the options given on the command line. The resolved
config is what ``segtrain run`` writes to ``<out>/config.json`` and stores in every checkpoint,
so a run can be repeated from its folder alone.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from segtrain.errors import SegtrainError

OPTIMIZERS = ("adam", "adamw", "nadam", "sgd")
SCHEDULERS = ("cosine", "plateau", "poly", "none")
AMP_MODES = ("auto", "bf16", "fp16", "off")
DEVICES = ("auto", "cuda", "cpu")
ENCODER_BN = ("auto", "train", "frozen")


@dataclass
class RunConfig:
    """Every option of ``segtrain run``. Field names are the config-file keys."""

    manifest: str
    model: str = "unet"
    loss: str = "bce+dice"
    epochs: int = 100
    batch_size: int = 8
    lr: float = 1e-3
    optimizer: str = "adam"
    scheduler: str = "cosine"
    amp: str = "auto"               # auto: bf16 on CUDA where supported, else fp16 + GradScaler; off on CPU
    channels_last: bool = False
    compile: bool = False
    device: str = "auto"            # auto: CUDA when there is one
    workers: int = 2
    seed: int = 0
    base_channels: int | None = None  # None: the model's own default width
    deep_supervision: bool = False
    early_stop: int = 0             # stop after this many epochs without a better val Dice; 0 = never
    max_minutes: float | None = None  # wall-clock budget for training; None = no limit
    out: str | None = None          # None: runs/<model>-<loss>
    resume: bool = False
    force: bool = False             # replace an earlier run in ``out`` (else an error)
    size: list[int] | None = None   # [H, W]; needed for manifests whose samples vary in size
    model_kwargs: dict = field(default_factory=dict)
    loss_kwargs: dict = field(default_factory=dict)
    # auto: what the encoder's weights expect (its timm config), ImageNet's for models from
    # scratch; or imagenet, unit, {"mean": [...], "std": [...]} (see segtrain.data)
    normalize: str | dict = "auto"
    encoder: str | None = None      # a timm model as the encoder of the decoder --model names
    encoder_weights: str | None = None  # imagenet, a local .pth/.safetensors, or none
    encoder_lr: float = 1.0         # the encoder's learning rate as a share of --lr (0.1: gentler
                                    # fine-tuning; 1.0 won on short CPU runs, benchmarks/README.md)
    freeze_encoder: int = 0         # epochs with the encoder frozen (only the decoder learns)
    encoder_bn: str = "auto"        # train, frozen (ImageNet statistics kept), auto: frozen for
                                    # pretrained weights at batches under 8
    threshold: float = 0.5          # foreground where sigmoid(logit) > threshold

    def __post_init__(self) -> None:
        validate(self)

    @property
    def out_dir(self) -> Path:
        return Path(self.out) if self.out else Path("runs") / f"{self.model}-{self.loss}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


CONFIG_KEYS: tuple[str, ...] = tuple(f.name for f in fields(RunConfig))
_FIELD_TYPES = {f.name: f.type for f in fields(RunConfig)}


def parse_size(value: Any) -> list[int] | None:
    """``"352"``, ``"352x288"``, ``352``, ``[352, 288]`` -> ``[H, W]``; ``None`` stays ``None``."""
    if value is None:
        return None
    parts: list[Any]
    if isinstance(value, str):
        parts = value.lower().replace(",", "x").split("x")
    elif isinstance(value, int) and not isinstance(value, bool):
        parts = [value]
    elif isinstance(value, (list, tuple)):
        parts = list(value)
    else:
        raise SegtrainError(f"size must be HxW, a number or [H, W]; got {value!r}")
    try:
        numbers = [int(str(p).strip()) for p in parts]
    except ValueError:
        raise SegtrainError(f"size must be HxW, a number or [H, W]; got {value!r}") from None
    if len(numbers) == 1:
        numbers = numbers * 2
    if len(numbers) != 2 or min(numbers) < 1:
        raise SegtrainError(f"size must be two positive integers HxW; got {value!r}")
    return numbers


def _field_kind(key: str) -> str:
    """The type a text value of option ``key`` converts to, read from RunConfig's annotation."""
    annotation = str(_FIELD_TYPES[key])
    for kind in ("bool", "int", "float", "dict", "list"):
        if annotation.startswith(kind):
            return kind
    return "str|dict" if annotation == "str | dict" else "str"


def parse_text(key: str, value: Any) -> Any:
    """A text value of option ``key`` (a grid cell, an environment variable) as the type
    :class:`RunConfig` declares for it; non-text values pass unchanged."""
    if not isinstance(value, str):
        return value
    if key not in _FIELD_TYPES:
        raise SegtrainError(f"unknown option {key!r}; valid options: {', '.join(CONFIG_KEYS)}")
    text, kind = value.strip(), _field_kind(key)
    if kind in ("int", "float"):
        try:
            return int(text) if kind == "int" else float(text)
        except ValueError:
            raise SegtrainError(f"{key} must be {'an integer' if kind == 'int' else 'a number'}; "
                                f"got {value!r}") from None
    if kind == "bool":
        if text.lower() in ("1", "true", "yes", "on"):
            return True
        if text.lower() in ("0", "false", "no", "off"):
            return False
        raise SegtrainError(f"{key} must be true or false; got {value!r}")
    if kind == "list":
        return parse_size(text)
    if kind == "dict" or (kind == "str|dict" and text.startswith("{")):
        try:
            parsed = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SegtrainError(f"{key} must be a JSON object such as {{\"depth\": 3}}; got "
                                f"{value!r} ({exc})") from None
        if not isinstance(parsed, dict):
            raise SegtrainError(f"{key} must be a JSON object such as {{\"depth\": 3}}; got {value!r}")
        return parsed
    return text


def _check_choice(key: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise SegtrainError(f"{key} must be one of {', '.join(choices)}; got {value!r}")


def _check_int(key: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise SegtrainError(f"{key} must be an integer >= {minimum}; got {value!r}")


def _int_to_float(value: Any) -> Any:
    """``3`` -> ``3.0`` (a YAML ``lr: 1`` is an int); anything else, booleans too, unchanged."""
    return float(value) if isinstance(value, int) and not isinstance(value, bool) else value


def validate(config: RunConfig) -> None:
    """Check types and ranges of every option (model and loss names are checked against their
    registries by the trainer, which imports them)."""
    if not isinstance(config.manifest, (str, Path)) or str(config.manifest) == "":
        raise SegtrainError("a manifest is needed: give MANIFEST on the command line or "
                            "`manifest:` in the config file")
    config.manifest = str(config.manifest)
    for key in ("model", "loss"):
        if not isinstance(getattr(config, key), str) or not getattr(config, key):
            raise SegtrainError(f"{key} must be a name; got {getattr(config, key)!r}")
    _check_choice("optimizer", config.optimizer, OPTIMIZERS)
    _check_choice("scheduler", config.scheduler, SCHEDULERS)
    _check_choice("amp", config.amp, AMP_MODES)
    _check_choice("device", config.device, DEVICES)
    _check_int("epochs", config.epochs, 1)
    _check_int("batch_size", config.batch_size, 1)
    _check_int("workers", config.workers, 0)
    _check_int("seed", config.seed, 0)
    _check_int("early_stop", config.early_stop, 0)
    if config.base_channels is not None:
        _check_int("base_channels", config.base_channels, 1)
    config.lr = _int_to_float(config.lr)
    if not isinstance(config.lr, float) or not math.isfinite(config.lr) or config.lr <= 0:
        raise SegtrainError(f"lr must be a positive number; got {config.lr!r}")
    config.max_minutes = _int_to_float(config.max_minutes)
    if config.max_minutes is not None and (not isinstance(config.max_minutes, float)
                                           or not math.isfinite(config.max_minutes) or config.max_minutes <= 0):
        raise SegtrainError(f"max_minutes must be a positive number; got {config.max_minutes!r}")
    for key in ("encoder", "encoder_weights"):
        value = getattr(config, key)
        if value is not None and (not isinstance(value, str) or not value):
            raise SegtrainError(f"{key} must be a name; got {value!r}")
    if config.encoder is None and config.encoder_weights not in (None, "none"):
        raise SegtrainError("--encoder-weights needs --encoder (a timm model, e.g. efficientnet_lite0)")
    config.encoder_lr = _int_to_float(config.encoder_lr)
    if not isinstance(config.encoder_lr, float) or not math.isfinite(config.encoder_lr) or config.encoder_lr < 0:
        raise SegtrainError(f"encoder_lr must be a non-negative number (a share of lr); got {config.encoder_lr!r}")
    _check_int("freeze_encoder", config.freeze_encoder, 0)
    _check_choice("encoder_bn", config.encoder_bn, ENCODER_BN)
    config.threshold = _int_to_float(config.threshold)
    if not isinstance(config.threshold, float) or not 0.0 < config.threshold < 1.0:
        raise SegtrainError(f"threshold must be a number between 0 and 1; got {config.threshold!r}")
    for key in ("channels_last", "compile", "deep_supervision", "resume", "force"):
        if not isinstance(getattr(config, key), bool):
            raise SegtrainError(f"{key} must be true or false; got {getattr(config, key)!r}")
    for key in ("model_kwargs", "loss_kwargs"):
        value = getattr(config, key)
        if value is None:
            setattr(config, key, {})
        elif not isinstance(value, dict):
            raise SegtrainError(f"{key} must be a mapping of option names to values; got {value!r}")
    config.size = parse_size(config.size)
    if config.out is not None:
        config.out = str(config.out)
    if not isinstance(config.normalize, (str, dict)):
        raise SegtrainError(f"normalize must be a name (imagenet, unit) or a dict with mean and std; "
                            f"got {config.normalize!r}")


def read_config_file(path: Path) -> dict[str, Any]:
    """A config file's options, keys normalised (``batch-size`` = ``batch_size``).

    ``.json`` files are read as JSON, anything else as YAML (a superset of JSON).
    """
    path = Path(path)
    if not path.is_file():
        raise SegtrainError(f"{path}: config file not found")
    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError, UnicodeDecodeError) as exc:
        raise SegtrainError(f"{path}: not a readable {'JSON' if path.suffix.lower() == '.json' else 'YAML'} "
                            f"file ({exc})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SegtrainError(f"{path}: a config file must hold a mapping of options; got {type(data).__name__}")
    options = {str(key).replace("-", "_"): value for key, value in data.items()}
    unknown = sorted(key for key in options if key not in CONFIG_KEYS)
    if unknown:
        raise SegtrainError(f"{path}: unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(CONFIG_KEYS)}")
    return options


def resolve_config(config_file: Path | None, overrides: dict[str, Any]) -> RunConfig:
    """Defaults < ``config_file`` < ``overrides`` (only the options the user actually gave).

    A relative ``manifest`` or ``out`` in a config file is taken relative to the current
    directory, as on the command line.
    """
    options: dict[str, Any] = read_config_file(config_file) if config_file is not None else {}
    unknown = sorted(key for key in overrides if key not in CONFIG_KEYS)
    if unknown:
        raise SegtrainError(f"unknown option(s) {', '.join(unknown)}; valid: {', '.join(CONFIG_KEYS)}")
    options.update({key: value for key, value in overrides.items() if value is not None})
    if "manifest" not in options:
        raise SegtrainError("a manifest is needed: give MANIFEST on the command line or "
                            "`manifest:` in the config file")
    try:
        return RunConfig(**options)
    except TypeError as exc:  # a wrong type that validate() did not anticipate
        raise SegtrainError(f"invalid config: {exc}") from None
