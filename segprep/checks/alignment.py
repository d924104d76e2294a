"""What a sample's image says about its mask: the per-sample measurements behind `misaligned`
and `inverted`.

Both checks compare a sample with the other samples of its source (``checks/source.py``); what
one sample contributes is measured here, on the image and mask reduced to :data:`SIDE` px, over
the image's *content*: its field of view, without the dark frame around endoscopy images and
without specular highlights (both have the strongest edges and colours of such an image, and
neither says anything about where the object is).

Misalignment, measured against the same mask moved
    A mask drawn on its object marks where the image changes: its contour lies on an edge, and
    the colours just inside it differ from those in a ring just outside it. How strongly differs
    so much between images (polyps are often barely darker than the mucosa around them, while
    highlights and folds make strong edges) that an absolute score does not separate real
    Kvasir-SEG masks from masks shifted off their polyp. So each score is taken relative to the
    best score of the *same* mask moved by 0.2-1.0 of its size in 12 directions: a mask on its
    object is (near) the best placement of its own outline, a shifted or swapped mask is not.
    The two ratios (``ring``, ``edge``; 1 when no move scores better) are judged per source.

Colour evidence for `inverted`
    ``colour_in`` and ``colour_out`` are the Lab colour histograms of the content inside and
    outside the mask. Summed over a source they describe what its foreground and background look
    like; a mask is inverted when its outside looks like the source's foreground and its inside
    like its background, which large lesions filling the frame never do.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

# Images are measured at this size (longest side): a 332 px and a 1920 px frame then cost and
# score alike. 128 px: 5 ms per sample; 192 px finds ~0.05 more of the shifted masks at 2x the cost.
SIDE = 128
COLOUR_BITS = 3               # Lab quantised to 8 levels per channel: 512 colours
N_COLOURS = 1 << (3 * COLOUR_BITS)
_DIRECTIONS = 12
_MOVES = (0.2, 0.4, 0.6, 0.8, 1.0)   # fractions of the mask's equivalent diameter
_RING = 0.15                  # ring width and inner band, as a fraction of the diameter
_DARK = 30                    # a frame darker than this, connected to the border, is no content
_HIGHLIGHT_V, _HIGHLIGHT_S = 230, 60  # bright and colourless: a specular highlight

_ANGLES = np.linspace(0.0, 2.0 * np.pi, _DIRECTIONS, endpoint=False)
_OFFSETS = np.array([(0.0, 0.0)] + [(m * np.cos(a), m * np.sin(a)) for m in _MOVES for a in _ANGLES])


@dataclass
class Appearance:
    """One sample's measurements. NaN: not measurable (too small, no content around it; the
    placement ratios of thin structures, the edge alignment of blobs)."""

    ring: float              # inside/outside colour contrast at the mask's place / best moved
    edge: float              # gradient on the contour at its place / best moved
    colour_in: np.ndarray    # uint16 (N_COLOURS,) colour histogram of the content inside
    colour_out: np.ndarray   # uint16 (N_COLOURS,) ... and outside the mask
    thin_edge: float = float("nan")  # thin structures: edge_alignment of the mask


# Thin structures (vessels) are measured at up to this size: at SIDE a 1 px vessel of a 565 px
# fundus image is gone. They have no inside to contrast, and a vessel tree moved by a few
# pixels lands on other vessels, so they are judged by the absolute edge_alignment instead.
THIN_SIDE = 512


def _resize_pair(gray: np.ndarray, binary: np.ndarray, roi: np.ndarray | None
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    h, w = binary.shape
    scale = THIN_SIDE / max(h, w)
    if scale >= 1:
        return gray, binary, roi
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    gray = cv2.resize(gray, size, interpolation=cv2.INTER_AREA)
    binary = cv2.resize(binary, size, interpolation=cv2.INTER_NEAREST)
    if roi is not None:
        roi = cv2.resize(roi, size, interpolation=cv2.INTER_NEAREST)
    return gray, binary, roi


def edge_alignment(image: np.ndarray, binary: np.ndarray, roi: np.ndarray | None = None
                   ) -> float:
    """Mean image gradient on the mask's contour / mean gradient of the whole image inside the
    field of view, for an RGB (H, W, 3) or grey (H, W) image and a class-index mask; NaN when
    the mask has (almost) no contour inside the frame and field of view. Vessels drawn on
    vessels: 2-10 times the image's mean gradient; moved off them: about 1."""
    if image.shape[:2] != binary.shape:
        return float("nan")
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if image.ndim == 3 else image
    gray, binary, roi = _resize_pair(gray, binary, roi)
    h, w = binary.shape
    gray = cv2.GaussianBlur(gray, (5, 5), 1.0)
    # L1 gradient magnitude |gx| + |gy|: as good as L2 for a ratio, and cheaper.
    grad = cv2.add(cv2.convertScaleAbs(cv2.Sobel(gray, cv2.CV_16S, 1, 0, ksize=3), alpha=0.25),
                   cv2.convertScaleAbs(cv2.Sobel(gray, cv2.CV_16S, 0, 1, ksize=3), alpha=0.25))
    contour = cv2.subtract(binary, cv2.erode(binary, np.ones((3, 3), np.uint8),
                                             borderType=cv2.BORDER_REPLICATE))
    # Where the frame border or the field-of-view border cuts the mask there is no image edge
    # to follow (and the FOV border itself is the strongest edge of a fundus image).
    valid = np.zeros((h, w), np.uint8)
    valid[3:-3, 3:-3] = 1
    if roi is not None and roi.shape == binary.shape:
        valid &= cv2.erode((roi > 0).astype(np.uint8), np.ones((7, 7), np.uint8))
    contour &= valid
    if cv2.countNonZero(contour) < 8:
        return float("nan")
    return cv2.mean(grad, mask=contour)[0] / max(cv2.mean(grad, mask=valid)[0], 1e-3)


