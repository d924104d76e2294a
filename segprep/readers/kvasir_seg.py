"""Kvasir-SEG (Jha et al., MMM 2020): ``images/*.jpg`` + ``masks/*.jpg`` with the same stems.

The ``kavsir_bboxes.json`` of bounding boxes beside them is not needed and ignored. Masks are
JPEG, so their grey values are near, not at, 0 and 255: they are stored as decoded.
"""

from __future__ import annotations

import re
from pathlib import Path

from segprep.readers.base import RawPair, child_dir, has_images, image_files, match_pairs

NAME = "kvasir-seg"
DESCRIBE = "images/*.jpg + masks/*.jpg with the same stems (kavsir_bboxes.json ignored)"
PRIORITY = 60

_STEM = re.compile(r"^c[a-z0-9]{24}$")


def _folders(path: Path) -> tuple[Path | None, Path | None]:
    return child_dir(path, "images"), child_dir(path, "masks")


def detect(path: Path) -> bool:
    images, masks = _folders(path)
    if not (has_images(images) and has_images(masks)):
        return False
    # images/ + masks/ alone is the generic `folder` layout; Kvasir-SEG is told apart by its
    # bounding-box file or its folder name.
    marked = any((path / name).is_file() for name in ("kavsir_bboxes.json", "kvasir_bboxes.json"))
    if marked or re.search(r"kvasir", path.name, re.IGNORECASE):
        return True
    # Renamed folder: JPEG images and masks with Kvasir's 25-character ids ("cju0qkwl35piu...").
    stems = [p.stem for p in image_files(images)]
    jpeg = all(p.suffix.lower() in (".jpg", ".jpeg") for p in image_files(images) + image_files(masks))
    return jpeg and sum(bool(_STEM.match(s)) for s in stems) > len(stems) / 2


def pairs(path: Path) -> list[RawPair]:
    images, masks = _folders(path)
    return match_pairs(image_files(images), image_files(masks))
