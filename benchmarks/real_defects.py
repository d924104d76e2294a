"""A corrupted copy of a real dataset with known defects, for `clean_quality.py --real`.

Built in a temporary folder from the dataset as shipped (never committed): the images are
linked, and a share of the masks is replaced by a defective one of a known kind. Real defects
are rarer and subtler than synthetic ones; what they look like is taken from the failures seen
on real datasets (issue 16): masks shifted beside their object, saved rotated, swapped with
another image's mask, inverted; lesions that fill the frame (which must *not* be called
inverted); masks with faint grey edges; one mask file per lesion; near-identical images with
different masks in another source.

Kinds and the code clean should give (None: no finding expected):

========================  ==============================================================  ======================
kind                      what                                                            code
========================  ==============================================================  ======================
shift20/40/60             the mask moved by 20/40/60% of its equivalent diameter          misaligned
rotate                    the mask rotated 180 degrees or flipped (an orientation slip)   misaligned
swap                      another image's mask of similar area, overlapping little        misaligned
inverted                  the mask's complement                                           inverted
crop                      a crop inside a large polyp: foreground 80-95%, 3 borders       None (not inverted)
crop_inverted             the complement of such a crop's mask                            inverted
grey_edges                the mask with a 1 px grey (128) outline, saved losslessly       nonbinary
split                     the mask's objects (or halves) as stem.png + stem_1.png          merged_masks
copy_conflict             a re-encoded, slightly cropped copy in a second source with     near_duplicate_conflict
                          another image's mask (as for swap)
========================  ==============================================================  ======================
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from segprep.imageio import read_image, read_mask

KINDS = ("shift20", "shift40", "shift60", "rotate", "swap", "inverted", "crop", "crop_inverted",
         "grey_edges", "split", "copy_conflict")
EXPECTED = {"shift20": "misaligned", "shift40": "misaligned", "shift60": "misaligned",
            "rotate": "misaligned", "swap": "misaligned", "inverted": "inverted", "crop": None,
            "crop_inverted": "inverted", "grey_edges": "nonbinary", "split": "merged_masks",
            "copy_conflict": "near_duplicate_conflict"}
COPY_SOURCE = "Kvasir-copy"


@dataclass
class Corrupted:
    root: Path                       # SRC for segprep ingest (holds both sources)
    truth: dict[str, str]            # stem -> kind (stems of the main source and of the copies)
    n_images: int


def _equivalent_diameter(mask: np.ndarray) -> float:
    return 2.0 * float(np.sqrt(np.count_nonzero(mask) / np.pi))


def shift(mask: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """The mask moved by ``fraction`` of its equivalent diameter, in a direction that keeps
    (most of) it inside the frame."""
    h, w = mask.shape
    distance = fraction * _equivalent_diameter(mask)
    best, kept_best = mask, -1.0
    for _ in range(60):
        angle = rng.uniform(0, 2 * np.pi)
        moved = cv2.warpAffine(mask, np.float32([[1, 0, distance * np.cos(angle)],
                                                 [0, 1, distance * np.sin(angle)]]), (w, h),
                               flags=cv2.INTER_NEAREST)
        kept = np.count_nonzero(moved) / max(np.count_nonzero(mask), 1)
        if kept > kept_best:
            best, kept_best = moved, kept
        if kept >= 0.9:
            break
    return best


def rotate(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    kind = int(rng.integers(0, 3))
    flipped = mask[::-1, ::-1] if kind == 0 else mask[:, ::-1] if kind == 1 else mask[::-1, :]
    return np.ascontiguousarray(flipped)


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    total = np.count_nonzero(a) + np.count_nonzero(b)
    return 2.0 * np.count_nonzero(a & b) / total if total else 1.0


def other_mask(stem: str, stems: list[str], masks: dict[str, np.ndarray], fractions: np.ndarray,
               rng: np.random.Generator, tolerance: float = 0.25, max_dice: float = 0.3) -> np.ndarray:
    """Another image's mask of similar area (within ``tolerance``) that overlaps this one's
    little (Dice at most ``max_dice``: a swapped mask that happens to cover the same polyp is no
    defect), at this image's size."""
    index = stems.index(stem)
    own = masks[stem]
    order = np.argsort(np.abs(fractions - fractions[index]) / fractions[index])
    close = [int(j) for j in order[1:] if abs(fractions[j] - fractions[index]) <= tolerance * fractions[index]]
    for j in [int(k) for k in rng.permutation(close)] + [int(k) for k in order[1:]]:
        other = cv2.resize(masks[stems[j]], own.shape[::-1], interpolation=cv2.INTER_NEAREST)
        if _dice(own, other) <= max_dice:
            return other
    raise ValueError(f"{stem}: no other mask overlaps it little enough")


