"""CVC-ClinicDB (Bernal et al., 2015): 612 frames from 29 colonoscopy video sequences.

Original release: ``Original/<n>.tif`` + ``Ground Truth/<n>.tif``; the PNG re-distribution has
``PNG/Original`` + ``PNG/Ground Truth`` (and ``TIF/...`` beside it). The video sequence of each
frame number comes from ``manifests/cvc-clinicdb_sequences.csv`` (the dataset's README) and
becomes the sample's group, so one sequence never straddles two splits.
"""

from __future__ import annotations

import logging
import re
from functools import lru_cache
from pathlib import Path

import pandas as pd

from segprep.readers.base import RawPair, child_dir, has_images, image_files, match_pairs

log = logging.getLogger(__name__)

NAME = "cvc-clinicdb"
DESCRIBE = ("Original/*.tif + 'Ground Truth'/*.tif (or PNG/Original + 'PNG/Ground Truth', "
            "TIF/...), frame numbers as stems; groups = video sequence")
PRIORITY = 40

SEQUENCES_CSV = Path(__file__).resolve().parents[2] / "manifests" / "cvc-clinicdb_sequences.csv"
_MASK_DIRS = ("Ground Truth", "GroundTruth", "Ground_Truth")


def _folders(path: Path) -> tuple[Path | None, Path | None]:
    """The first complete image/mask folder pair: the root's own, then TIF/, then PNG/."""
    for base in (path, child_dir(path, "TIF"), child_dir(path, "PNG")):
        if base is None:
            continue
        images, masks = child_dir(base, "Original"), child_dir(base, *_MASK_DIRS)
        if has_images(images) and has_images(masks):
            return images, masks
    return None, None


def detect(path: Path) -> bool:
    if re.search(r"colondb|etis", path.name, re.IGNORECASE):
        return False  # those ship Original/GroundTruth folders too
    images, _ = _folders(path)
    return images is not None


@lru_cache(maxsize=1)
def sequences() -> dict[str, str]:
    """Frame number (as a stem) -> sequence group name, from the committed table."""
    if not SEQUENCES_CSV.is_file():
        log.warning("%s not found: CVC-ClinicDB frames get no sequence groups", SEQUENCES_CSV)
        return {}
    table = pd.read_csv(SEQUENCES_CSV, comment="#", dtype=str)
    return {frame.strip(): f"seq{int(seq):02d}" for frame, seq in zip(table["frame"], table["sequence"])}


def _frame(stem: str) -> str:
    return stem.lstrip("0") or "0"


def pairs(path: Path) -> list[RawPair]:
    images, masks = _folders(path)
    image_list = image_files(images)
    table = sequences()
    frames = {_frame(p.stem) for p in image_list}
    # The table describes the real 612 frames; a different set of frames numbered 1..n (a
    # subset, another release, synthetic data) would get wrong sequences, so it is used only
    # when the frame numbers match it.
    matches = bool(table) and len(frames & table.keys()) >= 0.9 * len(table) \
        and len(frames - table.keys()) <= 0.1 * len(frames)
    if table and not matches:
        log.info("%s: %d frames do not match the %d of %s; sequences come from near-duplicate "
                 "detection only", path, len(frames), len(table), SEQUENCES_CSV.name)
    return match_pairs(image_list, image_files(masks),
                       group=lambda stem: table.get(_frame(stem), "") if matches else "")
