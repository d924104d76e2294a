"""What a layout module returns, and the small helpers the layouts share.

A layout module (one file in this package) defines:

* ``NAME``: the layout's name (``--layout NAME``), also the default source name;
* ``DESCRIBE``: one line saying what the layout expects on disk;
* ``PRIORITY``: detection order for ``--layout auto`` (lower is tried first; ``folder`` last);
* ``detect(path) -> bool``: whether ``path`` is the root of such a dataset;
* ``pairs(path) -> list[RawPair]``: every image/mask pair, including the unpaired ones.

Optional: ``source_name(path) -> str`` (default ``NAME``), ``FG_THRESHOLD`` (mask values
above it count as foreground for ``fg_fraction``; default 127 for 0/255 masks) and
``NEAR_DUPLICATE_BITS`` (perceptual-hash distance for near-duplicate groups; default
:data:`segprep.splits.NEAR_DUPLICATE_BITS`, 0 where every image is known to be distinct).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from segprep.imageio import IMAGE_SUFFIXES

log = logging.getLogger(__name__)

# Suffixes that mark a mask file in folders that mix them (ISIC `_segmentation`, PH2 `_lesion`...).
MASK_SUFFIXES = ("_mask", "_masks", "_segmentation", "_lesion", "_gt", "_label", "_seg", "-mask",
                 "_Segmentation")


@dataclass(frozen=True)
class RawPair:
    """One sample as found on disk. ``image_path`` or ``mask_path`` is None for an unpaired file.

    ``group`` is what the layout knows about leakage (patient, video sequence), empty if nothing;
    ``split`` is the dataset's official split (``train`` or ``test``), empty if none.
    """

    stem: str
    image_path: Path | None
    mask_path: Path | None
    roi_path: Path | None = None
    group: str = ""
    split: str = ""
    note: str = ""  # why it is unpaired, when the generic reason is not enough
    # Further mask files of the same image (one file per lesion, as BUSI ships them:
    # name_mask.png, name_mask_1.png, ...); ingest merges them into one mask.
    extra_masks: tuple[Path, ...] = ()


def natural_key(text: str) -> tuple:
    """Sort "2" before "10" (frame numbers), then by the text itself so the order is total."""
    parts = re.split(r"(\d+)", text)
    return tuple((0, int(part), part) if part.isdigit() else (1, 0, part.lower())
                 for part in parts if part != ""), text


def image_files(folder: Path) -> list[Path]:
    """Image files directly in ``folder`` (by suffix, hidden files skipped), in natural order."""
    if not folder.is_dir():
        return []
    files, ignored = [], []
    for path in folder.iterdir():
        if path.name.startswith(".") or not path.is_file():
            continue
        (files if path.suffix.lower() in IMAGE_SUFFIXES else ignored).append(path)
    if ignored:
        log.info("%s: ignoring %d file(s) that are not images by their suffix (e.g. %s)",
                 folder, len(ignored), sorted(p.name for p in ignored)[0])
    return sorted(files, key=lambda p: natural_key(p.name))


def child_dir(folder: Path, *names: str) -> Path | None:
    """The first sub-folder of ``folder`` whose name matches one of ``names`` (case-insensitive)."""
    if not folder.is_dir():
        return None
    children = {p.name.lower(): p for p in sorted(folder.iterdir()) if p.is_dir()}
    for name in names:
        if name.lower() in children:
            return children[name.lower()]
    return None


def has_images(folder: Path | None) -> bool:
    if folder is None or not folder.is_dir():
        return False
    return any(p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
               for p in folder.iterdir())


def unique_by_stem(files: Iterable[Path], key: Callable[[Path], str] = lambda p: p.stem
                   ) -> tuple[dict[str, Path], list[tuple[str, Path]]]:
    """Map key -> file; a second file with the same key (``a.png`` beside ``a.jpg``) is returned
    separately so it can be reported instead of silently shadowing the first."""
    chosen: dict[str, Path] = {}
    duplicates: list[tuple[str, Path]] = []
    for path in files:
        k = key(path)
        if k in chosen:
            duplicates.append((k, path))
        else:
            chosen[k] = path
    return chosen, duplicates


# A numbered mask of one image: "<key>_1", "<key>-2", "<key> (3)" beside "<key>".
_NUMBERED = re.compile(r"^(.*?)(?:[_\- ]\(?(\d+)\)?)$")


def _numbered_masks(by_stem: dict[str, Path], mask_by_key: dict[str, Path], used: set[str],
                    mask_keys: Callable[[str], Iterable[str]]) -> dict[str, list[str]]:
    """Image stem -> keys of its numbered masks (``name_mask_1``, ``name_mask_2``, ``name_1``),
    lowest number first, among the masks no image claimed by name. A numbered key that is the
    stem of an image is that image's, not a second mask."""
    owner: dict[str, str] = {}
    for stem in by_stem:
        for key in mask_keys(stem):
            owner.setdefault(key.lower(), stem)
    image_stems = {stem.lower() for stem in by_stem}
    found: dict[str, list[tuple[int, str]]] = {}
    for key in mask_by_key:
        if key in used or key in image_stems:
            continue
        match = _NUMBERED.match(key)
        if match and match.group(1) in owner:
            found.setdefault(owner[match.group(1)], []).append((int(match.group(2)), key))
    return {stem: [key for _, key in sorted(keys)] for stem, keys in found.items()}


