"""DRIVE (Staal et al., IEEE TMI 2004): 40 retinal fundus images.

``training/`` and ``test/``, each with ``images/<nn>_<split>.tif``, ``1st_manual/<nn>_manual1.gif``
(vessels) and ``mask/<nn>_<split>_mask.gif`` (the field of view, kept as the sample's ROI).
The dataset's own split is kept: ``test/`` stays test, validation is carved from ``training/``.
A test image without a manual annotation (the challenge download has none) is reported as
unpaired, not ingested. ``2nd_manual/`` (a second observer) is not used. A single split folder
(``images/`` + ``1st_manual/``) is read too, its split taken from its name.
"""

from __future__ import annotations

import logging
from pathlib import Path

from segprep.readers.base import RawPair, child_dir, has_images, image_files, unique_by_stem

log = logging.getLogger(__name__)

NAME = "drive"
DESCRIBE = ("training/ and test/, each images/*.tif + 1st_manual/*_manual1.gif + mask/*_mask.gif "
            "(field of view, kept as ROI); official split kept")
PRIORITY = 10
# The 40 images are distinct screening photographs, but every fundus photograph (a bright disc
# in a black frame) is within a few bits of the others, so only exact copies (distance 0) are
# grouped.
NEAR_DUPLICATE_BITS = 0

_SPLITS = (("training", "train"), ("train", "train"), ("test", "test"))


def _is_split_folder(path: Path | None) -> bool:
    return (path is not None and has_images(child_dir(path, "images"))
            and (child_dir(path, "1st_manual") is not None or child_dir(path, "mask") is not None))


def _split_folders(path: Path) -> list[tuple[Path, str]]:
    found = []
    for name, split in _SPLITS:
        folder = child_dir(path, name)
        if _is_split_folder(folder) and folder not in [f for f, _ in found]:
            found.append((folder, split))
    return found


def detect(path: Path) -> bool:
    if _split_folders(path):
        return True
    # One split folder on its own needs the vessel annotations to be told from other layouts.
    return _is_split_folder(path) and child_dir(path, "1st_manual") is not None


def _number(stem: str) -> str:
    return stem.split("_")[0]


def _pairs_in(folder: Path, split: str) -> list[RawPair]:
    images = image_files(child_dir(folder, "images") or folder / "images")
    manual_dir = child_dir(folder, "1st_manual")
    manuals, dup_manuals = unique_by_stem(image_files(manual_dir) if manual_dir else [],
                                          key=lambda p: _number(p.stem))
    roi_dir = child_dir(folder, "mask")
    rois, _ = unique_by_stem(image_files(roi_dir) if roi_dir else [],
                             key=lambda p: p.stem[: -len("_mask")] if p.stem.endswith("_mask") else p.stem)
    by_stem, dup_images = unique_by_stem(images)
    out, used = [], set()
    for stem, image in by_stem.items():
        number = _number(stem)
        manual = manuals.get(number) if number not in used else None
        used.add(number)
        note = ""
        if manual is None:
            note = (f"{split} image without a 1st_manual annotation"
                    + ("" if manual_dir else " (no 1st_manual/ folder)"))
        out.append(RawPair(stem, image, manual, roi_path=rois.get(stem), split=split, note=note))
    for number, manual in manuals.items():
        if number not in used:
            out.append(RawPair(manual.stem, None, manual, split=split))
    for key, path in dup_manuals:
        out.append(RawPair(path.stem, None, path, split=split, note="duplicate manual annotation"))
    for stem, path in dup_images:
        out.append(RawPair(stem, path, None, split=split, note="duplicate image stem"))
    missing_roi = [p.stem for p in out if p.image_path and p.mask_path and p.roi_path is None]
    if missing_roi:
        log.warning("%s: %d image(s) without a field-of-view mask in mask/ (e.g. %s); "
                    "ingested without ROI", folder, len(missing_roi), missing_roi[0])
    return out


def pairs(path: Path) -> list[RawPair]:
    folders = _split_folders(path)
    if not folders:
        name = path.name.lower()
        folders = [(path, "test" if name.startswith("test") else "train")]
    out = []
    for folder, split in folders:
        out.extend(_pairs_in(folder, split))
    return out
