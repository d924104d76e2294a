"""ETIS-LaribPolypDB (Silva et al., 2014): 196 frames.

Original release: ``ETIS-LaribPolypDB/<n>.tif`` images and ``Ground Truth/p<n>.tif`` masks
(also seen as ``GroundTruth/``); the PraNet re-distribution has ``images/`` + ``masks/`` (PNG,
same stems) under a folder named ETIS-LaribPolypDB.
"""

from __future__ import annotations

import re
from pathlib import Path

from segprep.readers.base import RawPair, child_dir, has_images, image_files, match_pairs

NAME = "etis-larib"
DESCRIBE = ("ETIS-LaribPolypDB/<n>.tif + 'Ground Truth'/p<n>.tif, or images/ + masks/ under a "
            "folder named ETIS*")
PRIORITY = 30

_MASK_DIRS = ("Ground Truth", "GroundTruth", "Ground_Truth")


def _folders(path: Path) -> tuple[Path | None, Path | None]:
    images, masks = child_dir(path, "ETIS-LaribPolypDB"), child_dir(path, *_MASK_DIRS)
    if has_images(images) and has_images(masks):
        return images, masks
    if re.search(r"etis", path.name, re.IGNORECASE):
        images, masks = child_dir(path, "images"), child_dir(path, "masks")
        if has_images(images) and has_images(masks):
            return images, masks
    return None, None


def detect(path: Path) -> bool:
    return _folders(path)[0] is not None


def pairs(path: Path) -> list[RawPair]:
    images, masks = _folders(path)
    return match_pairs(image_files(images), image_files(masks),
                       mask_keys=lambda stem: (f"p{stem}", stem))