def match_pairs(images: list[Path], masks: list[Path], *,
                mask_keys: Callable[[str], Iterable[str]] = lambda stem: (stem,),
                image_stem: Callable[[Path], str] = lambda p: p.stem,
                group: Callable[[str], str] = lambda stem: "",
                split: str = "", several_masks: bool = True) -> list[RawPair]:
    """Pair images with masks: for each image stem, the first of ``mask_keys(stem)`` that names
    a mask file (compared case-insensitively) is its mask. With ``several_masks``, numbered
    masks beside it (``<key>_1``, ``<key>_2``: one file per lesion) are the same image's further
    masks (``RawPair.extra_masks``); the lowest-numbered one is the mask when the plain one is
    missing. Left-over masks and images without a mask come back as unpaired RawPairs; so do
    files whose stem repeats."""
    by_stem, dup_images = unique_by_stem(images, image_stem)
    mask_by_key, dup_masks = unique_by_stem(masks, lambda p: p.stem.lower())
    used: set[str] = set()
    chosen: dict[str, str] = {}
    for stem in by_stem:
        for key in mask_keys(stem):
            key = key.lower()
            if key in mask_by_key and key not in used:
                chosen[stem] = key
                used.add(key)
                break
    numbered = _numbered_masks(by_stem, mask_by_key, used, mask_keys) if several_masks else {}
    out: list[RawPair] = []
    for stem, image in by_stem.items():
        keys = ([chosen[stem]] if stem in chosen else []) + numbered.get(stem, [])
        used.update(keys)
        files = [mask_by_key[key] for key in keys]
        out.append(RawPair(stem, image, files[0] if files else None, group=group(stem), split=split,
                           extra_masks=tuple(files[1:])))
    for key, mask in mask_by_key.items():
        if key not in used:
            out.append(RawPair(mask.stem, None, mask, split=split))
    for stem, path in dup_images:
        out.append(RawPair(stem, path, None, split=split,
                           note=f"duplicate image stem (kept {by_stem[stem].name})"))
    for key, path in dup_masks:
        out.append(RawPair(path.stem, None, path, split=split,
                           note=f"duplicate mask stem (kept {mask_by_key[key].name})"))
    return out


def suffix_keys(stem: str) -> list[str]:
    """Mask stems that belong to image ``stem``: the stem itself, or stem + a mask suffix."""
    return [stem] + [stem + suffix for suffix in MASK_SUFFIXES]
