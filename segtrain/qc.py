"""Model-based mask QC (``segtrain qc``): score every label against out-of-sample predictions.

1. Folds: the train and val rows (not excluded) are split into K folds by ``group``, largest
   groups first onto the smallest fold, so no group is in its own training folds.
2. Per fold, a short training with segtrain's own trainer on the other folds (a tenth of their
   groups as val, for the best epoch), then the held-out fold's foreground probabilities at each
   sample's own size, written as they come (uint8, p x 255) into ``WORK/qc/probs/``: segprep
   variable shards (the probability in ``masks/<index>``) and ``index.csv`` (sample_id, shard,
   index). ``--probs DIR`` reads the same layout from any model instead of training.
3. Per sample, streaming (one label and one probability map in memory at a time):

   * ``label_quality``: the soft-minimum of the pixels' self-confidence (Lad & Mueller 2023,
     "Estimating label quality and errors in semantic segmentation data via any model"): each
     pixel's probability of its given label, s = p where the label is 1 and 1 - p where it is
     0, aggregated as sum(s * exp(-s / T)) / sum(exp(-s / T)) with temperature T = 0.1, so the
     image score follows its worst pixels instead of the average of mostly easy background;
   * Dice between the label and the prediction (p > 0.5), the area ratio (predicted area /
     labelled area), predicted objects the label misses and labelled objects the model does
     not see (connected components overlapping the other mask by under 10% of their area).

4. Findings in clean's format (``WORK/qc/findings.csv``): ``label_disagrees`` (label_quality
   under the threshold), ``partial_mask`` (the label covers part of what the model predicts),
   ``missed_object``, ``extra_object``; all flagged, never excluding. ``segprep clean --qc
   FILE`` adds them to the manifest's rows, its report and the review page.
"""

from __future__ import annotations

import csv
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from segprep.checks.findings import FINDING_COLUMNS
from segprep.manifest import read_manifest, source_rows, write_manifest
from segprep.shards import ShardWriter, binary_mask, close_shards, read_image, read_mask
from segtrain.errors import SegtrainError
from segtrain.metrics import confusion, scores

log = logging.getLogger(__name__)

TEMPERATURE = 0.1
SCORE_SIDE = 256          # self-confidence is aggregated on at most 256 px a side
DISAGREE_BELOW = 0.10     # label_quality threshold: precision 0.71 on injected Kvasir-SEG errors
                          # (benchmarks/README.md, "Model-based QC"); depends on the model: --below
OVERLAP = 0.10            # a component overlapping the other mask by less than this is unmatched
MIN_OBJECT = 0.005        # ... and counts when it covers this share of the image
WEAK_DICE = 0.6           # fold models below this out-of-sample Dice: findings are not trusted


# ----------------------------------------------------------------------------- folds

def assign_folds(rows: pd.DataFrame, k: int, seed: int = 0) -> np.ndarray:
    """Fold 0..k-1 of every row, by group: the largest groups first, each onto the fold with the
    fewest samples so far (ties: a seeded order of groups, then the lowest fold)."""
    if k < 2:
        raise SegtrainError(f"--folds must be at least 2, got {k}")
    sizes = rows.groupby("group", sort=True).size()
    if len(sizes) < k:
        raise SegtrainError(f"{len(sizes)} groups cannot fill {k} folds; lower --folds")
    rng = np.random.default_rng(seed)
    order = sorted(sizes.index, key=lambda g: (-int(sizes[g]), rng.random()))
    load = [0] * k
    fold_of: dict[str, int] = {}
    for group in order:
        fold = min(range(k), key=lambda f: (load[f], f))
        fold_of[group] = fold
        load[fold] += int(sizes[group])
    return rows["group"].map(fold_of).to_numpy()


