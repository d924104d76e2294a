"""Mask checks over one sample: nonbinary, speckle, holes, empty, outside_roi.

Each ``check_*`` function is registered (:mod:`.registry`), measures one thing and returns a
:class:`Finding` or None; the repairs live in :mod:`segprep.checks.repairs`. :func:`check_mask`
runs them in their registration order, which makes each one meaningful (specks, holes, and empty
last, after the repairs). Whether a mask is inverted is judged against its source
(:mod:`.source`): a mask covering most of the frame is, alone, no evidence.
"""

from __future__ import annotations

import cv2
import numpy as np

from segprep.checks import repairs
from segprep.checks.findings import Finding
from segprep.checks.options import CleanOptions, area_pixels
from segprep.checks.registry import MaskContext, checks, register


def grey_pixels(mask: np.ndarray, grey_band: float) -> int:
    """Pixels far from both extremes of the mask's nominal scale: neither background nor
    foreground, whatever the format (JPEG noise, and lossless re-saves of it, stay within a
    few values of the extremes)."""
    scale = repairs.mask_scale(mask)
    if scale == 1:
        return 0  # a 0/1 label image has no grey values
    lo, hi = int(np.floor(grey_band * scale)) + 1, int(np.ceil((1.0 - grey_band) * scale)) - 1
    return int(cv2.countNonZero(cv2.inRange(mask, lo, hi)))  # lo..hi inclusive


def border_share(binary: np.ndarray) -> float:
    border = np.concatenate([binary[0], binary[-1], binary[1:-1, 0], binary[1:-1, -1]])
    return float(border.mean()) if border.size else 0.0


def is_thin(binary: np.ndarray, opts: CleanOptions) -> bool:
    """Thin-structure mask (vessels): the largest component's compactness 4*pi*A/P^2 is below
    --thin-compactness. Real DRIVE vessel trees: 0.002 at most, synthetic ones at 128 px 0.05;
    Kvasir-SEG polyps 0.13 and more, synthetic blobs 0.3 and more."""
    return repairs.compactness(binary) < opts.thin_compactness


# ----------------------------------------------------------------------------- the checks, in order

@register("nonbinary", "mask", "info", "repaired", "share of grey pixels",
          "values other than the mask's two levels beyond its format's compression noise; binarized",
          routine=True)
def check_nonbinary(ctx: MaskContext) -> Finding | None:
    """Grey values (anti-aliased edges, resampled or blurred masks, grey patches) in the raw
    mask. Every mask is binarized anyway; this finding says that doing so changed more than
    compression noise (info: the repair is routine, but a user should see how many masks were
    not clean two-level images, and by how much)."""
    opts, mask = ctx.opts, ctx.raw
    grey = grey_pixels(mask, opts.grey_band)
    share = grey / mask.size
    if grey == 0 or share <= opts.nonbinary_share:
        return None
    threshold = repairs.threshold_value(mask, opts.threshold)
    lo, hi = round(opts.grey_band * 255), round((1 - opts.grey_band) * 255)
    stored = f" ({ctx.mask_format.upper()})" if ctx.mask_format else ""
    return Finding("nonbinary", "info", round(share, 6),
                   f"{grey} px ({share:.2%}) hold grey values {lo}..{hi}{stored}; binarized at "
                   f">{threshold:g}", action="repaired")


def _remove_specks(binary: np.ndarray, opts: CleanOptions) -> np.ndarray:
    return repairs.remove_specks(binary, area_pixels(opts.min_area, *binary.shape), opts.thin_compactness)


@register("speckle", "mask", "warning", "repaired", "number of specks",
          "foreground components under --min-area (8-connected); removed",
          repair=_remove_specks, routine=True)