def crop_inside(image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """A crop around the mask's largest object that the object fills 80-95% of, touching
    three borders of the crop, or None when the object is too small to give one."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if count < 2:
        return None
    label = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    x, y, bw, bh, area = (int(v) for v in stats[label])
    if min(bw, bh) < 120:
        return None
    obj = (labels == label).astype(np.uint8)
    # shrink the box from the top until the object fills 80-95% of it; the object then
    # reaches the left, right and bottom sides of the crop
    for top_cut in np.linspace(0.05, 0.5, 10):
        y0 = y + int(top_cut * bh)
        for inset in (0.12, 0.16, 0.2):
            x0, x1 = x + int(inset * bw), x + bw - int(inset * bw)
            y1 = y + bh - int(inset * bh)
            crop = obj[y0:y1, x0:x1]
            if crop.size == 0:
                continue
            share = crop.mean()
            sides = [crop[:, 0].mean(), crop[:, -1].mean(), crop[-1].mean(), crop[0].mean()]
            if 0.8 <= share <= 0.95 and sum(s > 0.5 for s in sides) >= 3:
                return np.ascontiguousarray(image[y0:y1, x0:x1]), np.ascontiguousarray(crop)
    return None


def grey_edges(mask: np.ndarray) -> np.ndarray:
    """0/255 mask with its 1 px outline at 128, as anti-aliased drawing leaves it."""
    out = mask.copy()
    edge = mask - cv2.erode(mask, np.ones((3, 3), np.uint8))
    out[edge > 0] = 128
    return out


def split(mask: np.ndarray) -> list[np.ndarray]:
    """The mask's objects as separate masks; one object is cut into a left and a right part."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    big = [k for k in range(1, count) if stats[k, cv2.CC_STAT_AREA] >= 200]
    if len(big) >= 2:
        parts = [(labels == k).astype(np.uint8) * 255 for k in big]
        rest = (mask > 0) & ~np.isin(labels, big)
        parts[0][rest] = 255
        return parts
    xs = np.nonzero(mask)[1]
    middle = int(np.median(xs))
    left, right = mask.copy(), mask.copy()
    left[:, middle:] = 0
    right[:, :middle] = 0
    return [left, right]


def _write(path: Path, array: np.ndarray, quality: int = 95) -> None:
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if path.suffix == ".jpg" else []
    if array.ndim == 3:
        array = cv2.cvtColor(array, cv2.COLOR_RGB2BGR)
    ok, data = cv2.imencode(path.suffix, array, params)
    assert ok, path
    path.write_bytes(data.tobytes())


def make_corrupted(dataset: Path, out: Path, per_kind: int = 20, seed: int = 0) -> Corrupted:
    """Kvasir-SEG (images/*.jpg, masks/*.jpg) copied to ``out`` with ``per_kind`` samples of
    every kind (crops and copies are added as new samples)."""
    rng = np.random.default_rng(seed)
    images = sorted((dataset / "images").glob("*.jpg"))
    stems = [p.stem for p in images]
    root = out / "corrupted"
    shutil.rmtree(root, ignore_errors=True)
    main = root / "Kvasir-SEG"
    copies = root / COPY_SOURCE
    for folder in (main / "images", main / "masks", copies / "images", copies / "masks"):
        folder.mkdir(parents=True, exist_ok=True)
    (main / "kavsir_bboxes.json").write_text(json.dumps({}))
    masks = {s: (read_mask(dataset / "masks" / f"{s}.jpg") > 127).astype(np.uint8) for s in stems}
    fractions = np.array([masks[s].mean() for s in stems])
    order = [int(i) for i in rng.permutation(len(stems))]
    plan: dict[str, str] = {}
    replaced = ("shift20", "shift40", "shift60", "rotate", "swap", "inverted", "grey_edges", "split")
    cursor = 0
    for kind in replaced:
        for _ in range(per_kind):
            plan[stems[order[cursor]]] = kind
            cursor += 1
    truth: dict[str, str] = dict(plan)
    for k, stem in enumerate(stems):
        os.symlink((dataset / "images" / f"{stem}.jpg").resolve(), main / "images" / f"{stem}.jpg")
        mask = masks[stem]
        kind = plan.get(stem)
        if kind is None:
            os.symlink((dataset / "masks" / f"{stem}.jpg").resolve(), main / "masks" / f"{stem}.jpg")
            continue
        if kind.startswith("shift"):
            new = shift(mask, int(kind[5:]) / 100, rng)
        elif kind == "rotate":
            new = rotate(mask, rng)
        elif kind == "swap":
            new = other_mask(stem, stems, masks, fractions, rng)
        elif kind == "inverted":
            new = 1 - mask
        elif kind == "grey_edges":
            _write(main / "masks" / f"{stem}.png", grey_edges(mask * 255))
            continue
        else:  # split
            for n, part in enumerate(split(mask * 255)):
                _write(main / "masks" / (f"{stem}.png" if n == 0 else f"{stem}_{n}.png"), part)
            continue
        _write(main / "masks" / f"{stem}.jpg", new * 255)

    # New samples: crops inside large polyps (and inverted crops), and near-identical copies.
    untouched = [stems[i] for i in order[cursor:]]
    made = {"crop": 0, "crop_inverted": 0}
    for stem in untouched:
        if made["crop"] >= per_kind and made["crop_inverted"] >= per_kind:
            break
        cropped = crop_inside(read_image(dataset / "images" / f"{stem}.jpg"), masks[stem])
        if cropped is None:
            continue
        kind = "crop" if made["crop"] <= made["crop_inverted"] else "crop_inverted"
        image, mask = cropped
        name = f"{stem}-crop"
        _write(main / "images" / f"{name}.jpg", image)
        _write(main / "masks" / f"{name}.jpg", (mask if kind == "crop" else 1 - mask) * 255)
        truth[name] = kind
        made[kind] += 1
    chosen = untouched[-per_kind:]
    for stem in chosen:
        image = read_image(dataset / "images" / f"{stem}.jpg")
        h, w = image.shape[:2]
        dy, dx = max(1, h // 50), max(1, w // 50)
        image = image[dy:h - dy, dx:w - dx]
        other = other_mask(stem, stems, masks, fractions, rng)
        mask = np.ascontiguousarray(other[dy:h - dy, dx:w - dx])
        _write(copies / "images" / f"{stem}.jpg", image, quality=90)
        _write(copies / "masks" / f"{stem}.jpg", mask * 255)
        truth[f"copy:{stem}"] = "copy_conflict"
    return Corrupted(root, truth, len(stems) + made["crop"] + made["crop_inverted"] + len(chosen))
