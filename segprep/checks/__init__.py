"""Clean checks: the registry (:mod:`.registry`) and the modules whose checks register in it.

Per-sample checks look at one sample: what ingest recorded of its files (:mod:`.ingested`) and
its mask (:mod:`.mask`, with the measurements of :mod:`.alignment`); the source checks
(:mod:`.source`) judge each sample against its source, and the pair checks (:mod:`.duplicates`)
look at identical and near-identical images over the whole manifest. Every check returns
:class:`~segprep.checks.findings.Finding` objects; the repairs are separate pure functions in
:mod:`.repairs`. The import order below is the registry's order: the order checks run in, and
the order reports list their codes.
"""

from __future__ import annotations

# registration order = run and listing order: mask, source, pairs, then what ingest recorded
from segprep.checks import mask  # noqa: F401,I001  (the modules register their checks)
from segprep.checks import source  # noqa: F401
from segprep.checks import duplicates  # noqa: F401
from segprep.checks import ingested  # noqa: F401
from segprep.checks import model  # noqa: F401  (segtrain qc's codes)
from segprep.checks.findings import ACTIONS, FINDING_COLUMNS, SEVERITIES, Finding
from segprep.checks.options import CleanOptions
from segprep.checks.registry import CHECKS, Check, MaskContext, checks, code_order

__all__ = ["ACTIONS", "CHECKS", "Check", "CleanOptions", "FINDING_COLUMNS", "Finding",
           "MaskContext", "SEVERITIES", "checks", "code_order"]