def _reduce(image: np.ndarray, binary: np.ndarray, roi: np.ndarray | None
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    h, w = binary.shape
    scale = min(1.0, SIDE / max(h, w))
    if scale == 1.0:
        return image, binary, roi
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    binary = cv2.resize(binary, size, interpolation=cv2.INTER_NEAREST)
    if roi is not None:
        roi = cv2.resize(roi, size, interpolation=cv2.INTER_NEAREST)
    return image, binary, roi


def content_mask(image: np.ndarray, roi: np.ndarray | None = None) -> np.ndarray:
    """Pixels that show the scene: inside the ROI, outside a dark frame connected to the image
    border (endoscopy's black corners) and away from specular highlights."""
    value = cv2.GaussianBlur(image.max(axis=2), (5, 5), 0)
    dark = (value < _DARK).astype(np.uint8)
    _, labels = cv2.connectedComponents(dark, connectivity=4)
    rim = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    excluded = np.isin(labels, rim[rim > 0]).astype(np.uint8)
    excluded = cv2.dilate(excluded, np.ones((5, 5), np.uint8))
    hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV)
    highlight = ((hsv[..., 2] > _HIGHLIGHT_V) & (hsv[..., 1] < _HIGHLIGHT_S)).astype(np.uint8)
    excluded |= cv2.dilate(highlight, np.ones((3, 3), np.uint8))
    if roi is not None and roi.shape == excluded.shape:
        excluded |= cv2.erode((roi > 0).astype(np.uint8), np.ones((5, 5), np.uint8)) == 0
    return excluded == 0


def colour_index(image: np.ndarray) -> np.ndarray:
    """Each pixel's quantised Lab colour, 0..N_COLOURS-1, int32."""
    lab = cv2.cvtColor(image, cv2.COLOR_RGB2LAB)
    shift = 8 - COLOUR_BITS
    return (((lab[..., 0] >> shift).astype(np.int32) << (2 * COLOUR_BITS))
            | ((lab[..., 1] >> shift).astype(np.int32) << COLOUR_BITS)
            | (lab[..., 2] >> shift).astype(np.int32))


def equivalent_diameter(binary: np.ndarray) -> float:
    return 2.0 * float(np.sqrt(np.count_nonzero(binary) / np.pi))


