"""Repairs: pure functions from a mask to a new mask. They never modify their input.

Binary masks here are ``uint8`` class indices (0 background, 1 foreground). Foreground
components use 8-connectivity (a diagonal step joins two pixels, so a thin vessel drawn
with diagonal runs stays one object); background holes use 4-connectivity, the dual that
makes "enclosed by 8-connected foreground" well defined.
"""

from __future__ import annotations

import cv2
import numpy as np
from skimage.filters import threshold_otsu


def mask_scale(mask: np.ndarray) -> int:
    """The nominal full-scale value of a raw mask: 1 for label images (0/1, e.g. nnU-Net),
    else 255. A JPEG mask of an empty frame may hold dark noise up to ~8, so the scale must
    not follow the observed maximum once it is above 1."""
    return 1 if int(mask.max(initial=0)) <= 1 else 255


def threshold_value(mask: np.ndarray, threshold: str | float = "mid") -> float:
    """The grey value above which a raw mask pixel is foreground.

    ``mid``: half the mask's nominal scale (0.5 for 0/1 label images, 127.5 for 0/255).
    ``otsu``: Otsu's threshold of the mask's values (mid when the mask has one value).
    A number: that grey value (on a 0/1 label image, numbers >= 1 mean the same as mid).
    """
    scale = mask_scale(mask)
    if threshold == "mid":
        return scale / 2.0
    if threshold == "otsu":
        if int(mask.min(initial=0)) == int(mask.max(initial=0)):
            return scale / 2.0
        return float(threshold_otsu(mask))
    value = float(threshold)
    return scale / 2.0 if scale == 1 and value >= 1 else value


def binarize(mask: np.ndarray, threshold: str | float = "mid") -> np.ndarray:
    """Raw grey mask -> class indices: 1 where the value is above the threshold."""
    return (mask > threshold_value(mask, threshold)).astype(np.uint8)


def bounding_box(binary: np.ndarray, margin: int = 1) -> tuple[slice, slice] | None:
    """Slices of the foreground's bounding box grown by ``margin`` px (clipped to the frame);
    None for an empty mask. Component and hole searches run on this crop only: nothing
    outside it can be a component, and background there is all one region."""
    x, y, w, h = cv2.boundingRect(binary)
    if w == 0 or h == 0:
        return None
    rows, cols = binary.shape
    return (slice(max(0, y - margin), min(rows, y + h + margin)),
            slice(max(0, x - margin), min(cols, x + w + margin)))


