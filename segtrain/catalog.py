"""The table ``segtrain models`` prints, cached: counting every model's MACs takes seconds (and
importing torch one more), for figures that change only when the models' code does.

The cache lives in ``$XDG_CACHE_HOME/segkit`` (``~/.cache/segkit``), one JSON file per input size
and per version of the models' source files; anything unreadable there is simply recomputed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

_MODELS_DIR = Path(__file__).parent / "models"


def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "segkit"


def _key(size: int) -> str:
    digest = hashlib.sha1(str(size).encode())
    for path in sorted(_MODELS_DIR.glob("*.py")):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def model_table(size: int = 256) -> list[dict[str, Any]]:
    """:func:`segtrain.models.model_info` of every registered model at ``size`` x ``size``."""
    path = cache_dir() / f"models-{size}-{_key(size)}.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        pass
    from segtrain.models import ENCODER_MODELS, MODELS, model_info

    rows = [model_info(name, size=(size, size)) for name in MODELS]
    for name, spec in ENCODER_MODELS.items():  # each decoder on its default encoder
        row = model_info(name, size=(size, size), encoder=spec.defaults["encoder"])
        rows.append({**row, "name": f"{name}:{spec.defaults['encoder']}"})
    try:
        from segprep.work import atomic_write_json
        atomic_write_json(path, rows)
    except OSError as exc:  # a read-only home only costs the next listing its seconds
        log.info("cannot cache the model table in %s: %s", path.parent, exc)
    return rows
