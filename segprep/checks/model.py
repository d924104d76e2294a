"""Findings of a model (``segtrain qc``): registered here so that clean, its report and the
review page know the codes, and read here for ``segprep clean --qc FILE``.

A model's finding is a judgement no rule made: it is flagged, never excluding (a person decides,
see :mod:`segprep.decisions`)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from segprep.checks.findings import FINDING_COLUMNS, Finding
from segprep.checks.registry import register
from segprep.errors import SegprepError

MODEL_CODES = {
    "label_disagrees": "The label disagrees with out-of-sample model predictions: its soft-minimum "
                       "pixel self-confidence is under the threshold (segtrain qc).",
    "partial_mask": "The label covers only part of what the model predicts there (segtrain qc).",
    "missed_object": "The model finds an object the label does not have (segtrain qc).",
    "extra_object": "The label has an object the model does not see (segtrain qc).",
}
for _code, _description in MODEL_CODES.items():
    register(_code, "model", "warning", "flagged", "score", _description)(None)


def read_model_findings(path: Path) -> dict[str, list[Finding]]:
    """``segtrain qc``'s findings.csv by sample id, every finding flagged. A file of another
    shape, or with codes that are not a model's, is a SegprepError naming it."""
    path = Path(path)
    if not path.is_file():
        raise SegprepError(f"{path}: QC findings file not found (segtrain qc writes WORK/qc/findings.csv)")
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise SegprepError(f"{path}: not a findings CSV ({exc})") from None
    missing = [c for c in FINDING_COLUMNS if c not in table.columns]
    if missing:
        raise SegprepError(f"{path}: missing column(s) {', '.join(missing)} (expected "
                           f"{','.join(FINDING_COLUMNS)})")
    out: dict[str, list[Finding]] = {}
    for line, row in enumerate(table.to_dict("records"), start=2):
        if row["code"] not in MODEL_CODES:
            raise SegprepError(f"{path} line {line}: code {row['code']!r} is not a model's; valid: "
                               f"{', '.join(MODEL_CODES)}")
        try:
            value = float(row["value"])
        except ValueError:
            raise SegprepError(f"{path} line {line}: value {row['value']!r} is not a number") from None
        out.setdefault(row["sample_id"], []).append(
            Finding(row["code"], "warning", value, row["message"], action="flagged"))
    return out
