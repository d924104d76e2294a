"""Clean checks: the registry of finding codes and the functions that produce them.

Per-sample checks (:mod:`.mask`, :mod:`.alignment`) look at one sample; manifest-level
checks (:mod:`.duplicates`, and the per-source z-scores in :mod:`segprep.clean`) look at
all of them. Every check returns :class:`~segprep.checks.findings.Finding` objects; the
repairs are separate pure functions in :mod:`.repairs`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from segprep.checks import duplicates, mask
from segprep.checks.findings import ACTIONS, FINDING_COLUMNS, SEVERITIES, Finding
from segprep.checks.options import CleanOptions


@dataclass(frozen=True)
class Code:
    name: str
    family: str        # mask, alignment, dataset, duplicates, ingest
    severity: str
    action: str        # what clean does by default
    value: str         # what the finding's value measures
    description: str


CODES: dict[str, Code] = {c.name: c for c in (
    Code("nonbinary", "mask", "warning", "repaired", "share of grey pixels",
         "grey values far from both extremes beyond what JPEG adds; binarized"),
    Code("inverted", "mask", "error", "excluded", "foreground share of the frame",
         "foreground covers most of the frame and its border; excluded (--repair-inverted: inverted)"),
    Code("speckle", "mask", "warning", "repaired", "number of specks",
         "foreground components under --min-area (8-connected); removed"),
    Code("holes", "mask", "warning", "repaired", "number of holes",
         "enclosed background up to --max-hole; filled"),
    Code("empty", "mask", "error", "excluded", "foreground pixels",
         "no foreground after repair; excluded (--allow-empty: kept)"),
    Code("outside_roi", "mask", "info", "noted", "foreground pixels outside the ROI",
         "foreground outside the field of view; reported, kept"),
    Code("misaligned", "alignment", "warning", "flagged", "robust z of the edge-alignment score",
         "mask outline does not follow image edges, compared with its source; flagged "
         "(--strict: excluded)"),
    Code("area_outlier", "dataset", "warning", "flagged", "robust z of logit(fg fraction)",
         "foreground fraction far outside its source's distribution; flagged"),
    Code("duplicate", "duplicates", "error", "excluded", "1",
         "identical image pixels under another name; one kept, the others excluded"),
    Code("conflict", "duplicates", "warning", "flagged", "Dice of the two masks",
         "identical images with different masks; flagged (--strict: excluded)"),
    Code("near_duplicate_conflict", "duplicates", "warning", "flagged", "Dice of the two masks",
         "near-identical images (perceptual hash) whose masks disagree; both flagged "
         "(--strict: excluded)"),
    Code("leakage", "duplicates", "error", "flagged", "perceptual-hash distance",
         "near-identical images in different splits; error in the summary"),
    Code("size_mismatch", "ingest", "error", "excluded", "0",
         "mask size differs from the image; excluded"),
    Code("unreadable", "ingest", "error", "excluded", "0",
         "image or mask file cannot be decoded (from ingest's unreadable.csv)"),
    Code("missing_mask", "ingest", "error", "excluded", "0",
         "image without a mask (from ingest's unpaired.csv)"),
    Code("missing_image", "ingest", "error", "excluded", "0",
         "mask without an image (from ingest's unpaired.csv)"),
    Code("unpaired", "ingest", "error", "excluded", "0",
         "any other file ingest could not pair (from ingest's unpaired.csv)"),
)}

# Per-sample mask checks, in the order check_mask runs them.
SAMPLE_CHECKS: dict[str, Callable] = {
    "nonbinary": mask.check_nonbinary,
    "inverted": mask.check_inverted,
    "speckle": mask.check_speckle,
    "holes": mask.check_holes,
    "empty": mask.check_empty,
    "outside_roi": mask.check_outside_roi,
}
MANIFEST_CHECKS: dict[str, Callable] = {
    "duplicate": duplicates.find_duplicates,
    "near_duplicate_conflict": duplicates.find_near_duplicate_conflicts,
    "leakage": duplicates.find_leakage,
}


def code_order(code: str) -> int:
    """Position of a code in the registry (unknown codes last), for stable listings."""
    names = list(CODES)
    return names.index(code) if code in names else len(names)


__all__ = ["ACTIONS", "CODES", "Code", "CleanOptions", "FINDING_COLUMNS", "Finding",
           "MANIFEST_CHECKS", "SAMPLE_CHECKS", "SEVERITIES", "code_order"]
