"""Mask checks over one sample: nonbinary, speckle, holes, empty, outside_roi.

Each ``check_*`` function measures one thing and returns a :class:`Finding` or None; the
repairs live in :mod:`segprep.checks.repairs`. :func:`check_mask` runs them in the order
that makes each one meaningful (binarize, then specks, holes, and empty last, after the
repairs). Whether a mask is inverted is judged against its source (:mod:`.source`): a mask
covering most of the frame is, alone, no evidence.
"""

from __future__ import annotations

import cv2
import numpy as np

from segprep.checks import repairs
from segprep.checks.findings import Finding
from segprep.checks.options import CleanOptions, area_pixels


def grey_pixels(mask: np.ndarray, grey_band: float) -> int:
    """Pixels far from both extremes of the mask's nominal scale: neither background nor
    foreground, whatever the format (JPEG noise, and lossless re-saves of it, stay within a
    few values of the extremes)."""
    scale = repairs.mask_scale(mask)
    if scale == 1:
        return 0  # a 0/1 label image has no grey values
    lo, hi = int(np.floor(grey_band * scale)) + 1, int(np.ceil((1.0 - grey_band) * scale)) - 1
    return int(cv2.countNonZero(cv2.inRange(mask, lo, hi)))  # lo..hi inclusive


def check_nonbinary(mask: np.ndarray, opts: CleanOptions, mask_format: str = "") -> Finding | None:
    """Grey values (anti-aliased edges, resampled or blurred masks, grey patches). Every mask
    is binarized anyway; this finding says that doing so changed more than compression noise
    (info: the repair is routine, but a user should see how many masks were not clean
    two-level images, and by how much)."""
    grey = grey_pixels(mask, opts.grey_band)
    share = grey / mask.size
    if grey == 0 or share <= opts.nonbinary_share:
        return None
    threshold = repairs.threshold_value(mask, opts.threshold)
    lo, hi = round(opts.grey_band * 255), round((1 - opts.grey_band) * 255)
    stored = f" ({mask_format.upper()})" if mask_format else ""
    return Finding("nonbinary", "info", round(share, 6),
                   f"{grey} px ({share:.2%}) hold grey values {lo}..{hi}{stored}; binarized at "
                   f">{threshold:g}", action="repaired")


def border_share(binary: np.ndarray) -> float:
    border = np.concatenate([binary[0], binary[-1], binary[1:-1, 0], binary[1:-1, -1]])
    return float(border.mean()) if border.size else 0.0


def is_thin(binary: np.ndarray, opts: CleanOptions) -> bool:
    """Thin-structure mask (vessels): the largest component's compactness 4*pi*A/P^2 is below
    --thin-compactness. Real DRIVE vessel trees: 0.002 at most, synthetic ones at 128 px 0.05;
    Kvasir-SEG polyps 0.13 and more, synthetic blobs 0.3 and more."""
    return repairs.compactness(binary) < opts.thin_compactness


def check_speckle(binary: np.ndarray, opts: CleanOptions) -> Finding | None:
    """Foreground components (8-connected) smaller than --min-area, other than the largest.
    In thin-structure masks only round blobs that stand apart count (see repairs.find_specks)."""
    min_area = area_pixels(opts.min_area, *binary.shape)
    _, specks, areas = repairs.find_specks(binary, min_area, opts.thin_compactness)
    if not len(specks):
        return None
    action = "repaired" if opts.repair else "flagged"
    return Finding("speckle", "warning", float(len(specks)),
                   f"{len(specks)} component(s) of {int(areas.min())}-{int(areas.max())} px "
                   f"({int(areas.sum())} px in all){' removed' if action == 'repaired' else ''}; "
                   f"components under {min_area} px are specks", action=action)


def check_holes(binary: np.ndarray, opts: CleanOptions) -> Finding | None:
    """Background enclosed by foreground, at most --max-hole pixels per hole. Thin-structure
    masks have no inside: what they enclose are loops between vessels, left alone."""
    max_hole = area_pixels(opts.max_hole, *binary.shape)
    _, holes, areas = repairs.hole_labels(binary, max_hole)
    if not len(holes) or is_thin(binary, opts):
        return None
    action = "repaired" if opts.repair else "flagged"
    return Finding("holes", "warning", float(len(holes)),
                   f"{len(holes)} hole(s) of {int(areas.min())}-{int(areas.max())} px "
                   f"({int(areas.sum())} px in all){' filled' if action == 'repaired' else ''}; "
                   f"holes up to {max_hole} px are filled", action=action)


def check_empty(binary: np.ndarray, opts: CleanOptions) -> Finding | None:
    if binary.any():
        return None
    if opts.allow_empty:
        return Finding("empty", "info", 0.0, "no foreground (kept: --allow-empty)", action="kept")
    return Finding("empty", "error", 0.0, "no foreground pixel", action="excluded")


def check_outside_roi(binary: np.ndarray, roi: np.ndarray | None) -> Finding | None:
    """Foreground outside the field of view: reported, never removed (DRIVE's manual
    annotations hold up to ~78 such vessel pixels)."""
    if roi is None or roi.shape != binary.shape:
        return None
    outside = int(np.count_nonzero(binary & (roi == 0)))
    if outside == 0:
        return None
    return Finding("outside_roi", "info", float(outside),
                   f"{outside} foreground px outside the field of view (kept)", action="noted")


def check_mask(mask: np.ndarray, roi: np.ndarray | None, opts: CleanOptions, *,
               mask_format: str = "", invert: bool = False) -> tuple[np.ndarray, list[Finding]]:
    """Binarize a raw mask, run the mask checks and apply the repairs the options allow.

    Returns the class-index mask to store and the findings. The 0/255 -> 0/1 conversion
    of every mask is routine and no finding by itself. ``invert``: swap the classes right
    after binarizing (a mask the source checks found inverted, with --repair-inverted).
    """
    findings: list[Finding] = []
    nonbinary = check_nonbinary(mask, opts, mask_format)
    if nonbinary:
        findings.append(nonbinary)
    binary = repairs.binarize(mask, opts.threshold)
    if invert:
        binary = repairs.invert(binary)

    speckle = check_speckle(binary, opts)
    if speckle:
        findings.append(speckle)
        if speckle.action == "repaired":
            binary = repairs.remove_specks(binary, area_pixels(opts.min_area, *binary.shape),
                                           opts.thin_compactness)
    holes = check_holes(binary, opts)
    if holes:
        findings.append(holes)
        if holes.action == "repaired":
            binary = repairs.fill_holes(binary, area_pixels(opts.max_hole, *binary.shape))

    empty = check_empty(binary, opts)
    if empty:
        findings.append(empty)
    outside = check_outside_roi(binary, roi)
    if outside:
        findings.append(outside)
    return binary, findings
