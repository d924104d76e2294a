"""``segprep inspect`` (what a manifest holds) and ``segprep verify`` (whether its rows are intact).

Both read the manifest through :func:`segprep.manifest.read_manifest`, so a structurally broken
manifest (missing column, duplicate id, escaping path...) is an error before anything else.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from segprep.errors import SegprepError
from segprep.hashing import array_sha1
from segprep.manifest import SPLITS, STATUSES, read_manifest
from segprep.progress import progress
from segprep.shards import close_shards, load_sample

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- inspect

def _issue_counts(issues: pd.Series) -> Counter:
    counts: Counter = Counter()
    for cell in issues:
        counts.update(code for code in cell.split(";") if code)
    return counts


@dataclass
class InspectResult:
    manifest: Path
    rows: pd.DataFrame    # the manifest, validated
    table: pd.DataFrame   # one row per (source, split)

    def summary(self) -> str:
        df = self.rows
        lines = [f"{self.manifest}: {len(df)} rows, {df['source'].nunique()} source(s), "
                 f"{df['group'].nunique()} group(s)"]
        if df.empty:
            return lines[0] + " (the manifest has a header and no rows)"
        shown = self.table.copy()
        for column in ("fg_min", "fg_q1", "fg_median", "fg_q3", "fg_max"):
            shown[column] = shown[column].map(lambda v: f"{v:.3f}")
        lines.append(shown.to_string(index=False))
        issues = _issue_counts(df["issues"])
        if issues:
            lines.append("issues: " + ", ".join(f"{code} {n}" for code, n in issues.most_common()))
        return "\n".join(lines)


def inspect_manifest(manifest: Path) -> InspectResult:
    """Per (source, split): count, size range, foreground-fraction quartiles (min, q1, median,
    q3, max), status counts and issue-code counts (as ``code=n`` text)."""
    manifest = Path(manifest)
    df = read_manifest(manifest)
    rows = []
    source_rank = {s: k for k, s in enumerate(dict.fromkeys(df["source"]))}
    split_rank = {s: k for k, s in enumerate(SPLITS)}
    keys = sorted(df.groupby(["source", "split"]).groups,
                  key=lambda k: (source_rank[k[0]], split_rank[k[1]]))
    for source, split in keys:
        part = df[(df["source"] == source) & (df["split"] == split)]
        q = np.percentile(part["fg_fraction"].to_numpy(), [0, 25, 50, 75, 100])
        issues = _issue_counts(part["issues"])
        rows.append({
            "source": source, "split": split, "count": len(part),
            "height": f"{part['height'].min()}-{part['height'].max()}",
            "width": f"{part['width'].min()}-{part['width'].max()}",
            "fg_min": q[0], "fg_q1": q[1], "fg_median": q[2], "fg_q3": q[3], "fg_max": q[4],
            **{status: int((part["status"] == status).sum()) for status in STATUSES},
            "issues": " ".join(f"{code}={n}" for code, n in sorted(issues.items())),
        })
    return InspectResult(manifest, df, pd.DataFrame(rows))


# ----------------------------------------------------------------------------- verify

@dataclass
class VerifyResult:
    manifest: Path
    n_rows: int
    failures: list[tuple[int, str, str]] = field(default_factory=list)  # (CSV line, sample_id, reason)

    @property
    def ok(self) -> bool:
        return not self.failures


def _check_row(root: Path, row: pd.Series, has: dict[str, bool]) -> list[str]:
    try:
        sample = load_sample(root, row)
    except (SegprepError, OSError, KeyError, ValueError) as exc:
        return [str(exc)]
    problems = []
    expected = (int(row["height"]), int(row["width"]))
    mismatch_allowed = "size_mismatch" in row["issues"].split(";")
    if sample.image.shape[:2] != expected:
        problems.append(f"image is {sample.image.shape[0]}x{sample.image.shape[1]}, "
                        f"manifest says {expected[0]}x{expected[1]}")
    if sample.mask.shape != expected and not mismatch_allowed:
        problems.append(f"mask is {sample.mask.shape[0]}x{sample.mask.shape[1]}, "
                        f"manifest says {expected[0]}x{expected[1]}")
    for column, array in (("image_sha1", sample.image), ("mask_sha1", sample.mask)):
        if has[column] and row[column] and array_sha1(array) != row[column]:
            problems.append(f"{column.split('_')[0]} checksum differs from {column}")
    if has["has_roi"] and row["has_roi"] == "1" and sample.roi is None:
        problems.append("has_roi is 1 but the shard holds no ROI")
    return problems


def verify(manifest: Path) -> VerifyResult:
    """Read every row's sample and check it against the manifest: readable, the recorded
    height and width, and the recorded checksums where the manifest has them."""
    manifest = Path(manifest)
    # Shard problems are reported per row below, so a bad shard names every row it breaks.
    df = read_manifest(manifest, check_shards=False)
    root = manifest.parent
    has = {column: column in df.columns for column in ("image_sha1", "mask_sha1", "has_roi")}
    result = VerifyResult(manifest, len(df))
    try:
        for position, (_, row) in enumerate(progress(df.iterrows(), total=len(df), desc="verify",
                                                     unit="sample")):
            for problem in _check_row(root, row, has):
                result.failures.append((position + 2, row["sample_id"], problem))
    finally:
        close_shards()  # a rewritten shard must be opened afresh by the next caller
    for line, sample_id, problem in result.failures:
        log.info("%s line %d %s: %s", manifest, line, sample_id, problem)
    return result
