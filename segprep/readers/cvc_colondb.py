"""CVC-ColonDB (Bernal et al., 2012): 300 frames from 15 colonoscopy sequences.

Original release: one flat folder of ``<n>.bmp`` frames with ``p<n>.bmp`` polyp masks (and
``s<n>.bmp`` non-informative-region and ``c<n>.bmp`` contour masks, which are not the polyp mask
and are ignored). Re-distributions: ``images/`` + ``masks/`` (PraNet, PNG) or ``Original/`` +
``GroundTruth/`` under a folder named CVC-ColonDB.
"""

from __future__ import annotations

import re
from pathlib import Path

from segprep.readers.base import RawPair, child_dir, has_images, image_files, match_pairs

NAME = "cvc-colondb"
DESCRIBE = ("flat <n>.bmp frames + p<n>.bmp masks (s<n>/c<n> ignored), or images/ + masks/ "
            "(or Original/ + GroundTruth/) under a folder named *ColonDB*")
PRIORITY = 30

_FRAME = re.compile(r"^\d+$")
_MASK = re.compile(r"^p\d+$", re.IGNORECASE)
_OTHER = re.compile(r"^[sc]\d+$", re.IGNORECASE)


def _flat(path: Path) -> tuple[list[Path], list[Path]]:
    files = image_files(path)
    frames = [p for p in files if _FRAME.match(p.stem)]
    masks = [p for p in files if _MASK.match(p.stem)]
    return frames, masks


def _folders(path: Path) -> tuple[Path | None, Path | None]:
    if not re.search(r"colon.?db", path.name, re.IGNORECASE):
        return None, None
    for image_name, mask_names in (("images", ("masks",)),
                                   ("Original", ("GroundTruth", "Ground Truth", "Ground_Truth"))):
        images, masks = child_dir(path, image_name), child_dir(path, *mask_names)
        if has_images(images) and has_images(masks):
            return images, masks
    return None, None


def detect(path: Path) -> bool:
    frames, masks = _flat(path)
    if frames and masks:
        return True
    return _folders(path)[0] is not None


def pairs(path: Path) -> list[RawPair]:
    frames, masks = _flat(path)
    if frames and masks:
        return match_pairs(frames, masks, mask_keys=lambda stem: (f"p{stem}",))
    images, masks_dir = _folders(path)
    return match_pairs(image_files(images), image_files(masks_dir),
                       mask_keys=lambda stem: (stem, f"p{stem}"))
