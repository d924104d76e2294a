"""`segtrain qc`: folds by group, one out-of-sample prediction per sample, the scores on
hand-made cases (the soft-minimum checked by hand), findings in clean's format, `clean --qc`."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from segprep.checks.findings import FINDING_COLUMNS
from segprep.clean import clean
from segprep.errors import SegprepError
from segprep.shards import ShardWriter, close_shards
from segtrain.errors import SegtrainError
from segtrain.qc import Probabilities, assign_folds, qc, score, soft_min_quality


def test_folds_keep_every_group_on_one_side_and_balance_sizes() -> None:
    groups = ["a"] * 5 + ["b"] * 3 + ["c"] * 3 + ["d"] * 2 + ["e"] + ["f"]
    rows = pd.DataFrame({"group": groups})
    folds = assign_folds(rows, 3)
    assert len(folds) == len(rows) and set(folds) == {0, 1, 2}
    for group in set(groups):  # no group in two folds
        assert len(set(folds[rows["group"] == group])) == 1
    sizes = np.bincount(folds)
    assert sizes.max() - sizes.min() <= 1 and sizes.sum() == 15
    np.testing.assert_array_equal(folds, assign_folds(rows, 3))  # deterministic
    with pytest.raises(SegtrainError, match="2 groups cannot fill 3 folds"):
        assign_folds(pd.DataFrame({"group": ["a", "b"]}), 3)
    with pytest.raises(SegtrainError, match="at least 2"):
        assign_folds(rows, 1)


def test_soft_min_matches_the_formula_by_hand() -> None:
    label = np.array([[1, 0]], np.uint8)
    probability = np.array([[1.0, 0.5]], np.float32)  # self-confidence 1.0 and 0.5
    expected = (1.0 * math.exp(-10) + 0.5 * math.exp(-5)) / (math.exp(-10) + math.exp(-5))
    assert soft_min_quality(label, probability) == pytest.approx(expected, rel=1e-6)
    assert soft_min_quality(label, np.array([[1.0, 0.0]], np.float32)) == pytest.approx(1.0)
    # the worst pixels dominate: one wrong pixel in a thousand pulls the score far below the mean
    big = np.zeros((40, 25), np.uint8)
    confident = np.full(big.shape, 0.02, np.float32)
    confident[0, 0] = 0.98
    assert soft_min_quality(big, confident) < 0.5 < float(np.mean(1 - confident))


def _disc(shape: tuple[int, int], centre: tuple[int, int], radius: int) -> np.ndarray:
    mask = np.zeros(shape, np.uint8)
    cv2.circle(mask, centre, radius, 1, -1)
    return mask


def test_scores_on_hand_made_labels() -> None:
    shape = (120, 160)
    truth = _disc(shape, (50, 60), 25)
    second = _disc(shape, (125, 60), 18)
    probability = np.clip(cv2.GaussianBlur((truth | second).astype(np.float32), (7, 7), 2) * 0.96 + 0.02, 0, 1)
    perfect = score("perfect", truth | second, probability)
    assert perfect.label_quality > 0.3 and perfect.dice > 0.95 and not perfect.findings()
    swapped = score("swapped", _disc(shape, (110, 90), 22), probability)  # another image's mask
    assert swapped.label_quality < 0.05 and swapped.dice < 0.2
    assert {f["code"] for f in swapped.findings()} >= {"label_disagrees", "extra_object"}
    partial = score("partial", cv2.erode(truth | second, np.ones((3, 3), np.uint8), iterations=14), probability)
    assert "partial_mask" in {f["code"] for f in partial.findings()}
    missed = score("missed", truth, probability)  # the second polyp is not labelled
    assert missed.missed_objects == 1 and "missed_object" in {f["code"] for f in missed.findings()}
    assert perfect.label_quality > missed.label_quality > swapped.label_quality
    for f in swapped.findings():
        assert tuple(f) == FINDING_COLUMNS and f["action"] == "flagged"


@pytest.fixture(scope="module")
def prepared(cleaned, tmp_path_factory) -> Path:
    return cleaned(tmp_path_factory.mktemp("qc"), n=24, noise=0.3, seed=51)


def test_qc_predicts_every_sample_once_out_of_sample_and_clean_takes_its_findings(prepared: Path,
                                                                                  tmp_path: Path) -> None:
    work = tmp_path / "work"
    shutil.copytree(prepared, work)
    manifest = work / "manifests" / "clean.csv"
    result = qc(manifest, work, folds=2, epochs=1, size=32, batch_size=4, device="cpu", workers=0)
    table = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    checked = table[(table["status"] != "excluded") & table["split"].isin(["train", "val"])]
    index = pd.read_csv(work / "qc/probs/index.csv", dtype=str)
    assert sorted(index["sample_id"]) == sorted(checked["sample_id"])  # exactly once each
    assert len(result.fold_dice) == 2 and result.n_samples == len(checked)
    assert sorted(p.name for p in (work / "manifests").iterdir()) == ["clean.csv", "ingest.csv",
                                                                      "ingest.json"]
    scores = pd.read_csv(result.scores_path)
    assert list(scores["sample_id"]) == list(checked["sample_id"])
    assert scores["label_quality"].between(0, 1).all()
    findings = pd.read_csv(result.findings_path, dtype=str, keep_default_na=False)
    assert tuple(findings.columns) == FINDING_COLUMNS and (findings["action"] == "flagged").all()
    # the probabilities again (--probs): the same scores without training
    again = qc(manifest, work, probs=work / "qc/probs", device="cpu")
    pd.testing.assert_frame_equal(pd.read_csv(again.scores_path), scores)

    # clean --qc: the model's findings on the rows, flagged (statuses unchanged)
    forged = pd.DataFrame([{"sample_id": checked["sample_id"].iloc[0], "code": "label_disagrees",
                            "severity": "warning", "value": 0.01, "action": "flagged",
                            "message": "made for the test", "partner": ""}])
    forged.to_csv(work / "qc/forged.csv", index=False)
    before = table.set_index("sample_id")["status"]
    out = clean(work / "manifests/ingest.csv", workers=1, progress=False, force=True,
                qc=work / "qc/forged.csv")
    after = pd.read_csv(out.manifest_path, dtype=str, keep_default_na=False).set_index("sample_id")
    first = checked["sample_id"].iloc[0]
    assert "label_disagrees" in after.loc[first, "issues"].split(";")
    assert (after["status"] == before.loc[after.index]).all()
    report = pd.read_csv(out.findings_path, dtype=str)
    assert ((report["sample_id"] == first) & (report["code"] == "label_disagrees")).any()
    close_shards()


def test_bad_input_is_clear(prepared: Path, tmp_path: Path) -> None:
    with pytest.raises(SegtrainError, match="no index.csv"):
        Probabilities(tmp_path)
    (tmp_path / "index.csv").write_text("sample_id,shard\nx,y.h5\n")
    with pytest.raises(SegtrainError, match="missing column"):
        Probabilities(tmp_path)
    probs = tmp_path / "probs"
    with ShardWriter(probs / "p.h5", "qc-probs") as writer:
        writer.add(sample_id="x", mask=np.zeros((4, 4), np.uint8))
    (probs / "index.csv").write_text("sample_id,shard,index\nx,../p.h5,0\n")
    with pytest.raises(SegtrainError, match="shard '../p.h5' is not a file of"):
        Probabilities(probs)
    (probs / "index.csv").write_text("sample_id,shard,index\nx,p.h5,first\n")
    with pytest.raises(SegtrainError, match="index 'first' is not a sample position"):
        Probabilities(probs)
    (probs / "index.csv").write_text("sample_id,shard,index\nx,p.h5,0\n")
    with pytest.raises(SegtrainError, match="no probabilities for"):
        qc(prepared / "manifests/clean.csv", tmp_path / "w", probs=probs)
    from segprep.manifest import read_manifest, write_manifest
    augmented = read_manifest(prepared / "manifests/clean.csv").assign(variant="1")
    write_manifest(augmented, prepared / "manifests/qc-augmented.csv")
    try:
        with pytest.raises(SegprepError, match="an augment manifest.*check the clean"):
            qc(prepared / "manifests/qc-augmented.csv", tmp_path / "w1", probs=probs)
    finally:
        (prepared / "manifests/qc-augmented.csv").unlink()
    bad = tmp_path / "findings.csv"
    bad.write_text(",".join(FINDING_COLUMNS) + "\nx,speckle,warning,1,flagged,m,\n")
    with pytest.raises(SegprepError, match="'speckle' is not a model's"):
        clean(prepared / "manifests/ingest.csv", tmp_path / "w2", progress=False, qc=bad)
    with pytest.raises(SegprepError, match="QC findings file not found"):
        clean(prepared / "manifests/ingest.csv", tmp_path / "w3", progress=False, qc=tmp_path / "nope.csv")
    close_shards()