def _moved(region: np.ndarray, offsets: np.ndarray, margin: int = 0
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The region's pixel coordinates under every offset (rows), clipped, and which stay inside."""
    ys, xs = np.nonzero(region)
    h, w = region.shape
    y = ys[None] + offsets[:, 1:2]
    x = xs[None] + offsets[:, 0:1]
    inside = (y >= margin) & (y < h - margin) & (x >= margin) & (x < w - margin)
    return np.clip(y, 0, h - 1), np.clip(x, 0, w - 1), inside


def _placement_scores(colours: np.ndarray, gradient: np.ndarray, binary: np.ndarray
                      ) -> tuple[float, float]:
    """(ring, edge) ratios of the mask at its place against its best moved placement."""
    diameter = equivalent_diameter(binary)
    radius = max(2, int(round(_RING * diameter)))
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    inner = binary & (1 - cv2.erode(binary, disc))
    ring = cv2.dilate(binary, disc) & (1 - binary)
    contour = binary - cv2.erode(binary, np.ones((3, 3), np.uint8), borderType=cv2.BORDER_REPLICATE)
    offsets = np.rint(_OFFSETS * diameter).astype(np.int64)
    n = len(offsets)

    y, x, in_frame_inner = _moved(inner, offsets)
    inner_colour = colours[y, x]
    usable_inner = in_frame_inner & (inner_colour >= 0)
    y, x, in_frame_ring = _moved(ring, offsets)
    ring_colour = colours[y, x]
    usable_ring = in_frame_ring & (ring_colour >= 0)
    y, x, usable_contour = _moved(contour, offsets, margin=3)
    contour_gradient = gradient[y, x]
    usable_contour &= np.isfinite(contour_gradient)
    # A placement counts when most of the mask stays in the frame and enough content is seen.
    valid = ((in_frame_inner.sum(1) >= 0.6 * inner_colour.shape[1])
             & (in_frame_ring.sum(1) >= 0.3 * ring_colour.shape[1])
             & (usable_inner.sum(1) >= 8) & (usable_ring.sum(1) >= 8) & (usable_contour.sum(1) >= 6))
    if not valid[0] or not valid[1:].any():
        return float("nan"), float("nan")
    rows = np.broadcast_to(np.arange(n)[:, None], inner_colour.shape)
    inside = np.bincount((rows * N_COLOURS + inner_colour)[usable_inner],
                         minlength=n * N_COLOURS).reshape(n, N_COLOURS) + 0.5
    rows = np.broadcast_to(np.arange(n)[:, None], ring_colour.shape)
    outside = np.bincount((rows * N_COLOURS + ring_colour)[usable_ring],
                          minlength=n * N_COLOURS).reshape(n, N_COLOURS) + 0.5
    inside /= inside.sum(1, keepdims=True)
    outside /= outside.sum(1, keepdims=True)
    contrast = 1.0 - np.sqrt(inside * outside).sum(1)   # 1 - Bhattacharyya coefficient
    edge = (np.where(usable_contour, np.nan_to_num(contour_gradient), 0.0).sum(1)
            / np.maximum(usable_contour.sum(1), 1))
    moved = valid.copy()
    moved[0] = False
    best_contrast, best_edge = contrast[moved].max(), edge[moved].max()
    return (float(contrast[0] / best_contrast) if best_contrast > 0 else float("nan"),
            float(edge[0] / best_edge) if best_edge > 0 else float("nan"))


def measure(image: np.ndarray, binary: np.ndarray, roi: np.ndarray | None = None, *,
            thin: bool = False) -> Appearance:
    """The measurements of one RGB (H, W, 3) image and its class-index mask (H, W). A ``thin``
    structure (vessels) gets :func:`edge_alignment` instead of the placement ratios."""
    binary = binary.astype(np.uint8)
    thin_edge = edge_alignment(image, binary, roi) if thin else float("nan")
    image, binary, roi = _reduce(image, binary, roi)
    content = content_mask(image, roi)
    colours = colour_index(image)
    colours[~content] = -1
    inside = binary > 0
    colour_in = np.bincount(colours[inside & content], minlength=N_COLOURS).astype(np.uint16)
    colour_out = np.bincount(colours[~inside & content], minlength=N_COLOURS).astype(np.uint16)
    ring = edge = float("nan")
    if not thin and 16 <= np.count_nonzero(binary) < binary.size:
        grey = cv2.GaussianBlur(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), (5, 5), 1.0)
        gradient = cv2.magnitude(cv2.Sobel(grey, cv2.CV_32F, 1, 0, ksize=3),
                                 cv2.Sobel(grey, cv2.CV_32F, 0, 1, ksize=3))
        gradient[~content] = np.nan
        ring, edge = _placement_scores(colours, gradient, binary)
    return Appearance(ring, edge, colour_in, colour_out, thin_edge)


def robust_z(values: np.ndarray, floor: float, reference: np.ndarray | None = None) -> np.ndarray:
    """(x - median) / (1.4826 * MAD), with the scale never below ``floor`` (a source whose
    scores are all alike would otherwise turn tiny differences into huge z-scores).
    The median and MAD are those of ``reference`` (default: ``values``). NaN stays NaN."""
    values = np.asarray(values, np.float64)
    reference = values if reference is None else np.asarray(reference, np.float64)
    finite = reference[np.isfinite(reference)]
    if len(finite) == 0:
        return np.full_like(values, np.nan)
    median = float(np.median(finite))
    scale = max(1.4826 * float(np.median(np.abs(finite - median))), floor)
    return (values - median) / scale
