"""misaligned: does the mask's outline follow edges in the image?

:func:`edge_alignment` measures one sample: the mean image gradient magnitude on the mask's
contour divided by the mean gradient magnitude over the whole image (inside the field of
view). A mask drawn on its object puts its contour on the object's edge, where the image
changes most (synthetic data: 2-10 times the image's mean gradient; a mask shifted off its
object: about 1). How high "aligned" is depends on the images, so the stage compares each
sample's log score with its own source's distribution (:func:`robust_z`) and flags the
low tail.
"""

from __future__ import annotations

import cv2
import numpy as np

# Images are measured at this size at most (longest side): the score is then about the
# same for a 332 px and a 1920 px frame, and a 1920 px frame costs no more than a 512 px one.
MAX_SIDE = 512


def _resize_pair(gray: np.ndarray, binary: np.ndarray, roi: np.ndarray | None
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    h, w = binary.shape
    scale = MAX_SIDE / max(h, w)
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
    """Contour-to-image gradient ratio of a class-index mask on its RGB (H, W, 3) or grey
    (H, W) image; NaN when the mask has (almost) no contour inside the frame and field of
    view."""
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
    on_contour = cv2.mean(grad, mask=contour)[0]
    overall = cv2.mean(grad, mask=valid)[0]
    return on_contour / max(overall, 1e-3)


def robust_z(values: np.ndarray, floor: float) -> np.ndarray:
    """(x - median) / (1.4826 * MAD), with the scale never below ``floor`` (a source whose
    scores are all alike would otherwise turn tiny differences into huge z-scores).
    NaN stays NaN."""
    values = np.asarray(values, np.float64)
    finite = values[np.isfinite(values)]
    if len(finite) == 0:
        return np.full_like(values, np.nan)
    median = float(np.median(finite))
    scale = max(1.4826 * float(np.median(np.abs(finite - median))), floor)
    return (values - median) / scale
