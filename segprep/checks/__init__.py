"""Clean checks: the registry of finding codes and the functions that produce them.

Per-sample checks (:mod:`.mask`, :mod:`.ingested`) and measurements (:mod:`.alignment`)
look at one sample; the source checks (:mod:`.source`) judge each sample against its source,
and the duplicate checks (:mod:`.duplicates`) look at pairs over the whole manifest. Every check returns :class:`~segprep.checks.findings.Finding` objects; the
repairs are separate pure functions in :mod:`.repairs`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from segprep.checks import duplicates, mask, source
from segprep.checks.findings import ACTIONS, FINDING_COLUMNS, SEVERITIES, Finding
from segprep.checks.options import CleanOptions


@dataclass(frozen=True)
class Code:
    name: str
    family: str        # mask, source, duplicates, ingest
    severity: str
    action: str        # what clean does by default
    value: str         # what the finding's value measures
    description: str
    worst: str = "high"  # which values are the strongest findings: high, low, or abs (far from 0)
    routine: bool = False  # a certain repair a person need not look at one by one


CODES: dict[str, Code] = {c.name: c for c in (
    Code("nonbinary", "mask", "info", "repaired", "share of grey pixels",
         "values other than the mask's two levels beyond its format's compression noise; binarized",
         routine=True),
    Code("inverted", "source", "warning", "flagged", "colour evidence / the source's typical",
         "inside looks like the source's background and outside like its foreground; flagged "
         "(--repair-inverted: inverted; --strict: excluded)", worst="low"),
    Code("speckle", "mask", "warning", "repaired", "number of specks",
         "foreground components under --min-area (8-connected); removed", routine=True),
    Code("holes", "mask", "warning", "repaired", "number of holes",
         "enclosed background up to --max-hole; filled", routine=True),
    Code("empty", "mask", "error", "excluded", "foreground pixels",
         "no foreground after repair; excluded (--allow-empty: kept)"),
    Code("outside_roi", "mask", "info", "noted", "foreground pixels outside the ROI",
         "foreground outside the field of view; reported, kept"),
    Code("misaligned", "source", "warning", "flagged", "robust z-score sum of the placement ratios",
         "the outline would fit the image far better moved elsewhere, by its source's standard; "
         "flagged (--strict: excluded)", worst="low"),
    Code("area_outlier", "source", "warning", "flagged", "robust z of logit(fg fraction)",
         "foreground fraction far outside its source's distribution; flagged", worst="abs"),
    Code("duplicate", "duplicates", "error", "excluded", "1",
         "identical image pixels under another name; one kept, the others excluded"),
    Code("conflict", "duplicates", "warning", "flagged", "Dice of the two masks",
         "identical images with different masks; flagged (--strict: excluded)", worst="low"),
    Code("near_duplicate_conflict", "duplicates", "warning", "flagged", "Dice of the two masks",
         "near-identical images (perceptual hash) whose masks disagree; both flagged "
         "(--strict: excluded)", worst="low"),
    Code("leakage", "duplicates", "error", "flagged", "perceptual-hash distance",
         "near-identical images in different splits; error in the summary", worst="low"),
    Code("merged_masks", "ingest", "info", "noted", "number of mask files",
         "the image came with several mask files (one per lesion); merged into one (union)"),
    Code("decoder_warning", "ingest", "warning", "flagged", "number of warnings",
         "a decoder warned about the image or mask file; flagged"),
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
    "speckle": mask.check_speckle,
    "holes": mask.check_holes,
    "empty": mask.check_empty,
    "outside_roi": mask.check_outside_roi,
}
MANIFEST_CHECKS: dict[str, Callable] = {
    "inverted": source.find_inverted,
    "misaligned": source.find_misaligned,
    "area_outlier": source.find_area_outliers,
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
