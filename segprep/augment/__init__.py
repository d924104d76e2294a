"""Offline augmentation into training-ready fixed-size shards (``segprep augment``).

Public API::

    from segprep.augment import augment
    result = augment("WORK/manifests/clean.csv", factor=25, size=352)

The heavy modules (albumentations takes about two seconds to import) load on first use of
:func:`augment`, so ``segprep --help`` stays fast.
"""

from __future__ import annotations

import os
from typing import Any

# albumentations asks PyPI for its latest version on every import (a 2 s timeout and a warning
# per process where there is no network, as on clusters and GPU nodes). segkit never needs it;
# a user who wants the check sets NO_ALBUMENTATIONS_UPDATE=0 themselves.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

# Kept here, not beside the code that uses them, so the CLI can offer the choices without
# importing albumentations.
BACKENDS = ("albumentations", "augmentor")
ASPECTS = ("resize", "pad")
PRESET_NAMES = ("default", "light", "geometric", "photometric")

_LAZY = {
    "augment": "segprep.augment.stage",
    "AugmentResult": "segprep.augment.stage",
    "parse_size": "segprep.augment.stage",
    "variant_seed": "segprep.augment.stage",
    "write_preview": "segprep.augment.preview",
}

__all__ = ["BACKENDS", "ASPECTS", "PRESET_NAMES", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'segprep.augment' has no attribute {name!r}")
