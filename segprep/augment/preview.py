"""A PNG grid of augmented samples with their masks outlined: one row per training sample,
one column per variant (variant 0, the resized original, first), so a user sees what a
pipeline does before training on it."""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np

from segprep.manifest import read_manifest
from segprep.shards import read_image, read_mask, read_roi
from segprep.work import atomic_path

log = logging.getLogger(__name__)

MASK_COLOUR = (0, 255, 0)
ROI_COLOUR = (255, 200, 0)


def outlined(image: np.ndarray, mask: np.ndarray, roi: np.ndarray | None = None,
             thickness: int = 2) -> np.ndarray:
    """The image with the mask's outline (and the ROI's, where there is one) drawn on a copy."""
    canvas = np.ascontiguousarray(image).copy()
    if roi is not None and not roi.all():
        contours, _ = cv2.findContours((roi > 0).astype(np.uint8), cv2.RETR_EXTERNAL,
                                       cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(canvas, contours, -1, ROI_COLOUR, 1)
    contours, _ = cv2.findContours((mask > 0).astype(np.uint8), cv2.RETR_LIST,
                                   cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(canvas, contours, -1, MASK_COLOUR, thickness)
    return canvas


def write_preview(manifest: Path, out: Path, *, n: int = 8, variants: int = 5) -> Path:
    """Grid of ``n`` training samples (spread over the manifest) x the first ``variants``
    variants of each. Without training rows, the first ``n`` rows, one per line."""
    from matplotlib.figure import Figure  # no pyplot: no global backend state, no display

    manifest, out = Path(manifest), Path(out)
    df = read_manifest(manifest, check_shards=False)
    train = df[df["split"] == "train"]
    if len(train):
        parents = list(dict.fromkeys(train["parent_id"]))
        picks = [parents[int(i)] for i in np.unique(np.linspace(0, len(parents) - 1, min(n, len(parents))).round())]
        grid = [train[train["parent_id"] == parent].head(variants) for parent in picks]
    else:
        grid = [df.iloc[[i]] for i in range(min(n, len(df)))]
    columns = max(len(rows) for rows in grid)
    figure = Figure(figsize=(2.2 * columns, 2.3 * len(grid)), dpi=100)
    root = manifest.parent
    for r, rows in enumerate(grid):
        for c, row in enumerate(rows.to_dict("records")):
            shard, index = root / row["image_shard"], int(row["image_index"])
            picture = outlined(read_image(shard, index), read_mask(root / row["mask_shard"],
                               int(row["mask_index"])), read_roi(shard, index))
            axes = figure.add_subplot(len(grid), columns, r * columns + c + 1)
            axes.imshow(picture)
            axes.set_axis_off()
            name = row["sample_id"].rsplit("/", 1)[-1]  # the stem: source names are long
            if c > 0:
                name = "~" + name.rsplit("~", 1)[-1]
            axes.set_title(name[:22] + "…" + name[-5:] if len(name) > 28 else name, fontsize=7)
    figure.tight_layout()
    with atomic_path(out) as tmp:
        figure.savefig(tmp)
    log.info("wrote %s (%d samples x up to %d variants)", out, len(grid), columns)
    return out