def fold_manifest(rows: pd.DataFrame, folds: np.ndarray, fold: int, out: Path,
                  seed: int = 0) -> Path:
    """The manifest of one fold's training: the other folds as train (a tenth of their groups
    as val), the held-out fold as test. Written beside the input manifest (its shard paths
    stay valid there) and removed when qc is done."""
    table = rows.copy()
    held_out = folds == fold
    groups = sorted(set(table.loc[~held_out, "group"]))
    rng = np.random.default_rng(seed + fold)
    val_groups = set(rng.choice(groups, max(1, len(groups) // 10), replace=False)) if len(groups) > 1 else set()
    table["split"] = np.where(held_out, "test",
                              np.where(table["group"].isin(val_groups), "val", "train"))
    return write_manifest(table, out)


# ----------------------------------------------------------------------------- scores

def soft_min_quality(label: np.ndarray, probability: np.ndarray, temperature: float = TEMPERATURE) -> float:
    """Soft-minimum of the pixels' self-confidence (see the module docstring); label 0/1,
    probability of foreground in [0, 1], same shape."""
    confidence = np.where(label > 0, probability, 1.0 - probability).astype(np.float32)
    longest = max(confidence.shape)
    if longest > SCORE_SIDE:
        scale = SCORE_SIDE / longest
        confidence = cv2.resize(confidence, (max(1, round(confidence.shape[1] * scale)),
                                             max(1, round(confidence.shape[0] * scale))),
                                interpolation=cv2.INTER_AREA)
    weights = np.exp(-confidence.astype(np.float64) / temperature)
    return float((confidence * weights).sum() / weights.sum())


def _components(mask: np.ndarray) -> tuple[int, np.ndarray, np.ndarray]:
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    return n, labels, stats[:, cv2.CC_STAT_AREA]


def _unmatched(mask: np.ndarray, other: np.ndarray, min_area: float) -> int:
    """Components of ``mask`` of at least ``min_area`` pixels overlapping ``other`` by under
    OVERLAP of their area."""
    n, labels, areas = _components(mask)
    if n <= 1:
        return 0
    overlap = np.bincount(labels[other > 0].ravel(), minlength=n)
    return int(sum(1 for c in range(1, n) if areas[c] >= min_area and overlap[c] < OVERLAP * areas[c]))


@dataclass
class Scores:
    sample_id: str
    label_quality: float
    dice: float
    area_ratio: float          # predicted / labelled foreground (inf when the label is empty)
    missed_objects: int        # predicted objects the label lacks
    extra_objects: int         # labelled objects the model does not see
    label_covered: float       # share of the label inside the prediction

    def findings(self, below: float = DISAGREE_BELOW) -> list[dict]:
        out = []
        if self.label_quality < below:
            out.append(("label_disagrees", self.label_quality,
                        f"label quality {self.label_quality:.3f} (soft-min self-confidence) under "
                        f"{below}; Dice with the out-of-sample prediction {self.dice:.2f}"))
        if self.area_ratio >= 1.5 and self.label_covered >= 0.8 and self.dice < 0.8:
            out.append(("partial_mask", self.area_ratio,
                        f"the prediction is {self.area_ratio:.1f}x the label's area and covers "
                        f"{100 * self.label_covered:.0f}% of it: the label outlines part of the object"))
        if self.missed_objects:
            out.append(("missed_object", float(self.missed_objects),
                        f"{self.missed_objects} predicted object(s) without a label"))
        if self.extra_objects:
            out.append(("extra_object", float(self.extra_objects),
                        f"{self.extra_objects} labelled object(s) the model does not see"))
        return [{"sample_id": self.sample_id, "code": code, "severity": "warning",
                 "value": round(value, 4) if math.isfinite(value) else value, "action": "flagged",
                 "message": message, "partner": ""} for code, value, message in out]


def score(sample_id: str, label: np.ndarray, probability: np.ndarray) -> Scores:
    """Every score of one sample (label 0/1, probability in [0, 1], same shape)."""
    label = (label > 0).astype(np.uint8)
    predicted = (probability > 0.5).astype(np.uint8)
    counts = confusion(predicted, label)
    both, labelled, found = counts["tp"], counts["tp"] + counts["fn"], counts["tp"] + counts["fp"]
    min_area = MIN_OBJECT * label.size
    return Scores(sample_id, soft_min_quality(label, probability), scores(**counts)["dice"],
                  found / labelled if labelled else (math.inf if found else 1.0),
                  _unmatched(predicted, label, min_area), _unmatched(label, predicted, min_area),
                  both / labelled if labelled else 1.0)


# ----------------------------------------------------------------------------- probabilities

class Probabilities:
    """``WORK/qc/probs/`` (or a ``--probs`` folder): index.csv + segprep variable shards whose
    ``masks/<index>`` hold p x 255 as uint8."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        index = self.folder / "index.csv"
        if not index.is_file():
            raise SegtrainError(f"{self.folder}: no index.csv (sample_id, shard, index); see "
                                f"`segtrain qc --help` for the layout of --probs")
        table = pd.read_csv(index, dtype=str, keep_default_na=False)
        missing = {"sample_id", "shard", "index"} - set(table.columns)
        if missing:
            raise SegtrainError(f"{index}: missing column(s) {', '.join(sorted(missing))}")
        inside = self.folder.resolve()
        for shard in set(table["shard"]):  # checked once per file, not per read
            if (self.folder / shard).resolve().parent != inside:
                raise SegtrainError(f"{index}: shard {shard!r} is not a file of {self.folder}")
        bad = table.loc[~table["index"].str.fullmatch(r"\d+"), "index"]
        if len(bad):
            raise SegtrainError(f"{index}: index {bad.iloc[0]!r} is not a sample position (0, 1, ...)")
        self.where = {r.sample_id: (self.folder / r.shard, int(r.index)) for r in table.itertuples()}

    def read(self, sample_id: str, shape: tuple[int, int]) -> np.ndarray:
        if sample_id not in self.where:
            raise SegtrainError(f"{self.folder}: no probabilities for {sample_id}")
        shard, index = self.where[sample_id]
        stored = read_mask(shard, index)
        if stored.shape != shape:
            stored = cv2.resize(stored, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)
        return stored.astype(np.float32) / 255.0


def _predict_fold(run_dir: Path, rows: pd.DataFrame, root: Path, writer: ShardWriter,
                  index_rows: list[list], device: str) -> None:
    """The held-out rows' probabilities from one fold's best checkpoint, written as they come."""
    from segtrain.predict import foreground_probability, image_logits, load_checkpoint

    model = load_checkpoint(run_dir / "best.pt", device)
    for row in rows.to_dict("records"):
        image = read_image(root / row["image_shard"], int(row["image_index"]))
        probability = foreground_probability(image_logits(model, [image])[0])
        index = writer.add(sample_id=row["sample_id"],
                           mask=np.round(probability * 255).astype(np.uint8))
        index_rows.append([row["sample_id"], writer.path.name, index])


@dataclass
class QcResult:
    work: Path
    scores_path: Path
    findings_path: Path
    probs: Path
    n_samples: int
    folds: int
    counts: dict[str, int]
    seconds: float
    fold_dice: list[float]

    def summary(self) -> str:
        found = ", ".join(f"{code} {n}" for code, n in self.counts.items()) or "none"
        weak = ""
        if self.fold_dice and float(np.mean(self.fold_dice)) < WEAK_DICE:
            weak = (f"\nwarning: the fold models are weak (mean out-of-sample Dice "
                    f"{np.mean(self.fold_dice):.2f} < {WEAK_DICE}): their findings say more about "
                    f"the models than the labels; train longer (--epochs) or on a pretrained encoder")
        dice = (f"; out-of-sample Dice per fold: {', '.join(f'{d:.3f}' for d in self.fold_dice)}"
                if self.fold_dice else "")
        return (f"qc: {self.n_samples} samples scored ({self.folds or 'given'} folds{dice}) in "
                f"{self.seconds:.0f} s\nfindings: {found}\nscores:   {self.scores_path}\n"
                f"findings: {self.findings_path} (segprep clean --qc {self.findings_path})\n"
                f"probabilities: {self.probs}{weak}")


def qc(manifest: Path, work: Path, *, folds: int = 5, probs: Path | None = None,
       model: str = "unet", encoder: str | None = None, encoder_weights: str | None = None,
       epochs: int = 5, size: int = 256, batch_size: int = 8, lr: float = 1e-3,
       device: str = "auto", workers: int = 2, seed: int = 0,
       below: float = DISAGREE_BELOW) -> QcResult:
    """Cross-fit, predict out of sample and score every train/val row of ``manifest`` (see the
    module docstring); with ``probs``, score against those probabilities instead of training."""
    from segtrain.config import RunConfig
    from segtrain.trainer import train

    started = time.perf_counter()
    manifest, work = Path(manifest), Path(work)
    table = read_manifest(manifest)
    usable = source_rows(table, manifest, "check")
    rows = usable[usable["split"].isin(["train", "val"])].reset_index(drop=True)
    if rows.empty:
        raise SegtrainError(f"{manifest}: no train or val rows to check")
    out = work / "qc"
    fold_dice: list[float] = []
    if probs is None:
        probs = out / "probs"
        probs.mkdir(parents=True, exist_ok=True)
        fold_of = assign_folds(rows, folds, seed)
        index_rows: list[list] = []
        for fold in range(folds):
            fold_dir = out / f"fold-{fold}"
            fold_csv = fold_manifest(rows, fold_of, fold, manifest.parent / f"qc-fold-{fold}.csv", seed)
            config = RunConfig(manifest=str(fold_csv), model=model, encoder=encoder,
                               encoder_weights=encoder_weights, epochs=epochs, batch_size=batch_size,
                               lr=lr, size=[size, size], device=device, workers=workers, seed=seed,
                               out=str(fold_dir / "run"), force=True)
            log.info("qc fold %d/%d: training on %d samples", fold + 1, folds, int((fold_of != fold).sum()))
            try:
                summary = train(config)
            finally:
                fold_csv.unlink(missing_ok=True)
            fold_dice.append(float(summary["test"]["mean"]["dice"]))
            held_out = rows[fold_of == fold]
            with ShardWriter(probs / f"probs-{fold:02d}.h5", "qc-probs", compression="gzip-1") as writer:
                _predict_fold(fold_dir / "run", held_out, manifest.parent, writer, index_rows, device)
            close_shards()
        with open(probs / "index.csv", "w", newline="") as handle:
            csv.writer(handle, lineterminator="\n").writerows([["sample_id", "shard", "index"], *index_rows])
    given = Probabilities(Path(probs))
    scored, findings = [], []
    for row in rows.to_dict("records"):
        label = read_mask(manifest.parent / row["mask_shard"], int(row["mask_index"]))
        label, _ = binary_mask(label)
        result = score(row["sample_id"], label, given.read(row["sample_id"], label.shape))
        scored.append(result.__dict__)
        findings += result.findings(below)
    close_shards()
    out.mkdir(parents=True, exist_ok=True)
    scores_path, findings_path = out / "scores.csv", out / "findings.csv"
    pd.DataFrame(scored).to_csv(scores_path, index=False, float_format="%.5g", lineterminator="\n")
    pd.DataFrame(findings, columns=list(FINDING_COLUMNS)).to_csv(findings_path, index=False,
                                                                 lineterminator="\n")
    counts = pd.Series([f["code"] for f in findings], dtype=str).value_counts().to_dict()
    return QcResult(work, scores_path, findings_path, Path(probs), len(rows),
                    folds if fold_dice else 0, counts, time.perf_counter() - started, fold_dice)