def thickness(binary: np.ndarray) -> np.ndarray:
    """Distance of each foreground pixel to the nearest background pixel (the frame's
    outside counts as background), i.e. the inscribed radius around it."""
    padded = cv2.copyMakeBorder(binary, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
    return cv2.distanceTransform(padded, cv2.DIST_L2, 3)[1:-1, 1:-1]


def compactness(binary: np.ndarray) -> float:
    """Isoperimetric quotient 4*pi*area / perimeter**2 of the largest 8-connected component
    (perimeter: its boundary pixels): about 0.3-0.7 for blobs such as polyps and lesions at
    any size, far below 0.05 for vessel trees. 1.0 for an empty mask."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
    if count < 2:
        return 1.0
    largest = (labels == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))).astype(np.uint8)
    inner = cv2.erode(largest, np.ones((3, 3), np.uint8), borderType=cv2.BORDER_CONSTANT, borderValue=0)
    perimeter = int(np.count_nonzero(largest > inner))
    return 4.0 * np.pi * int(np.count_nonzero(largest)) / max(perimeter, 1) ** 2


# A speck in a thin-structure mask must be a round blob at least this thick (inscribed
# radius, px; 5 px across) and this far (px) from every other foreground pixel. Real DRIVE
# vessel fragments are either line pieces (radius <= 2) or lie within 2 px of the tree.
BLOB_MIN_RADIUS = 2.5
BLOB_MAX_ELONGATION = 2.5
BLOB_MIN_GAP = 3


def _is_isolated_blob(binary: np.ndarray, labels: np.ndarray, label: int, stats: np.ndarray,
                      radius: np.ndarray) -> bool:
    x, y, w, h, area = (int(v) for v in stats[label])
    r = float(radius[labels == label].max()) if area else 0.0
    if r < BLOB_MIN_RADIUS or area > BLOB_MAX_ELONGATION * np.pi * r * r:
        return False
    g = BLOB_MIN_GAP
    y0, x0 = max(0, y - g), max(0, x - g)
    y1, x1 = min(binary.shape[0], y + h + g), min(binary.shape[1], x + w + g)
    own = (labels[y0:y1, x0:x1] == label).astype(np.uint8)
    near = cv2.dilate(own, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * g + 1, 2 * g + 1)))
    other = (binary[y0:y1, x0:x1] > 0) & (own == 0)
    return not (near.astype(bool) & other).any()


def find_specks(binary: np.ndarray, min_area: int, thin_compactness: float | None = None
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Specks: 8-connected foreground components smaller than ``min_area`` pixels, never the
    largest component (a mask whose only object is small is an area question, not noise).

    When ``thin_compactness`` is given and the mask is a thin structure (compactness below
    it: vessels), a small component is a speck only when it is a round blob standing apart
    from the rest; line-like pieces are vessel fragments and stay.
    Returns (labels image, speck labels, their areas).
    """
    labels = np.zeros(binary.shape, np.int32)
    none = np.zeros(0, np.int64)
    box = bounding_box(binary)
    if box is None:
        return labels, none, none
    # Labels alone are several times cheaper than labels with statistics, and most masks
    # are one piece: statistics only when there is more than one.
    count, labels[box] = cv2.connectedComponents(binary[box], connectivity=8)
    if count <= 2:
        return labels, none, none
    count, labels[box], stats, _ = cv2.connectedComponentsWithStats(binary[box], connectivity=8)
    areas = stats[:, cv2.CC_STAT_AREA]
    fg = np.arange(1, count)
    largest = fg[np.argmax(areas[1:])]
    specks = fg[(areas[1:] < min_area) & (fg != largest)]
    if len(specks) and thin_compactness is not None and compactness(binary) < thin_compactness:
        radius = thickness(binary)
        stats = stats.copy()
        stats[:, cv2.CC_STAT_LEFT] += box[1].start  # crop -> frame coordinates
        stats[:, cv2.CC_STAT_TOP] += box[0].start
        specks = np.array([label for label in specks
                           if _is_isolated_blob(binary, labels, label, stats, radius)], np.int64)
    return labels, specks, areas[specks]


def remove_specks(binary: np.ndarray, min_area: int, thin_compactness: float | None = None
                  ) -> np.ndarray:
    """Remove the specks :func:`find_specks` finds."""
    labels, specks, _ = find_specks(binary, min_area, thin_compactness)
    if not len(specks):
        return binary.copy()
    out = binary.copy()
    out[np.isin(labels, specks)] = 0
    return out


def hole_labels(binary: np.ndarray, max_hole: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Enclosed background regions (4-connected, not touching the frame border) of at most
    ``max_hole`` pixels: (labels image of the background, hole labels, their areas)."""
    labels = np.zeros(binary.shape, np.int32)
    none = np.zeros(0, np.int64)
    box = bounding_box(binary)
    if box is None:
        return labels, none, none
    # Inside the foreground's box grown by 1 px, background touching the crop's edge is
    # connected to the background outside it (or is at the frame border): not a hole.
    crop = (binary[box] == 0).astype(np.uint8)
    count, labels[box] = cv2.connectedComponents(crop, connectivity=4)
    if count <= 2:  # the background is one region: no holes (see find_specks on the cost)
        return labels, none, none
    count, labels[box], stats, _ = cv2.connectedComponentsWithStats(crop, connectivity=4)
    h, w = crop.shape
    x, y = stats[:, cv2.CC_STAT_LEFT], stats[:, cv2.CC_STAT_TOP]
    bw, bh, areas = stats[:, cv2.CC_STAT_WIDTH], stats[:, cv2.CC_STAT_HEIGHT], stats[:, cv2.CC_STAT_AREA]
    enclosed = (x > 0) & (y > 0) & (x + bw < w) & (y + bh < h) & (areas <= max_hole)
    enclosed[0] = False  # label 0 is the foreground here
    holes = np.flatnonzero(enclosed)
    return labels, holes, areas[holes]


def fill_holes(binary: np.ndarray, max_hole: int) -> np.ndarray:
    """Fill enclosed background holes of at most ``max_hole`` pixels (callers leave
    thin-structure masks alone: the loops between crossing vessels are not holes)."""
    labels, holes, _ = hole_labels(binary, max_hole)
    out = binary.copy()
    if len(holes):
        out[np.isin(labels, holes)] = 1
    return out


def invert(binary: np.ndarray) -> np.ndarray:
    """Swap foreground and background."""
    return (1 - binary).astype(np.uint8)
