"""nnU-Net raw datasets (v1 ``TaskNNN_Name``, v2 ``DatasetNNN_Name``), 2-D images.

``dataset.json`` + ``imagesTr/<case>_0000.png`` + ``labelsTr/<case>.png``, and optionally
``imagesTs/`` (+ ``labelsTs/``), which stays the test split. Labels are class indices (0, 1, ...),
so any non-zero value counts as foreground. Only channel ``_0000`` is read: 2-D natural images
are one RGB file per case; other channels are reported in the log and not ingested.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

from segprep.readers.base import RawPair, child_dir, has_images, image_files, match_pairs

log = logging.getLogger(__name__)

NAME = "nnunet"
DESCRIBE = "dataset.json + imagesTr/<case>_0000.png + labelsTr/<case>.png (imagesTs/ = test)"
PRIORITY = 10
FG_THRESHOLD = 0

_CHANNEL = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")


def detect(path: Path) -> bool:
    return (path / "dataset.json").is_file() and has_images(child_dir(path, "imagesTr"))


def source_name(path: Path) -> str:
    try:
        name = json.loads((path / "dataset.json").read_text(encoding="utf-8")).get("name")
    except (OSError, ValueError, AttributeError):
        name = None
    return name if isinstance(name, str) and name.strip() else path.name


def _split(path: Path, images: str, labels: str, split: str) -> list[RawPair]:
    files = image_files(child_dir(path, images) or path / images)
    first, other = [], []
    for p in files:
        match = _CHANNEL.match(p.stem)
        (first if match is None or match["channel"] == "0000" else other).append(p)
    if other:
        log.warning("%s/%s: %d file(s) of channels other than _0000 not ingested (e.g. %s)",
                    path.name, images, len(other), other[0].name)
    label_dir = child_dir(path, labels)
    note = "" if label_dir is not None else f"no {labels}/ folder"

    def case(p: Path) -> str:
        match = _CHANNEL.match(p.stem)
        return match["case"] if match else p.stem

    found = match_pairs(first, image_files(label_dir) if label_dir else [], image_stem=case, split=split,
                        several_masks=False)  # a label image is one file
    return [RawPair(p.stem, p.image_path, p.mask_path, split=p.split, note=p.note or note)
            if p.mask_path is None else p for p in found]


def pairs(path: Path) -> list[RawPair]:
    return _split(path, "imagesTr", "labelsTr", "train") + _split(path, "imagesTs", "labelsTs", "test")
