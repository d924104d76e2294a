"""``segprep export``: hand a manifest's usable samples to other tools, losslessly.

* :func:`export_nnunet`: an nnU-Net v2 raw dataset ``DatasetNNN_Name/`` (nnU-Net's
  documentation, "dataset format"): natural RGB images as one PNG per case
  (``imagesTr/<case>_0000.png``, channel_names R, G, B), labels as class-index PNGs
  (``labelsTr/<case>.png``: 0, 1, ... never 0/255, which nnU-Net rejects as "Unexpected
  labels"), the test split in ``imagesTs/`` + ``labelsTs/``, ``dataset.json``, and
  ``splits_final.json`` whose folds never divide a segkit group (fold 0 is the manifest's own
  train/val). ``segkit_cases.csv`` maps each case id to its segkit sample, group and split;
  it is also a segkit splits file, so ``segprep ingest DatasetNNN_Name --splits
  DatasetNNN_Name/segkit_cases.csv`` reads the export back with the same splits and groups.
* :func:`export_folder`: ``OUT/<split>/images/*.png`` + ``OUT/<split>/masks/*.png`` with the
  mask values asked for (0/255 by default for two classes), and ``OUT/cases.csv``.

Excluded rows never leave. Images are the decoded pixels of the image shards (what every check
and checksum saw), masks those of the manifest's mask shards: a clean manifest gives the
repaired masks. Raw grey masks (an ingest manifest) are binarized at 128, with a warning.
An export is written into a staging folder and moved into place when complete.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from segprep.errors import SegprepError
from segprep.manifest import SPLITS, read_manifest, source_rows
from segprep.progress import progress
from segprep.shards import BINARIZE_THRESHOLD, close_shards, load_sample
from segprep.work import atomic_write_csv, atomic_write_json

log = logging.getLogger(__name__)

RAW_GREY = 32             # no dataset here has 32 classes; a raw mask's foreground is ~255
FOLDS = 5
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")


@dataclass
class ExportResult:
    """What an export wrote."""

    out: Path
    counts: dict[str, int] = field(default_factory=dict)  # exported samples per split
    excluded: int = 0      # rows left behind because the manifest excludes them
    binarized: int = 0     # raw grey masks binarized at BINARIZE_THRESHOLD
    n_classes: int = 2
    folds: int = 0         # nnunet: folds in splits_final.json
    seconds: float = 0.0

    def summary(self, what: str) -> str:
        parts = ", ".join(f"{split} {n}" for split, n in self.counts.items() if n)
        lines = [f"{what}: {sum(self.counts.values())} samples ({parts}), {self.n_classes} classes"
                 + (f", {self.folds} group folds" if self.folds else "")
                 + f", in {self.seconds:.1f} s -> {self.out}"]
        if self.excluded:
            lines.append(f"{self.excluded} excluded row(s) left out")
        if self.binarized:
            lines.append(f"WARNING: {self.binarized} raw grey mask(s) binarized at "
                         f"{BINARIZE_THRESHOLD}; export a clean manifest for repaired masks")
        return "\n".join(lines)


# ----------------------------------------------------------------------------- shared

def _usable(manifest: Path) -> tuple[pd.DataFrame, int]:
    """The rows an export writes (not excluded), and how many were excluded."""
    df = read_manifest(manifest)
    rows = source_rows(df, manifest, "export")
    return rows.reset_index(drop=True), len(df) - len(rows)


def _class_mask(mask: np.ndarray) -> tuple[np.ndarray, bool]:
    """Class indices, and whether a raw grey mask had to be binarized. Class-index masks (clean's,
    or a label dataset's 0, 1, 2 ...) hold small values; a mask reaching RAW_GREY is a grey
    picture of one (0/255 with JPEG noise, as ingest stores it)."""
    if int(mask.max(initial=0)) >= RAW_GREY:
        return (mask >= BINARIZE_THRESHOLD).astype(np.uint8), True
    return mask, False


def _write_png(path: Path, array: np.ndarray) -> None:
    image = cv2.cvtColor(array, cv2.COLOR_RGB2BGR) if array.ndim == 3 else array
    if not cv2.imwrite(str(path), image):
        raise SegprepError(f"{path}: could not be written (disk full or no permission?)")


def _staging(out: Path, force: bool) -> Path:
    if out.exists() and not force:
        raise SegprepError(f"{out} exists; pass --force to replace it, or choose another folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.with_name(f".{out.name}.staging-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    return staging


def _publish(staging: Path, out: Path) -> None:
    if out.exists():
        shutil.rmtree(out)
    os.replace(staging, out)


def _samples(manifest: Path, rows: pd.DataFrame, desc: str):
    """(row, image, class mask, binarized) for every row, in manifest order."""
    root = manifest.parent
    for row in progress(rows.to_dict("records"), total=len(rows), desc=desc, unit="sample"):
        sample = load_sample(root, row)
        mask, binarized = _class_mask(sample.mask)
        yield row, sample.image, mask, binarized


# ----------------------------------------------------------------------------- folds

def group_folds(cases: pd.DataFrame, n_folds: int = FOLDS, seed: int = 0) -> list[dict[str, list[str]]]:
    """nnU-Net folds over the train and val cases (columns case, group, split) that never divide
    a group: fold 0 is the manifest's own train/val when it has val cases, the other folds
    share out the remaining groups, largest first, each to the fold with the fewest cases. Every
    case is validated in exactly one fold. Fewer groups than folds: one fold per group."""
    pool = cases[cases["split"].isin(["train", "val"])]
    folds: list[list[str]] = []
    if (pool["split"] == "val").any():
        folds.append(sorted(pool.loc[pool["split"] == "val", "case"]))
        pool = pool[pool["split"] == "train"]
        n_folds -= 1
    sizes = pool.groupby("group")["case"].count()
    order = sorted(sizes.index, key=lambda g: (-sizes[g], hashlib.sha1(f"{seed}\0{g}".encode()).hexdigest()))
    parts: list[list[str]] = [[] for _ in range(max(1, min(n_folds, len(order))))]
    members = pool.groupby("group")["case"].apply(list)
    for g in order:
        min(parts, key=len).extend(members[g])
    folds += [sorted(part) for part in parts if part]
    everyone = sorted(cases.loc[cases["split"].isin(["train", "val"]), "case"])
    return [{"train": sorted(set(everyone) - set(val)), "val": val} for val in folds]


# ----------------------------------------------------------------------------- nnU-Net

def export_nnunet(manifest: Path, out_root: Path, *, dataset_id: int, name: str,
                  labels: list[str] | None = None, folds: int = FOLDS, seed: int = 0,
                  force: bool = False) -> ExportResult:
    """Write ``out_root/DatasetNNN_name`` (see the module docstring)."""
    started = time.perf_counter()
    manifest = Path(manifest)
    if not 1 <= dataset_id <= 999:
        raise SegprepError(f"--dataset-id {dataset_id}: nnU-Net dataset ids are 1-999 (use 500 "
                           f"or more for your own datasets)")
    if not _NAME.match(name):
        raise SegprepError(f"--name {name!r}: letters, digits, - and _ only (it becomes a folder "
                           f"and the case ids)")
    if folds < 2:
        raise SegprepError(f"--folds {folds}: at least 2")
    if dataset_id < 500:
        log.warning("dataset id %d: nnU-Net asks for 500 or more for custom datasets (no clash "
                    "with its pretrained ones)", dataset_id)
    rows, excluded = _usable(manifest)
    folder_name = f"Dataset{dataset_id:03d}_{name}"
    out = Path(out_root) / folder_name
    staging = _staging(out, force)
    try:
        cases, result = _write_cases(manifest, rows, staging, name.lower(), folder_name)
        n_classes = max(2, result.n_classes)
        names = list(labels or (["foreground"] if n_classes == 2 else
                                [f"class_{k}" for k in range(1, n_classes)]))
        if len(names) != n_classes - 1:
            raise SegprepError(f"--labels names {len(names)} class(es); the masks have "
                               f"{n_classes - 1} besides background")
        train_val = cases[cases["split"] != "test"]
        split_list = group_folds(cases.rename(columns={"stem": "case"}), folds, seed)
        atomic_write_json(staging / "dataset.json", {
            "channel_names": {"0": "R", "1": "G", "2": "B"},
            "labels": {"background": 0, **{label: k for k, label in enumerate(names, start=1)}},
            "numTraining": len(train_val), "file_ending": ".png", "name": folder_name,
            "description": f"exported by segkit from {manifest.name}: {len(train_val)} training "
                           f"and {len(cases) - len(train_val)} test cases",
            "segkit": {"manifest": str(manifest.resolve()), "cases": "segkit_cases.csv",
                       "splits": "splits_final.json (copy to nnUNet_preprocessed/" + folder_name + "/)"}})
        atomic_write_json(staging / "splits_final.json", split_list)
        atomic_write_csv(staging / "segkit_cases.csv", cases)
        close_shards()
        _publish(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    result.out, result.excluded, result.folds = out, excluded, len(split_list)
    result.seconds = time.perf_counter() - started
    log.info("nnU-Net export: %d cases -> %s", len(cases), out)
    return result


def _write_cases(manifest: Path, rows: pd.DataFrame, staging: Path, prefix: str, source: str
                 ) -> tuple[pd.DataFrame, ExportResult]:
    """Images and labels of every row, and the table of cases (also a segkit splits file)."""
    for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
        (staging / sub).mkdir()
    result = ExportResult(out=staging, counts={split: 0 for split in SPLITS})
    records, top = [], 0
    for k, (row, image, mask, binarized) in enumerate(_samples(manifest, rows, "export nnunet")):
        case = f"{prefix}_{k:05d}"
        test = row["split"] == "test"
        _write_png(staging / ("imagesTs" if test else "imagesTr") / f"{case}_0000.png", image)
        _write_png(staging / ("labelsTs" if test else "labelsTr") / f"{case}.png", mask)
        top = max(top, int(mask.max(initial=0)))
        result.binarized += binarized
        result.counts[row["split"]] += 1
        records.append({"source": source, "stem": case, "split": row["split"], "group": row["group"],
                        "sample_id": row["sample_id"], "original_source": row["source"]})
    if not any((staging / "labelsTs").iterdir()):
        (staging / "imagesTs").rmdir()
        (staging / "labelsTs").rmdir()
    result.n_classes = top + 1
    return pd.DataFrame(records), result


# ----------------------------------------------------------------------------- plain folders

def parse_mask_values(text: str | None) -> list[int] | None:
    """``"0,255"`` -> [0, 255]: the pixel value written for class 0, 1, ..."""
    if text is None:
        return None
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise SegprepError(f"--mask-values {text!r}: give one value 0-255 per class, e.g. 0,255") from None
    if len(values) < 2 or len(set(values)) != len(values) or not all(0 <= v <= 255 for v in values):
        raise SegprepError(f"--mask-values {text!r}: give distinct values 0-255, one per class "
                           f"(background first), e.g. 0,255")
    return values


def export_folder(manifest: Path, out: Path, *, mask_values: list[int] | None = None,
                  force: bool = False) -> ExportResult:
    """Write ``out/<split>/images/<name>.png`` and ``out/<split>/masks/<name>.png`` (``<name>``:
    the sample id with ``/`` as ``__``) and ``out/cases.csv``."""
    started = time.perf_counter()
    manifest, out = Path(manifest), Path(out)
    rows, excluded = _usable(manifest)
    staging = _staging(out, force)
    result = ExportResult(out=out, counts={split: 0 for split in SPLITS})
    records = []
    try:
        for row, image, mask, binarized in _samples(manifest, rows, "export folder"):
            n_classes = int(mask.max(initial=0)) + 1
            values = mask_values or ([0, 255] if n_classes <= 2 else list(range(n_classes)))
            if n_classes > len(values):
                raise SegprepError(f"{row['sample_id']}: its mask has {n_classes} classes; "
                                   f"--mask-values gives {len(values)}")
            lookup = np.zeros(256, np.uint8)
            lookup[:len(values)] = values
            name = row["sample_id"].replace("/", "__")
            for sub, array in (("images", image), ("masks", lookup[mask])):
                (staging / row["split"] / sub).mkdir(parents=True, exist_ok=True)
                _write_png(staging / row["split"] / sub / f"{name}.png", array)
            result.binarized += binarized
            result.n_classes = max(result.n_classes, n_classes)
            result.counts[row["split"]] += 1
            records.append({"file": f"{row['split']}/images/{name}.png", "mask": f"{row['split']}/masks/{name}.png",
                            "sample_id": row["sample_id"], "source": row["source"],
                            "split": row["split"], "group": row["group"]})
        atomic_write_csv(staging / "cases.csv", pd.DataFrame(records))
        close_shards()
        _publish(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    result.excluded = excluded
    result.seconds = time.perf_counter() - started
    return result
