"""The registry of clean's checks: what clean runs, reports and documents.

Each check is one :class:`Check`, registered where its code lives (``@register(...)`` on the
function that measures it). Clean loops over the registry by scope, in registration order:

========  ====================================================================  ==================
scope     ``measure`` gets                                                      returns
========  ====================================================================  ==================
row       the manifest row (what ingest recorded: merged masks, warnings)       Finding or None
mask      a :class:`MaskContext` (raw mask, current class mask, ROI, options)   Finding or None
source    the source's samples and their positions, its name, the near-         [(position, Finding)]
          identical pairs, the options
pairs     the manifest-wide :class:`~segprep.checks.duplicates.Table`, the      [(sample_id, Finding)]
          verified near-identical pairs, the usable samples, the options
ingest    (nothing: ingest reports them, clean carries them over)               -
review    (nothing: a person's decision, :mod:`segprep.decisions`)              -
model     (nothing: ``segtrain qc``'s findings, :mod:`segprep.checks.model`)    -
========  ====================================================================  ==================

A mask check whose finding says ``repaired`` has its ``repair(binary, opts)`` applied before the
next check runs. Adding a check is adding one decorated function (docs/DEVELOPING.md shows one).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

SCOPES = ("row", "mask", "source", "pairs", "ingest", "review", "model")


@dataclass
class MaskContext:
    """What a mask check sees of one sample."""

    raw: np.ndarray               # the mask as ingest stored it (grey values)
    binary: np.ndarray            # the class-index mask, after the repairs so far
    roi: np.ndarray | None        # the field of view, or None
    opts: object                  # CleanOptions
    mask_format: str = ""         # the mask file's container (jpeg, png ...)


@dataclass(frozen=True)
class Check:
    code: str
    scope: str
    severity: str
    action: str          # what clean does by default
    value: str           # what the finding's value measures
    description: str
    measure: Callable | None = None
    repair: Callable | None = None     # mask checks: (binary, opts) -> binary
    worst: str = "high"  # which values are the strongest findings: high, low, or abs (far from 0)
    routine: bool = False  # a certain repair a person need not look at one by one
    # source checks: samples it finds are left out of the later source checks (an inverted
    # mask's area and placement say nothing)
    explains_others: bool = False

    @property
    def family(self) -> str:  # the name the report and older code used
        return self.scope


CHECKS: dict[str, Check] = {}


def register(code: str, scope: str, severity: str, action: str, value: str, description: str,
             **details) -> Callable[[Callable | None], Callable | None]:
    """Register the decorated function as ``code``'s measure (``register(...)(None)`` registers
    a code some other check emits, or one that comes from ingest)."""
    if scope not in SCOPES:
        raise ValueError(f"check {code}: scope {scope!r} is not one of {SCOPES}")

    def decorate(measure: Callable | None) -> Callable | None:
        if code in CHECKS:
            raise ValueError(f"check {code} is registered twice")
        CHECKS[code] = Check(code, scope, severity, action, value, description, measure, **details)
        return measure
    return decorate


def checks(scope: str) -> list[Check]:
    """The registered checks of one scope, in registration order."""
    return [check for check in CHECKS.values() if check.scope == scope]


def code_order(code: str) -> int:
    """Position of a code in the registry (unknown codes last), for stable listings."""
    names = list(CHECKS)
    return names.index(code) if code in names else len(names)
