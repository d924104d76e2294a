"""Findings about what ingest saw of a sample's files, read from the manifest row and ingest's
reports: codes carried from the input, merged mask files, decoder warnings, and the files ingest
could not use (unreadable, unpaired), which have no manifest row."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from segprep.checks.findings import Finding
from segprep.checks.registry import register

log = logging.getLogger(__name__)


def carried(row: Mapping, input_name: str, measured: tuple[str, ...], severities: Mapping[str, str]
            ) -> list[Finding]:
    """Codes on the input row that clean does not measure itself (size_mismatch from ingest,
    a code a person added), with their severity from ``severities`` where known."""
    out = []
    excluded = row["status"] == "excluded"
    for code in [c for c in str(row.get("issues", "")).split(";") if c]:
        if code in measured:
            continue
        severity = severities.get(code) or ("error" if excluded else "warning")
        out.append(Finding(code, severity, 0.0, f"carried from {input_name}",
                           action="excluded" if excluded else "flagged"))
    return out


@register("merged_masks", "row", "info", "noted", "number of mask files",
          "the image came with several mask files (one per lesion); merged into one (union)")
def merged_masks(row: Mapping) -> Finding | None:
    """An image that came with several mask files (one per lesion), merged by ingest."""
    extra = [p for p in str(row.get("extra_mask_paths", "") or "").split(";") if p]
    if not extra:
        return None
    files = [Path(str(row.get("mask_path", ""))).name] + [Path(p).name for p in extra]
    return Finding("merged_masks", "info", float(len(files)),
                   f"{len(files)} mask files merged into one (union): {', '.join(files)}",
                   action="noted")


@register("decoder_warning", "row", "warning", "flagged", "number of warnings",
          "a decoder warned about the image or mask file; flagged")
def decoder_warning(row: Mapping) -> Finding | None:
    """A decoder warned about one of the sample's files (damage that loses pixels is unreadable
    already; what is left is worth a look, e.g. bytes after a JPEG's data)."""
    text = str(row.get("decode_warnings", "") or "")
    if not text:
        return None
    return Finding("decoder_warning", "warning", float(len(text.split(" | "))),
                   f"the decoder warned: {text}", action="flagged")


# What ingest decides and clean carries over (the codes on an input row, and its reports).
for _code, _description in (
        ("size_mismatch", "mask size differs from the image; excluded"),
        ("unreadable", "image or mask file cannot be decoded (from ingest's unreadable.csv)"),
        ("missing_mask", "image without a mask (from ingest's unpaired.csv)"),
        ("missing_image", "mask without an image (from ingest's unpaired.csv)"),
        ("unpaired", "any other file ingest could not pair (from ingest's unpaired.csv)")):
    register(_code, "ingest", "error", "excluded", "0", _description)(None)


def ingest_report_findings(work: Path) -> list[tuple[str, str, Finding]]:
    """Ingest's unpaired.csv / unreadable.csv as findings: (sample_id, source, finding).
    These samples have no manifest row."""
    out: list[tuple[str, str, Finding]] = []
    folder = Path(work) / "reports" / "ingest"
    for name in ("unreadable.csv", "unpaired.csv"):
        path = folder / name
        if not path.is_file():
            continue
        try:
            table = pd.read_csv(path, dtype=str, keep_default_na=False)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
            log.warning("%s: not readable (%s); its samples are not reported", path, exc)
            continue
        for row in table.to_dict("records"):
            source, stem = row.get("source", ""), row.get("stem", "")
            reason = row.get("reason", "")
            if name == "unreadable.csv":
                code = "unreadable"
            elif reason.startswith("mask without image"):
                code = "missing_image"   # a mask without its image is not a missing mask
            elif reason.startswith("image without mask"):
                code = "missing_mask"
            else:
                code = "unpaired"        # e.g. a stem that appears twice in one source
            message = f"{reason} ({row.get('path', '')})" if row.get("path") else reason
            out.append((f"{source}/{stem}", source,
                        Finding(code, "error", 0.0, message, action="excluded")))
    return out
