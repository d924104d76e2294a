"""Checks over the whole manifest: duplicate, conflict, near_duplicate_conflict, leakage.

Identical images are found by ``image_sha1`` (identical pixels). Near-identical ones in two
steps. Candidates: pairs whose perceptual hashes (``phash``, recorded by ingest;
:mod:`segprep.hashing`) are within --phash-distance bits, plus each image's few nearest
neighbours by a 16x16 thumbnail (a few pixels of shift move a fundus image's 64-bit hash by
12 bits and more, but hardly change its thumbnail). A small hash distance only says two
images look alike at 32x32, which holds for many unrelated endoscopy frames with the same
black corners and text, and for every pair of fundus photographs; so each candidate pair is
verified: the images' fine detail (high-pass, inside the field of view, minus what every
image of the source shares, such as burned-in text) is registered by phase correlation and
must correlate (--near-min-corr); a few scales are tried, since a copy may be cropped by a few
percent. Their masks are then compared after the same move, with
Dice that tolerates one thumbnail pixel, so that thin vessels a pixel apart still agree.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from segprep.checks.findings import Finding
from segprep.checks.options import CleanOptions
from segprep.checks.registry import register
from segprep.hashing import hamming, near_pairs
from segprep.splits import CONFIRM_BITS, NEAR_DUPLICATE_BITS

THUMB = 128  # side of the square image and mask thumbnails that pairs are compared on
TINY = 16    # side of the thumbnails that propose nearest-neighbour candidates
NEAREST = 3  # nearest neighbours per image proposed as candidates
# Candidates must also look alike at TINY x TINY before the (costlier) registration:
# near-identical images correlate 0.9 and more there (measured on synthetic copies and on
# Kvasir-SEG's re-saved frames); most unrelated look-alikes by hash do not.
TINY_MIN_CORR = 0.6
_DETAIL_SIGMA = 3.0  # px at THUMB: what is left after removing this blur is "fine detail"
_ROI_MARGIN = 15     # px at THUMB: the FOV border's shading must not count as shared detail
# Near-identical frames (re-saves, crops, consecutive video frames) are shifted by a few
# percent at most; two unrelated images can match one dominant edge (a round lesion) only
# by moving it further.
MAX_SHIFT = 0.1 * THUMB
_CLIP = 2.5  # detail beyond this many robust spreads is clipped


def mask_thumbnail(binary: np.ndarray) -> np.ndarray:
    """A class-index mask at THUMB x THUMB; a pixel is foreground when a quarter of it is,
    so 1 px vessels of a 565 px image survive."""
    small = cv2.resize(binary.astype(np.float32), (THUMB, THUMB), interpolation=cv2.INTER_AREA)
    return (small > 0.25).astype(np.uint8)


def grey_thumbnail(grey: np.ndarray) -> np.ndarray:
    """A grey (H, W) image at THUMB x THUMB, float32."""
    return cv2.resize(grey, (THUMB, THUMB), interpolation=cv2.INTER_AREA).astype(np.float32)


def image_thumbnail(grey: np.ndarray, roi: np.ndarray | None) -> np.ndarray:
    """Fine detail of a :func:`grey_thumbnail` (float16, zero outside the field of view):
    grey minus its blur inside the ROI, in units of its own robust spread and clipped, so
    that texture everywhere counts and one strong edge (a lesion's rim, a text overlay)
    cannot make two different images look alike on its own."""
    inside = np.ones((THUMB, THUMB), np.float32)
    if roi is not None:
        small = cv2.resize((roi > 0).astype(np.uint8), (THUMB, THUMB), interpolation=cv2.INTER_NEAREST)
        inside = cv2.erode(small, np.ones((_ROI_MARGIN, _ROI_MARGIN), np.uint8)).astype(np.float32)
    low = (cv2.GaussianBlur(grey * inside, (0, 0), _DETAIL_SIGMA)
           / np.maximum(cv2.GaussianBlur(inside, (0, 0), _DETAIL_SIGMA), 1e-3))
    detail = (grey - low) * inside
    values = detail[inside > 0]
    spread = 1.4826 * float(np.median(np.abs(values))) if values.size else 0.0
    detail = np.clip(detail / max(spread, 1e-3), -_CLIP, _CLIP) * inside
    # float16 halves the memory of keeping one per sample; plenty for a correlation.
    return detail.astype(np.float16)


def tiny_thumbnail(small: np.ndarray) -> np.ndarray:
    """A :func:`grey_thumbnail` at TINY x TINY, flattened (float32)."""
    return cv2.resize(small, (TINY, TINY), interpolation=cv2.INTER_AREA).ravel()


def normalise_tiny(tiny: np.ndarray) -> np.ndarray:
    """Rows centred (minus the mean image, then their own mean) and of unit length, so that
    a dot product is a correlation."""
    x = tiny - tiny.mean(axis=0)
    x = x - x.mean(axis=1, keepdims=True)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-6)


def nearest_pairs(x: np.ndarray, k: int = NEAREST, block: int = 1024) -> set[tuple[int, int]]:
    """Each row's ``k`` most correlated other rows, as pairs (i, j) with i < j, from
    :func:`normalise_tiny` rows."""
    n = len(x)
    if n < 2:
        return set()
    k = min(k, n - 1)
    out: set[tuple[int, int]] = set()
    for start in range(0, n, block):
        sim = x[start:start + block] @ x.T
        rows = np.arange(start, min(start + block, n))
        sim[rows - start, rows] = -np.inf
        best = np.argpartition(-sim, k - 1, axis=1)[:, :k]
        for row, cols in zip(rows, best):
            for col in cols:
                out.add((min(int(row), int(col)), max(int(row), int(col))))
    return out


# Scales tried when registering: a copy cropped by a few percent per side (another dataset's
# release of the same frame, a re-export) is the same scene a few percent larger.
SCALES = (1.0, 0.965, 1.035, 0.93, 1.07)
Move = tuple[float, float, float]   # (dx, dy, scale): b scaled about the centre, then moved by -(dx, dy)
NO_MOVE: Move = (0.0, 0.0, 1.0)


def _affine(move: Move, side: int = THUMB) -> np.ndarray:
    dx, dy, scale = move
    centre = (side - 1) / 2.0
    offset = (1.0 - scale) * centre
    return np.float32([[scale, 0, offset - dx], [0, scale, offset - dy]])


def register_images(a: np.ndarray, b: np.ndarray) -> tuple[Move, float]:
    """The move (shift and scale, see :data:`SCALES`) that brings ``b`` onto ``a``, and the
    correlation of the overlapping fine detail after it (-1..1; 0 when every shift is beyond
    MAX_SHIFT or nothing overlaps)."""
    a, b = a.astype(np.float32), b.astype(np.float32)
    window = cv2.createHanningWindow((THUMB, THUMB), cv2.CV_32F)
    ones = np.ones((THUMB, THUMB), np.float32)
    best: tuple[Move, float] = (NO_MOVE, 0.0)
    for scale in SCALES:
        scaled = b if scale == 1.0 else cv2.warpAffine(b, _affine((0.0, 0.0, scale)), (THUMB, THUMB))
        (dx, dy), _ = cv2.phaseCorrelate(a, scaled, window)
        if np.hypot(dx, dy) > MAX_SHIFT:
            continue
        move = (float(dx), float(dy), scale)
        matrix = _affine(move)
        moved = cv2.warpAffine(b, matrix, (THUMB, THUMB))
        overlap = cv2.warpAffine(ones, matrix, (THUMB, THUMB)) > 0.99
        overlap &= (a != 0) | (moved != 0)
        if overlap.sum() < 64:
            continue
        x, y = a[overlap], moved[overlap]
        x, y = x - x.mean(), y - y.mean()
        denominator = float(np.sqrt((x * x).sum() * (y * y).sum()))
        corr = float((x * y).sum() / denominator) if denominator > 0 else 0.0
        if corr > best[1]:
            best = (move, corr)
    return best


def dice(a: np.ndarray, b: np.ndarray, move: Move = NO_MOVE, tolerance: int = 1) -> float:
    """Dice of two THUMB masks after ``move`` brings ``b`` onto ``a`` (see :func:`register`),
    counting a foreground pixel as matched when the other mask has foreground within
    ``tolerance`` px. Two empty masks agree."""
    if move != NO_MOVE:
        b = cv2.warpAffine(b, _affine(move, b.shape[0]), (b.shape[1], b.shape[0]),
                           flags=cv2.INTER_NEAREST)
    total = int(np.count_nonzero(a)) + int(np.count_nonzero(b))
    if total == 0:
        return 1.0
    if tolerance:
        kernel = np.ones((2 * tolerance + 1,) * 2, np.uint8)
        matched = int(np.count_nonzero(a & cv2.dilate(b, kernel))) + int(np.count_nonzero(b & cv2.dilate(a, kernel)))
    else:
        matched = 2 * int(np.count_nonzero(a & b))
    return matched / total


@dataclass
class Table:
    """What the manifest-level checks need, one entry per sample in manifest order."""

    ids: list[str]
    splits: list[str]
    image_sha1: list[str]                 # "" when unknown
    phash: np.ndarray                     # uint64
    has_phash: np.ndarray                 # bool
    masks: dict[int, np.ndarray]          # THUMB mask thumbnails (comparable samples)
    details: dict[int, np.ndarray]        # image_thumbnail minus its source's mean
    comparable: np.ndarray                # bool: the mask can be compared (read, right size, classes right)
    rank: list[tuple]                     # smaller is the better sample to keep among duplicates
    groups: list[str] | None = None       # the manifest's leakage groups
    phash256: list[int | None] | None = None  # 256-bit hashes (segprep.hashing.phash256)


def duplicate_groups(image_sha1: list[str]) -> list[list[int]]:
    """Positions sharing one image_sha1, for every hash held by two or more samples."""
    by_hash: dict[str, list[int]] = {}
    for i, sha in enumerate(image_sha1):
        if sha:
            by_hash.setdefault(sha, []).append(i)
    return [members for members in by_hash.values() if len(members) > 1]


def candidate_pairs(table: "Table", tiny: np.ndarray, max_distance: int
                    ) -> list[tuple[int, int, int]]:
    """Pairs (i, j, phash distance) of different images: hashes within ``max_distance`` bits,
    or one among the other's nearest neighbours by tiny thumbnail; either way correlating at
    least TINY_MIN_CORR at TINY x TINY."""
    index = np.flatnonzero(table.has_phash)
    ii, jj, dd, _ = near_pairs(table.phash[index], max_distance)
    found = {(int(index[i]), int(index[j])): int(d) for i, j, d in zip(ii, jj, dd)}
    x = normalise_tiny(tiny)
    for i, j in nearest_pairs(x):
        if (i, j) not in found:
            both = table.has_phash[i] and table.has_phash[j]
            found[(i, j)] = hamming(int(table.phash[i]), int(table.phash[j])) if both else -1
    out = []
    for (i, j), d in sorted(found.items()):
        if table.image_sha1[i] and table.image_sha1[i] == table.image_sha1[j]:
            continue  # identical pixels: the duplicate check's business
        if float(x[i] @ x[j]) < TINY_MIN_CORR:
            continue
        out.append((i, j, d))
    return out


def confirmed_pairs(table: Table, candidates: list[tuple[int, int, int]]
                    ) -> dict[tuple[int, int], int]:
    """Pairs that ingest grouped as near duplicates, by its own test: in one group, 64-bit
    hashes within NEAR_DUPLICATE_BITS and 256-bit hashes within CONFIRM_BITS. Clean reports
    every pair ingest kept together, across sources and classes too, even where the
    registration below would not confirm it (an overlay drawn on one copy, say).
    Returns (i, j) -> 64-bit hash distance."""
    if table.groups is None or table.phash256 is None:
        return {}
    members: dict[str, list[int]] = {}
    for i, group in enumerate(table.groups):
        if group and table.has_phash[i] and table.phash256[i] is not None:
            members.setdefault(group, []).append(i)
    out = {}
    for group in members.values():
        for k, i in enumerate(group):
            for j in group[k + 1:]:
                if table.image_sha1[i] and table.image_sha1[i] == table.image_sha1[j]:
                    continue  # identical pixels: the duplicate check's business
                distance = hamming(int(table.phash[i]), int(table.phash[j]))
                if (distance <= NEAR_DUPLICATE_BITS
                        and hamming(table.phash256[i], table.phash256[j]) <= CONFIRM_BITS):
                    out[(i, j)] = distance
    return out


@register("duplicate", "pairs", "error", "excluded", "1",
          "identical image pixels under another name; one kept, the others excluded")
def find_duplicates(table: Table, pairs: list, usable: np.ndarray, opts: CleanOptions
                    ) -> list[tuple[str, Finding]]:
    """Identical pixels under two or more names (among all samples, excluded ones too: a
    copy of an excluded image is a copy): keep the best-ranked one, exclude the rest.
    A copy whose mask disagrees with the kept one (Dice below --dice-min) makes a `conflict`
    on both: one of the two labels is wrong."""
    out: list[tuple[str, Finding]] = []
    conflict_action = "excluded" if opts.strict else "flagged"
    for members in duplicate_groups(table.image_sha1):
        keep = min(members, key=lambda i: table.rank[i])
        for i in members:
            if i == keep:
                continue
            out.append((table.ids[i], Finding(
                "duplicate", "error", 1.0, f"same image pixels as {table.ids[keep]} (kept)",
                action="excluded", partner=table.ids[keep])))
            if table.comparable[i] and table.comparable[keep]:
                score = dice(table.masks[i], table.masks[keep])
                if score < opts.dice_min:
                    for a, b in ((i, keep), (keep, i)):
                        out.append((table.ids[a], Finding(
                            "conflict", "warning", round(score, 4),
                            f"identical image {table.ids[b]} has a different mask (Dice {score:.2f})",
                            action="excluded" if a == i else conflict_action, partner=table.ids[b])))
    return out


def verified_pairs(table: Table, candidates: list[tuple[int, int, int]], opts: CleanOptions,
                   confirmed: dict[tuple[int, int], int] | None = None
                   ) -> list[tuple[int, int, int, tuple[float, float], float]]:
    """Candidates whose registered fine detail correlates at least --near-min-corr, and every
    pair in ``confirmed`` (see :func:`confirmed_pairs`) whatever its correlation:
    (i, j, hash distance, move of j onto i, correlation)."""
    confirmed = dict(confirmed or {})
    todo = {(i, j): d for i, j, d in candidates}
    todo.update({pair: d for pair, d in confirmed.items() if pair not in todo})
    out = []
    for (i, j), distance in sorted(todo.items()):
        if i not in table.details or j not in table.details:
            continue
        move, corr = register_images(table.details[i], table.details[j])
        if corr >= opts.near_min_corr or (i, j) in confirmed:
            out.append((i, j, distance, move, corr))
    return out


def neighbours(pairs: list, usable: np.ndarray) -> dict[int, list[int]]:
    """Each usable sample's near-identical usable samples (from verified pairs)."""
    out: dict[int, list[int]] = {}
    for i, j, *_ in pairs:
        if usable[i] and usable[j]:
            out.setdefault(i, []).append(j)
            out.setdefault(j, []).append(i)
    return out


# emitted by find_duplicates
register("conflict", "pairs", "warning", "flagged", "Dice of the two masks",
         "identical images with different masks; flagged (--strict: excluded)", worst="low")(None)


@register("near_duplicate_conflict", "pairs", "warning", "flagged", "Dice of the two masks",
          "near-identical images (in any source or class) whose masks disagree; both flagged "
          "(--strict: excluded)", worst="low")
def find_near_duplicate_conflicts(table: Table, pairs: list, usable: np.ndarray,
                                  opts: CleanOptions) -> list[tuple[str, Finding]]:
    """Near-identical images whose masks disagree once the images are registered.

    A sample is flagged when it disagrees with at least half of its near-identical
    neighbours: in a video, one wrong frame is then the only one flagged, not the eight
    frames around it that agree with each other; a lone pair flags both members, and a
    person decides which label is right. Excluded under --strict.
    """
    out: list[tuple[str, Finding]] = []
    action = "excluded" if opts.strict else "flagged"
    ok = usable & table.comparable
    agreement: dict[int, list[tuple[float, float, int, int]]] = {}
    for i, j, distance, move, corr in pairs:
        if not (ok[i] and ok[j]):
            continue
        score = dice(table.masks[i], table.masks[j], move)
        agreement.setdefault(i, []).append((score, corr, j, distance))
        agreement.setdefault(j, []).append((score, corr, i, distance))
    for i in sorted(agreement):
        scores = agreement[i]
        disagree = [entry for entry in scores if entry[0] < opts.dice_min]
        if not disagree or 2 * len(disagree) < len(scores):
            continue
        score, corr, j, distance = max(disagree, key=lambda entry: (entry[1], -entry[2]))
        others = f" and {len(disagree) - 1} more of its {len(scores)} near-identical images" \
            if len(scores) > 1 else ""
        out.append((table.ids[i], Finding(
            "near_duplicate_conflict", "warning", round(score, 4),
            f"near-identical to {table.ids[j]} (phash distance {distance}, detail correlation "
            f"{corr:.2f}) but the masks disagree (Dice {score:.2f}){others}",
            action=action, partner=table.ids[j])))
    return out


@register("leakage", "pairs", "error", "flagged", "perceptual-hash distance",
          "near-identical images in different splits; error in the summary", worst="low")
def find_leakage(table: Table, pairs: list, usable: np.ndarray, opts: CleanOptions
                 ) -> list[tuple[str, Finding]]:
    """Identical or near-identical images in different splits, both still in use: the test
    score would be measured on what training saw. Findings on both members."""
    candidates = [(i, j, d) for i, j, d, _, _ in pairs]
    for members in duplicate_groups(table.image_sha1):
        candidates += [(a, b, 0) for k, a in enumerate(members) for b in members[k + 1:]]
    out: list[tuple[str, Finding]] = []
    seen: set[tuple[int, int]] = set()
    for i, j, distance in candidates:
        key = (min(i, j), max(i, j))
        if key in seen or not (usable[i] and usable[j]) or table.splits[i] == table.splits[j]:
            continue
        seen.add(key)
        for a, b in ((i, j), (j, i)):
            out.append((table.ids[a], Finding(
                "leakage", "error", float(distance),
                f"near-identical to {table.ids[b]} in split {table.splits[b]} "
                f"(this one: {table.splits[a]}; phash distance {distance})",
                action="flagged", partner=table.ids[b])))
    return out


def leak_pairs(findings: list[tuple[str, Finding]], table: Table
               ) -> list[tuple[str, str, str, str, int]]:
    """The summary's list of leaking pairs (id_a, split_a, id_b, split_b, phash distance),
    each once, from :func:`find_leakage`'s findings."""
    split = dict(zip(table.ids, table.splits))
    pairs = {tuple(sorted((sid, f.partner))): int(f.value) for sid, f in findings if f.code == "leakage"}
    return sorted((a, split[a], b, split[b], d) for (a, b), d in pairs.items())