def check_speckle(ctx: MaskContext) -> Finding | None:
    """Foreground components (8-connected) smaller than --min-area, other than the largest.
    In thin-structure masks only round blobs that stand apart count (see repairs.find_specks)."""
    binary, opts = ctx.binary, ctx.opts
    min_area = area_pixels(opts.min_area, *binary.shape)
    _, specks, areas = repairs.find_specks(binary, min_area, opts.thin_compactness)
    if not len(specks):
        return None
    action = "repaired" if opts.repair else "flagged"
    return Finding("speckle", "warning", float(len(specks)),
                   f"{len(specks)} component(s) of {int(areas.min())}-{int(areas.max())} px "
                   f"({int(areas.sum())} px in all){' removed' if action == 'repaired' else ''}; "
                   f"components under {min_area} px are specks", action=action)


def _fill_holes(binary: np.ndarray, opts: CleanOptions) -> np.ndarray:
    return repairs.fill_holes(binary, area_pixels(opts.max_hole, *binary.shape))


@register("holes", "mask", "warning", "repaired", "number of holes",
          "enclosed background up to --max-hole; filled", repair=_fill_holes, routine=True)
def check_holes(ctx: MaskContext) -> Finding | None:
    """Background enclosed by foreground, at most --max-hole pixels per hole. Thin-structure
    masks have no inside: what they enclose are loops between vessels, left alone."""
    binary, opts = ctx.binary, ctx.opts
    max_hole = area_pixels(opts.max_hole, *binary.shape)
    _, holes, areas = repairs.hole_labels(binary, max_hole)
    if not len(holes) or is_thin(binary, opts):
        return None
    action = "repaired" if opts.repair else "flagged"
    return Finding("holes", "warning", float(len(holes)),
                   f"{len(holes)} hole(s) of {int(areas.min())}-{int(areas.max())} px "
                   f"({int(areas.sum())} px in all){' filled' if action == 'repaired' else ''}; "
                   f"holes up to {max_hole} px are filled", action=action)


@register("empty", "mask", "error", "excluded", "foreground pixels",
          "no foreground after repair; excluded (--allow-empty, or a source with many: kept)")
def check_empty(ctx: MaskContext) -> Finding | None:
    if ctx.binary.any():
        return None
    if ctx.opts.allow_empty:
        return Finding("empty", "info", 0.0, "no foreground (kept: --allow-empty)", action="kept")
    return Finding("empty", "error", 0.0, "no foreground pixel", action="excluded")


@register("outside_roi", "mask", "info", "noted", "foreground pixels outside the ROI",
          "foreground outside the field of view; reported, kept")
def check_outside_roi(ctx: MaskContext) -> Finding | None:
    """Foreground outside the field of view: reported, never removed (DRIVE's manual
    annotations hold up to ~78 such vessel pixels)."""
    binary, roi = ctx.binary, ctx.roi
    if roi is None or roi.shape != binary.shape:
        return None
    outside = int(np.count_nonzero(binary & (roi == 0)))
    if outside == 0:
        return None
    return Finding("outside_roi", "info", float(outside),
                   f"{outside} foreground px outside the field of view (kept)", action="noted")


def check_mask(mask: np.ndarray, roi: np.ndarray | None, opts: CleanOptions, *,
               mask_format: str = "", invert: bool = False) -> tuple[np.ndarray, list[Finding]]:
    """Binarize a raw mask, then run every registered mask check in order, applying the repair
    of each finding that says ``repaired``. Returns the class-index mask to store and the
    findings. The 0/255 -> 0/1 conversion of every mask is routine and no finding by itself.
    ``invert``: swap the classes right after binarizing (a mask the source checks found
    inverted, with --repair-inverted)."""
    binary = repairs.binarize(mask, opts.threshold)
    if invert:
        binary = repairs.invert(binary)
    ctx = MaskContext(mask, binary, roi, opts, mask_format)
    findings: list[Finding] = []
    for check in checks("mask"):
        finding = check.measure(ctx)
        if finding is None:
            continue
        findings.append(finding)
        if finding.action == "repaired" and check.repair is not None:
            ctx.binary = check.repair(ctx.binary, opts)
    return ctx.binary, findings
