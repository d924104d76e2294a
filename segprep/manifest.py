"""The CSV manifest: one row per sample, a view over shards (see docs/FORMATS.md).

Paths inside a manifest are relative to the manifest's own folder, so a WORK folder can
be moved. A manifest is validated when read; every problem names the file, the row (as
its line number in the CSV) and the reason.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd

from segprep.errors import ManifestError, ShardError
from segprep.shards import shard_length
from segprep.work import atomic_path

log = logging.getLogger(__name__)

COLUMNS = (
    "sample_id", "source", "split", "group",
    "image_shard", "image_index", "mask_shard", "mask_index",
    "height", "width", "fg_fraction", "status", "issues", "parent_id",
    "image_path", "mask_path",
)
INT_COLUMNS = ("image_index", "mask_index", "height", "width")
FLOAT_COLUMNS = ("fg_fraction",)
SPLITS = ("train", "val", "test")
STATUSES = ("ok", "repaired", "excluded")


def work_root(manifest_path: Path) -> Path:
    """The folder a manifest's shard paths must stay inside: WORK for ``WORK/manifests/x.csv``
    (shards sit in the sibling ``WORK/shards/``), else the manifest's own folder."""
    folder = Path(manifest_path).parent
    return folder.parent if folder.name == "manifests" else folder


def _line(position: int) -> int:
    """CSV line number of the row at ``position`` (line 1 is the header)."""
    return position + 2


def _fail(path: Path, message: str) -> ManifestError:
    return ManifestError(f"{path}: {message}")


def read_manifest(path: Path, *, check_shards: bool = True) -> pd.DataFrame:
    """Read and validate a manifest.

    Checks: required columns, no duplicate ``sample_id``, integer and numeric columns parse,
    ``split`` and ``status`` values, shard paths that stay inside the manifest's folder, and
    (``check_shards``) that every shard exists and holds the row's index.
    Extra columns are kept as text. Empty cells read as empty strings, never NaN.
    """
    path = Path(path)
    if path.is_dir():
        raise _fail(path, "a folder, not a manifest CSV")
    if not path.is_file():
        raise _fail(path, "manifest not found")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise _fail(path, f"not a readable CSV ({exc})") from None
    missing = [column for column in COLUMNS if column not in df.columns]
    if len(missing) == len(COLUMNS):
        raise _fail(path, f"not a segprep manifest (none of the columns {', '.join(COLUMNS[:4])}, "
                          f"... in its first line)")
    if missing:
        raise _fail(path, f"missing column(s) {', '.join(missing)}; a manifest needs "
                          f"{', '.join(COLUMNS)}")
    df = df.copy()
    for column in INT_COLUMNS + FLOAT_COLUMNS:
        values = pd.to_numeric(df[column], errors="coerce")
        bad = values.isna() | (values < 0)
        if column in INT_COLUMNS:
            bad |= values.notna() & (values != np.floor(values))
        if bad.any():
            position = int(np.flatnonzero(bad.to_numpy())[0])
            raise _fail(path, f"line {_line(position)}: column {column} must be a non-negative "
                              f"number, got {df[column].iloc[position]!r}")
        df[column] = values.astype(np.int64 if column in INT_COLUMNS else np.float64)
    for column, valid in (("split", SPLITS), ("status", STATUSES)):
        bad = ~df[column].isin(valid)
        if bad.any():
            position = int(np.flatnonzero(bad.to_numpy())[0])
            raise _fail(path, f"line {_line(position)}: {column} {df[column].iloc[position]!r} "
                              f"is not one of {', '.join(valid)}")
    empty_ids = df["sample_id"] == ""
    if empty_ids.any():
        raise _fail(path, f"line {_line(int(np.flatnonzero(empty_ids.to_numpy())[0]))}: empty sample_id")
    duplicated = df["sample_id"][df["sample_id"].duplicated()]
    if len(duplicated):
        raise _fail(path, f"duplicate sample_id {', '.join(sorted(set(duplicated))[:5])}")
    folder = path.parent.resolve()
    root = work_root(path).resolve()
    for column in ("image_shard", "mask_shard"):
        for shard in df[column].unique():
            resolved = (folder / shard).resolve()
            if shard == "" or os.path.isabs(shard) or not resolved.is_relative_to(root):
                position = int(np.flatnonzero((df[column] == shard).to_numpy())[0])
                raise _fail(path, f"line {_line(position)}: {column} {shard!r} escapes the "
                                  f"work folder {root}")
    if check_shards:
        _check_indices(path, df)
    return df


def _check_indices(path: Path, df: pd.DataFrame) -> None:
    root = path.parent
    for shard_column, index_column in (("image_shard", "image_index"), ("mask_shard", "mask_index")):
        for shard, indices in df.groupby(shard_column, sort=False)[index_column]:
            try:
                n = shard_length(root / shard)
            except ShardError as exc:
                position = int(indices.index[0])
                raise _fail(path, f"line {_line(position)}: {exc}") from None
            over = indices[indices >= n]
            if len(over):
                position = int(over.index[0])
                raise _fail(path, f"line {_line(position)}: {index_column} {int(over.iloc[0])} is "
                                  f"out of range for {shard} ({n} samples)")


def order_columns(df: pd.DataFrame) -> pd.DataFrame:
    """Required columns first, in the contract's order, then any extra columns as they come."""
    missing = [column for column in COLUMNS if column not in df.columns]
    if missing:
        raise ManifestError(f"manifest rows lack column(s) {', '.join(missing)}")
    extras = [column for column in df.columns if column not in COLUMNS]
    return df[list(COLUMNS) + extras]


def write_manifest(df: pd.DataFrame, path: Path) -> Path:
    """Write atomically (temporary file, then rename), so a reader never sees half a manifest."""
    path = Path(path)
    df = order_columns(df)
    duplicated = df["sample_id"][df["sample_id"].duplicated()]
    if len(duplicated):
        raise ManifestError(f"{path}: refusing to write duplicate sample_id "
                            f"{', '.join(sorted(set(duplicated))[:5])}")
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False, float_format="%.6g", lineterminator="\n")
    log.info("wrote %s (%d rows)", path, len(df))
    return path


def active(df: pd.DataFrame, split: str | None = None) -> pd.DataFrame:
    """Rows that later stages use: not excluded, optionally one split."""
    keep = df["status"] != "excluded"
    if split is not None:
        keep &= df["split"] == split
    return df[keep]


def source_rows(df: pd.DataFrame, manifest: Path, verb: str) -> pd.DataFrame:
    """The rows a stage that reads a dataset's own samples (augment, export) uses: not excluded,
    from a manifest that is not an augment manifest (its copies are training-time data).
    ``verb`` names the stage in the errors ("augment", "export")."""
    if "variant" in df.columns and (df["variant"] != "").any():
        raise ManifestError(f"{manifest}: an augment manifest (it has variant rows); {verb} the "
                            f"clean (or ingest) manifest instead")
    rows = active(df)
    if rows.empty:
        raise ManifestError(f"{manifest}: no rows to {verb}: all {len(df)} rows are excluded"
                            if len(df) else f"{manifest}: no rows to {verb}: the manifest is empty")
    return rows
