"""Model-based QC on real data: inject label errors into a copy of Kvasir-SEG's masks and see
whether ``segtrain qc`` finds them.

Errors (each in --share of the training/val samples, never the same sample twice, seeded):

* ``partial``: the mask eroded until 30-60% of its area is gone (an outline drawn in part);
* ``shifted``: the mask moved by 10-30 px (beside the polyp);
* ``missing``: of a mask with two or more polyps, the smaller ones removed (a second polyp left out);
* ``swapped``: the mask of another image of similar size (a mask drawn on another frame).

Then, on the copy: ``segprep ingest`` (official split) -> ``segprep clean`` -> ``segtrain qc``.
Reported per kind: recall of the QC findings (any of its codes; and label_disagrees alone),
their precision over all checked samples, and the AUROC of label_quality (injected = positive,
lower score = more suspect); time and peak memory. With cleanlab importable (AGPL: benchmark
only, never a dependency), its ``segmentation.rank.get_label_quality_scores`` on the same
probabilities (resized to 256x256) for agreement (Spearman) and time.

    .venv/bin/python benchmarks/qc_quality.py --data ../shared/data/Kvasir-SEG --folds 3 --epochs 3
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
KINDS = ("partial", "shifted", "missing", "swapped")


def inject(data: Path, out: Path, share: float, seed: int, split_file: Path) -> pd.DataFrame:
    """A copy of the dataset (images linked, masks rewritten where injected); the truth table."""
    rng = np.random.default_rng(seed)
    (out / "images").mkdir(parents=True)
    (out / "masks").mkdir()
    splits = pd.read_csv(split_file, dtype=str, comment="#")
    test = set(splits.loc[splits["split"] == "test", "stem"])
    stems = sorted(p.stem for p in (data / "images").iterdir())
    for stem in stems:
        (out / "images" / f"{stem}.jpg").symlink_to((data / "images" / f"{stem}.jpg").resolve())
    masks = {stem: cv2.imread(str(data / "masks" / f"{stem}.jpg"), cv2.IMREAD_GRAYSCALE) for stem in stems}
    binary = {stem: (m > 127).astype(np.uint8) for stem, m in masks.items()}
    candidates = [s for s in stems if s not in test]
    rng.shuffle(candidates)
    per_kind = int(round(share * len(candidates)))
    multi = [s for s in candidates if cv2.connectedComponents(binary[s])[0] > 2]
    chosen: dict[str, str] = {}
    for stem in multi[:per_kind]:
        chosen[stem] = "missing"
    rest = [s for s in candidates if s not in chosen]
    for k, kind in enumerate(("partial", "shifted", "swapped")):
        for stem in rest[k * per_kind:(k + 1) * per_kind]:
            chosen[stem] = kind
    rows = []
    for stem in stems:
        mask = binary[stem]
        kind = chosen.get(stem, "")
        if kind == "partial":
            area, target = mask.sum(), rng.uniform(0.3, 0.6)
            eroded = mask.copy()
            while eroded.sum() > (1 - target) * area and eroded.any():
                eroded = cv2.erode(eroded, np.ones((3, 3), np.uint8))
            mask = eroded if eroded.any() else mask
        elif kind == "shifted":
            dy, dx = rng.integers(10, 31) * rng.choice([-1, 1]), rng.integers(10, 31) * rng.choice([-1, 1])
            mask = cv2.warpAffine(mask, np.float32([[1, 0, dx], [0, 1, dy]]), mask.shape[::-1],
                                  flags=cv2.INTER_NEAREST)
        elif kind == "missing":
            n, labels, stats, _ = cv2.connectedComponentsWithStats(mask)
            keep = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
            mask = (labels == keep).astype(np.uint8)
        elif kind == "swapped":
            h, w = mask.shape
            others = [s for s in stems if s != stem and abs(binary[s].shape[0] - h) < 60
                      and abs(binary[s].shape[1] - w) < 60]
            donor = others[int(rng.integers(len(others)))]
            mask = cv2.resize(binary[donor], (w, h), interpolation=cv2.INTER_NEAREST)
        cv2.imwrite(str(out / "masks" / f"{stem}.png"), mask * 255)
        rows.append({"stem": stem, "kind": kind})
    return pd.DataFrame(rows)


def auroc(scores: np.ndarray, positive: np.ndarray) -> float:
    """P(score of a positive < score of a negative): lower scores should mean errors."""
    pos, neg = scores[positive], scores[~positive]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    ranks = pd.Series(np.concatenate([pos, neg])).rank().to_numpy()
    return float(1 - (ranks[:len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "Kvasir-SEG")
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--share", type=float, default=0.05, help="share of samples per error kind")
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--size", type=int, default=160)
    parser.add_argument("--encoder", default="efficientnet_lite0")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if not args.data.is_dir():
        print(f"skipped: {args.data} not found")
        return 0
    from segprep.clean import clean
    from segprep.ingest import ingest
    from segtrain.qc import qc

    tmp = args.work or Path(tempfile.mkdtemp(prefix="qc-quality-"))
    split_file = ROOT / "manifests" / "kvasir-seg_medico2020.csv"
    copy = tmp / "Kvasir-SEG"
    if copy.exists():
        shutil.rmtree(copy)
    truth = inject(args.data, copy, args.share, args.seed, split_file)
    work = tmp / "work"
    shutil.rmtree(work, ignore_errors=True)
    ingest([copy], work, splits_file=split_file)
    clean(work / "manifests" / "ingest.csv", progress=False)
    started = time.perf_counter()
    result = qc(work / "manifests" / "clean.csv", work, folds=args.folds, epochs=args.epochs,
                size=args.size, encoder=args.encoder, encoder_weights="imagenet", seed=args.seed)
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    scores = pd.read_csv(result.scores_path)
    scores["stem"] = scores["sample_id"].str.split("/").str[-1]
    scores = scores.merge(truth, on="stem")
    findings = pd.read_csv(result.findings_path)
    flagged = set(findings["sample_id"])
    disagree = set(findings.loc[findings["code"] == "label_disagrees", "sample_id"])
    scores["flagged"] = scores["sample_id"].isin(flagged)
    scores["disagrees"] = scores["sample_id"].isin(disagree)
    injected = scores["kind"] != ""
    print(f"\n{len(scores)} train/val samples checked, {int(injected.sum())} injected "
          f"({args.share:.0%} per kind), {args.folds} folds x {args.epochs} epochs, unet on "
          f"{args.encoder} (ImageNet) at {args.size} px; out-of-sample Dice per fold "
          f"{', '.join(f'{d:.3f}' for d in result.fold_dice)}")
    print(f"qc: {seconds:.0f} s ({seconds / len(scores) * 1000:.0f} s per 1,000 images), peak RSS "
          f"{peak:.0f} MB, {os.cpu_count()} cores\n")
    print("| kind | injected | recall (any finding) | recall (label_disagrees) | AUROC of label_quality | median label_quality |")
    print("|---|---:|---:|---:|---:|---:|")
    clean_rows = scores[~injected]
    for kind in KINDS:
        rows = scores[scores["kind"] == kind]
        if rows.empty:
            continue
        subset = pd.concat([rows, clean_rows])
        print(f"| {kind} | {len(rows)} | {rows['flagged'].mean():.2f} | {rows['disagrees'].mean():.2f} | "
              f"{auroc(subset['label_quality'].to_numpy(), (subset['kind'] != '').to_numpy()):.3f} | "
              f"{rows['label_quality'].median():.3f} |")
    print(f"| none (clean labels) | {len(clean_rows)} | flagged {clean_rows['flagged'].mean():.2f} | "
          f"{clean_rows['disagrees'].mean():.2f} | - | {clean_rows['label_quality'].median():.3f} |")
    precision_any = injected[scores["flagged"]].mean() if scores["flagged"].any() else float("nan")
    precision_dis = injected[scores["disagrees"]].mean() if scores["disagrees"].any() else float("nan")
    print(f"\nprecision: any finding {precision_any:.2f} ({int(scores['flagged'].sum())} flagged), "
          f"label_disagrees {precision_dis:.2f} ({int(scores['disagrees'].sum())})")
    print("\nper code (false flags: untouched labels flagged; hits: injected labels flagged):")
    for code in ("label_disagrees", "partial_mask", "missed_object", "extra_object"):
        ids = set(findings.loc[findings["code"] == code, "sample_id"])
        hit = scores["sample_id"].isin(ids)
        false, true = int((hit & ~injected).sum()), int((hit & injected).sum())
        print(f"  {code}: false flags {false} of {int((~injected).sum())} ({false / max((~injected).sum(), 1):.1%}), "
              f"hits {true} of {int(injected.sum())}, precision {true / max(false + true, 1):.2f}")
    print("\nlabel_disagrees threshold sweep (precision / recall over all injected kinds):")
    for below in (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4):
        hit = scores["label_quality"] < below
        p = injected[hit].mean() if hit.any() else float("nan")
        print(f"  below {below:.2f}: precision {p:.2f}, recall {hit[injected].mean():.2f}, flagged {int(hit.sum())}")
    try:
        from cleanlab.segmentation.rank import get_label_quality_scores
    except ImportError:
        print("\ncleanlab not installed: no side-by-side comparison")
    else:
        from segprep.manifest import read_manifest
        from segprep.shards import read_mask
        from segtrain.qc import Probabilities

        given = Probabilities(result.probs)
        table = read_manifest(work / "manifests" / "clean.csv").set_index("sample_id")
        labels, probs = [], []
        for sample_id in scores["sample_id"]:
            row = table.loc[sample_id]
            label = read_mask(work / "manifests" / row["mask_shard"], int(row["mask_index"]))
            p = given.read(sample_id, label.shape)
            labels.append(cv2.resize(label, (256, 256), interpolation=cv2.INTER_NEAREST))
            p = cv2.resize(p, (256, 256), interpolation=cv2.INTER_LINEAR)
            probs.append(np.stack([1 - p, p]))
        started = time.perf_counter()
        theirs, _ = get_label_quality_scores(np.array(labels), np.array(probs, np.float32), method="softmin")
        took = time.perf_counter() - started
        ours = scores["label_quality"].to_numpy()
        rho = pd.Series(ours).corr(pd.Series(theirs), method="spearman")
        print(f"\ncleanlab softmin on the same probabilities (256x256): {took:.1f} s, Spearman with "
              f"segkit's label_quality {rho:.3f}, AUROC all kinds "
              f"{auroc(np.asarray(theirs), injected.to_numpy()):.3f} (segkit "
              f"{auroc(ours, injected.to_numpy()):.3f})")
    json.dump({"seconds": seconds, "peak_mb": peak}, open(tmp / "qc_quality.json", "w"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
