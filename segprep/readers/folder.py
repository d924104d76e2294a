"""Any folder of images with masks: ``images/`` + ``masks/`` (or similar names), or one flat
folder where masks carry a suffix (``_mask``, ``_segmentation``, ``_lesion``, ``_gt``...).

A mask belongs to an image with the same stem, or the stem plus one of the usual mask suffixes.
The source is named after the folder.
"""

from __future__ import annotations

import re
from pathlib import Path

from segprep.readers.base import (MASK_SUFFIXES, RawPair, child_dir, has_images, image_files,
                                  match_pairs, suffix_keys)

NAME = "folder"
DESCRIBE = ("images/ + masks/ (also image(s)/img/original/input + mask(s)/labels/gt/groundtruth/"
            "annotations), or one flat folder with <stem> + <stem>_mask (or _masks, "
            "_segmentation, _lesion, _gt, _label, _seg, -mask) files; numbered masks "
            "(<stem>_mask_1, ...) are merged; source = folder name")
PRIORITY = 100

IMAGE_DIRS = ("images", "image", "imgs", "img", "original", "originals", "input", "inputs")
MASK_DIRS = ("masks", "mask", "labels", "label", "gt", "groundtruth", "ground truth", "ground_truth",
             "annotations", "segmentations", "targets")
# A mask suffix, optionally numbered (one file per lesion): name_mask, name_mask_1, name_mask (2).
_MASK_NAME = re.compile("(?:" + "|".join(re.escape(s.lower()) for s in MASK_SUFFIXES)
                        + r")(?:[_\- ]\(?\d+\)?)?$")


def _folders(path: Path) -> tuple[Path | None, Path | None]:
    images, masks = child_dir(path, *IMAGE_DIRS), child_dir(path, *MASK_DIRS)
    if has_images(images) and has_images(masks):
        return images, masks
    return None, None


def _is_mask_name(stem: str) -> bool:
    return _MASK_NAME.search(stem.lower()) is not None


def _flat(path: Path) -> tuple[list[Path], list[Path]]:
    files = image_files(path)
    masks = [p for p in files if _is_mask_name(p.stem)]
    images = [p for p in files if not _is_mask_name(p.stem)]
    return images, masks


def detect(path: Path) -> bool:
    if _folders(path)[0] is not None:
        return True
    images, masks = _flat(path)
    return bool(images) and bool(masks)


def source_name(path: Path) -> str:
    return path.name


def pairs(path: Path) -> list[RawPair]:
    images, masks = _folders(path)
    if images is not None:
        return match_pairs(image_files(images), image_files(masks), mask_keys=suffix_keys)
    flat_images, flat_masks = _flat(path)
    return match_pairs(flat_images, flat_masks, mask_keys=lambda stem: suffix_keys(stem)[1:])
