"""Injected defects: one function per code, each returning the changed sample and a short note.

Every defect is made unmistakable on purpose, because ``segprep clean`` is scored against
this truth: clean samples must not look like any defect, and each defective sample must
look like exactly one. Masks here are uint8 0/255 at the image's size unless the defect
says otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from io import BytesIO
from typing import Callable

import cv2
import numpy as np
from PIL import Image

from segprep.synth.painters import Painted

DEFECTS: tuple[str, ...] = (
    "nonbinary", "speckle", "holes", "empty", "inverted", "misaligned", "size_mismatch",
    "corrupt_image", "missing_mask", "duplicate", "near_duplicate_conflict",
)
COPY_DEFECTS = ("duplicate", "near_duplicate_conflict")


@dataclass
class Item:
    """What will be written for one sample. ``mask`` None means the mask file is left out."""

    image: np.ndarray
    mask: np.ndarray | None
    roi: np.ndarray | None = None
    mask2: np.ndarray | None = None
    truncate_to: float | None = None  # share of the image file's bytes that is kept

    @classmethod
    def from_painted(cls, painted: Painted) -> "Item":
        return cls(painted.image, painted.mask, painted.roi, painted.mask2)


@dataclass
class Context:
    """What a defect may need besides the sample itself."""

    rng: np.random.Generator
    thin: bool                                   # vessel masks: structures 1-4 px wide
    source: Painted | None = None                # the sample a copy is made of
    source_stem: str = ""
    paint_other: Callable[[int], Painted] | None = None  # paints unrelated sample no. k


def dice(a: np.ndarray, b: np.ndarray) -> float:
    fa, fb = a > 127, b > 127
    total = int(fa.sum()) + int(fb.sum())
    return 1.0 if total == 0 else 2.0 * int((fa & fb).sum()) / total


def shift(array: np.ndarray, dy: int, dx: int, border: int = cv2.BORDER_CONSTANT) -> np.ndarray:
    """Translate by whole pixels; uncovered pixels are 0 (or reflected for images)."""
    h, w = array.shape[:2]
    matrix = np.float32([[1, 0, dx], [0, 1, dy]])
    return cv2.warpAffine(array, matrix, (w, h), flags=cv2.INTER_NEAREST, borderMode=border)


def _free_points(rng: np.random.Generator, allowed: np.ndarray, count: int,
                 spacing: float) -> list[tuple[int, int]]:
    """Up to ``count`` random (y, x) points inside ``allowed``, at least ``spacing`` apart."""
    points: list[tuple[int, int]] = []
    candidates = np.argwhere(allowed)
    for idx in rng.permutation(len(candidates)):
        y, x = candidates[idx]
        if all((y - py) ** 2 + (x - px) ** 2 >= spacing ** 2 for py, px in points):
            points.append((int(y), int(x)))
            if len(points) == count:
                break
    return points


# ---------------------------------------------------------------------------------------
# mask defects


def nonbinary(item: Item, ctx: Context) -> tuple[Item, str]:
    """Many grey values; thresholding at 128 still gives the object back.

    Blobs get a strong blur (a wide anti-aliased border). A blur would erase 1 px vessels,
    so vessel masks instead get a plateau of greys 150-250 plus a grey 1 px halo.
    """
    mask = item.mask
    s = min(mask.shape)
    if ctx.thin:
        field = cv2.resize(ctx.rng.uniform(0.6, 0.98, (4, 4)).astype(np.float32),
                           mask.shape[::-1], interpolation=cv2.INTER_LINEAR)
        halo = cv2.dilate(mask, np.ones((3, 3), np.uint8)) & ~mask
        grey = np.where(mask > 0, 255 * field, 0) + np.where(halo > 0, 70, 0)
        note = "vessels as grey plateau 150-250 with a grey halo"
    else:
        sigma = max(2.0, 0.03 * s)
        grey = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), sigma)
        note = f"gaussian blur sigma {sigma:.1f} px"
    return replace(item, mask=np.clip(np.round(grey), 0, 255).astype(np.uint8)), note


def speckle(item: Item, ctx: Context) -> tuple[Item, str]:
    """4-10 small isolated specks (filled discs of radius 2-3 px) well away from the object."""
    mask = item.mask
    wanted = int(ctx.rng.integers(4, 11))
    points: list[tuple[int, int]] = []
    # Crowded masks (dense vessels, small frames) get a smaller gap rather than fewer specks.
    for gap in (max(4, round(0.04 * min(mask.shape))), 3, 1):
        away = cv2.distanceTransform((mask == 0).astype(np.uint8), cv2.DIST_L2, 3) > gap + 3
        away[:4, :] = away[-4:, :] = False
        away[:, :4] = away[:, -4:] = False
        if item.roi is not None:  # specks outside the field of view would be a different story
            away &= cv2.erode(item.roi, np.ones((9, 9), np.uint8)) > 0
        points = _free_points(ctx.rng, away, wanted, spacing=gap + 6)
        if len(points) >= 3:
            break
    out = mask.copy()
    for y, x in points:
        cv2.circle(out, (x, y), int(ctx.rng.integers(2, 4)), 255, -1)
    return replace(item, mask=out), f"{len(points)} specks"


def holes(item: Item, ctx: Context) -> tuple[Item, str]:
    """2-4 small round background holes deep inside the object (discs of radius 1-4 px)."""
    mask = item.mask
    radius = max(2, round(min(mask.shape) / 80))
    depth = cv2.distanceTransform((mask > 0).astype(np.uint8), cv2.DIST_L2, 3)
    wanted = int(ctx.rng.integers(2, 5))
    # Small objects get holes closer to their border, then smaller holes, never fewer than 2.
    for r, margin in ((radius, 3.0), (radius, 1.5), (max(1, radius - 1), 1.5)):
        points = _free_points(ctx.rng, depth > r + margin, wanted, spacing=2 * r + 3)
        if len(points) >= 2:
            break
    out = mask.copy()
    for y, x in points:
        cv2.circle(out, (x, y), r, 0, -1)
    return replace(item, mask=out), f"{len(points)} holes of radius {r} px"


def empty(item: Item, ctx: Context) -> tuple[Item, str]:
    return replace(item, mask=np.zeros_like(item.mask)), "all-zero mask"


def inverted(item: Item, ctx: Context) -> tuple[Item, str]:
    return replace(item, mask=255 - item.mask), "mask = 255 - mask"


def misaligned(item: Item, ctx: Context) -> tuple[Item, str]:
    """Shift the mask 15-35% of the image size, far enough that it mostly leaves the object.

    Larger objects need larger shifts before the moved mask stops overlapping them, so the
    shift grows until the Dice with the true mask is at most 0.35 while most of the mask
    stays in the frame. A shifted vessel tree hardly overlaps itself but may land on other
    vessels, so for vessels the shift that best avoids the whole (dilated) tree is kept.
    """
    mask = item.mask
    h, w = mask.shape
    area = int((mask > 127).sum())
    target = cv2.dilate(mask, np.ones((5, 5), np.uint8)) if ctx.thin else mask
    good_enough = 0.05 if ctx.thin else 0.35
    best: tuple[float, int, int, np.ndarray] | None = None
    for attempt in range(40):
        fraction = ctx.rng.uniform(0.15, 0.25) + 0.1 * attempt / 40
        angle = ctx.rng.uniform(0, 2 * np.pi)
        dy, dx = round(fraction * h * np.sin(angle)), round(fraction * w * np.cos(angle))
        moved = shift(mask, dy, dx)
        kept = int((moved > 127).sum()) / max(area, 1)
        score = dice(moved, target)
        if kept >= 0.7 and (best is None or score < best[0]):
            best = (score, dy, dx, moved)
        if best is not None and best[0] <= good_enough:
            break
    if best is None:  # nothing stays in frame; a half-frame roll always does
        dy, dx = h // 2, w // 2
        best = (0.0, dy, dx, np.roll(mask, (dy, dx), (0, 1)))
    _, dy, dx, moved = best
    note = f"shift ({dy}, {dx}), dice with true mask {dice(moved, mask):.2f}"
    return replace(item, mask=moved), note


def size_mismatch(item: Item, ctx: Context) -> tuple[Item, str]:
    """The mask resized so that each side differs from the image's by 25% or more.

    Vessel masks are only enlarged: shrinking 1 px vessels with nearest-neighbour sampling
    breaks them into dashes, which would look like `speckle` as well.
    """
    h, w = item.mask.shape
    choices = [1.25, 1.5] if ctx.thin else [0.5, 0.75, 1.25, 1.5]
    factors = ctx.rng.choice(choices, size=2)
    nh, nw = max(8, round(h * factors[0])), max(8, round(w * factors[1]))
    resized = cv2.resize(item.mask, (nw, nh), interpolation=cv2.INTER_NEAREST)
    return replace(item, mask=resized), f"mask {nh}x{nw}, image {h}x{w}"


# ---------------------------------------------------------------------------------------
# file and sample defects


def corrupt_image(item: Item, ctx: Context) -> tuple[Item, str]:
    keep = float(ctx.rng.uniform(0.35, 0.65))
    return replace(item, truncate_to=keep), f"image file cut to {keep:.0%} of its bytes"


def missing_mask(item: Item, ctx: Context) -> tuple[Item, str]:
    return replace(item, mask=None), "mask file not written"


def duplicate(item: Item, ctx: Context) -> tuple[Item, str]:
    """An exact copy of the source: same pixels (and same bytes, same encoder) and mask."""
    src = ctx.source
    return Item(src.image.copy(), src.mask.copy(), src.roi, src.mask2), f"copy of {ctx.source_stem}"


def near_duplicate_conflict(item: Item, ctx: Context) -> tuple[Item, str]:
    """The source shifted a few px and JPEG re-encoded, with a mask of a different region.

    Blob layouts get another sample's object moved into the largest free spot away from
    the source's object (objects sit near the centre, so an unmoved one would overlap);
    vessel layouts get another sample's vessel tree. Either way the Dice with the source's
    shifted mask is low: two near-identical images that disagree about the object.
    """
    src = ctx.source
    reach = max(3, min(src.mask.shape) // 40)
    dy, dx = 0, 0
    while abs(dy) + abs(dx) < 2:
        dy, dx = (int(v) for v in ctx.rng.integers(-reach, reach + 1, size=2))
    image = reencode(shift(src.image, dy, dx, cv2.BORDER_REFLECT_101), quality=85)
    true_mask = shift(src.mask, dy, dx)
    if ctx.thin:
        trees = [ctx.paint_other(attempt).mask for attempt in range(4)]
        mask = min(trees, key=lambda tree: dice(tree, true_mask))
    else:
        mask = _object_elsewhere(ctx.paint_other(0).mask, true_mask)
    roi = None if src.roi is None else shift(src.roi, dy, dx)
    mask2 = None if src.mask2 is None else shift(src.mask2, dy, dx)
    note = (f"shift ({dy}, {dx}) re-encoded copy of {ctx.source_stem} with the mask of "
            f"another region (dice {dice(mask, true_mask):.2f})")
    return Item(image, mask, roi, mask2), note


def _object_elsewhere(other: np.ndarray, taken: np.ndarray) -> np.ndarray:
    """``other``'s object centred on the free pixel farthest from ``taken`` and the frame,
    shrunk to fit there, but never below a tenth of the frame (it must not pass for a speck)."""
    h, w = taken.shape
    free = (taken <= 127).astype(np.uint8)
    free[0, :] = free[-1, :] = free[:, 0] = free[:, -1] = 0
    room = cv2.distanceTransform(free, cv2.DIST_L2, 5)
    cy, cx = np.unravel_index(int(np.argmax(room)), room.shape)
    ys, xs = np.nonzero(other > 127)
    crop = other[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
    reach = float(np.hypot(*crop.shape)) / 2
    scale = float(np.clip((room[cy, cx] - 2) / reach, 0.1 * min(h, w) / reach, 1.0))
    crop = cv2.resize(crop, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
    out = np.zeros_like(taken)
    top, left = cy - crop.shape[0] // 2, cx - crop.shape[1] // 2
    y0, x0 = max(top, 0), max(left, 0)
    y1, x1 = min(top + crop.shape[0], h), min(left + crop.shape[1], w)
    out[y0:y1, x0:x1] = crop[y0 - top:y1 - top, x0 - left:x1 - left]
    return out


def reencode(image: np.ndarray, quality: int) -> np.ndarray:
    """A JPEG round trip: the pixels a re-saved frame would have."""
    buffer = BytesIO()
    Image.fromarray(image).save(buffer, "JPEG", quality=quality)
    return np.array(Image.open(BytesIO(buffer.getvalue())).convert("RGB"))


INJECT: dict[str, Callable[[Item, Context], tuple[Item, str]]] = {
    "nonbinary": nonbinary, "speckle": speckle, "holes": holes, "empty": empty,
    "inverted": inverted, "misaligned": misaligned, "size_mismatch": size_mismatch,
    "corrupt_image": corrupt_image, "missing_mask": missing_mask, "duplicate": duplicate,
    "near_duplicate_conflict": near_duplicate_conflict,
}
assert tuple(INJECT) == DEFECTS
