"""Hand-off: the nnU-Net v2 export (layout, JSON, class-index labels, group folds, the round trip
through the nnunet reader), the plain-folder export, and ONNX / TorchScript exports of every
model with their parity to PyTorch and `predict --onnx`."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from blobs import untrained_checkpoint
from segprep.cli import main as segprep_cli
from segprep.errors import SegprepError
from segprep.export import export_folder, export_nnunet, group_folds, parse_mask_values
from segprep.ingest import ingest
from segprep.manifest import read_manifest, write_manifest
from segprep.shards import ShardWriter
from segtrain.cli import main as segtrain_cli
from segtrain.errors import SegtrainError
from segtrain.export import export_model, read_metadata
from segtrain.models import ENCODER_MODELS, MODELS
from segtrain.predict import predict

SIZE = 64


def read_png(path: Path) -> np.ndarray:
    return cv2.imread(str(path), cv2.IMREAD_UNCHANGED)


def manifest_with(root: Path, *, raw_masks: bool = False, excluded_only: bool = False) -> Path:
    """14 samples in 6 groups over train/val/test, one excluded row; masks 0/1 (clean) or raw
    0/255 with JPEG-like noise (ingest)."""
    rng = np.random.default_rng(0)
    plan = [("train", "g1")] * 3 + [("train", "g2")] * 2 + [("train", "g3")] * 2 + \
           [("train", "g4")] * 2 + [("val", "g5")] * 2 + [("test", "g6")] * 3
    rows = []
    shard = "shards/x-00000.h5"
    yy, xx = np.mgrid[:40, :48]
    with ShardWriter(root / shard, "clean") as writer:
        for i, (split, group) in enumerate(plan + [("train", "g7")]):
            mask = ((yy - 20) ** 2 + (xx - 10 - i) ** 2 < 80).astype(np.uint8)
            if raw_masks:
                mask = np.clip(mask * 255 + rng.integers(-3, 4, mask.shape), 0, 255).astype(np.uint8)
            image = rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)
            sid = f"src/s{i:02d}"
            index = writer.add(sample_id=sid, image=image, mask=mask)
            excluded = excluded_only or i == len(plan)
            rows.append({"sample_id": sid, "source": "src", "split": split, "group": f"src/{group}",
                         "image_shard": f"../{shard}", "image_index": index, "mask_shard": f"../{shard}",
                         "mask_index": index, "height": 40, "width": 48, "fg_fraction": 0.1,
                         "status": "excluded" if excluded else "ok",
                         "issues": "empty" if excluded else "", "parent_id": "",
                         "image_path": "", "mask_path": ""})
    return write_manifest(pd.DataFrame(rows), root / "manifests" / "clean.csv")


# ----------------------------------------------------------------------------- nnU-Net

def test_nnunet_export_follows_the_documented_format(tmp_path: Path) -> None:
    manifest = manifest_with(tmp_path / "work")
    result = export_nnunet(manifest, tmp_path / "raw", dataset_id=501, name="Polyps")
    root = tmp_path / "raw" / "Dataset501_Polyps"
    assert result.out == root and result.excluded == 1 and result.counts == {"train": 9, "val": 2, "test": 3}
    spec = json.loads((root / "dataset.json").read_text())
    # nnU-Net v2's required keys; natural RGB images: one PNG per case, channels R, G, B
    assert spec["channel_names"] == {"0": "R", "1": "G", "2": "B"} and spec["file_ending"] == ".png"
    assert spec["labels"] == {"background": 0, "foreground": 1} and spec["numTraining"] == 11
    images = sorted(p.name for p in (root / "imagesTr").iterdir())
    labels = sorted(p.name for p in (root / "labelsTr").iterdir())
    assert len(images) == 11 and all(name.endswith("_0000.png") for name in images)
    assert [name[:-len("_0000.png")] + ".png" for name in images] == labels
    assert len(list((root / "imagesTs").iterdir())) == 3 == len(list((root / "labelsTs").iterdir()))
    for name in labels:
        label = read_png(root / "labelsTr" / name)
        image = read_png(root / "imagesTr" / name.replace(".png", "_0000.png"))
        assert label.dtype == np.uint8 and label.ndim == 2 and set(np.unique(label)) == {0, 1}
        assert image.shape == (*label.shape, 3)
    cases = pd.read_csv(root / "segkit_cases.csv", dtype=str, keep_default_na=False)
    assert "src/s14" not in set(cases["sample_id"])  # the excluded row never leaves
    assert list(cases.columns[:4]) == ["source", "stem", "split", "group"]


def test_raw_grey_masks_never_reach_labels_as_255(tmp_path: Path) -> None:
    manifest = manifest_with(tmp_path / "work", raw_masks=True)
    result = export_nnunet(manifest, tmp_path / "raw", dataset_id=502, name="Raw")
    assert result.binarized == 14
    for path in (tmp_path / "raw" / "Dataset502_Raw" / "labelsTr").iterdir():
        assert set(np.unique(read_png(path))) <= {0, 1}


def test_folds_keep_groups_whole_and_validate_every_case_once(tmp_path: Path) -> None:
    manifest = manifest_with(tmp_path / "work")
    export_nnunet(manifest, tmp_path / "raw", dataset_id=503, name="Folds", folds=4)
    root = tmp_path / "raw" / "Dataset503_Folds"
    folds = json.loads((root / "splits_final.json").read_text())
    cases = pd.read_csv(root / "segkit_cases.csv", dtype=str, keep_default_na=False).set_index("stem")
    assert len(folds) == 4
    # fold 0 is the manifest's own train/val split
    assert sorted(folds[0]["val"]) == sorted(cases.index[cases["split"] == "val"])
    trainval = sorted(cases.index[cases["split"] != "test"])
    validated = sorted(case for fold in folds for case in fold["val"])
    assert validated == trainval  # every train/val case validated exactly once
    for fold in folds:
        assert sorted(fold["train"] + fold["val"]) == trainval
        train_groups = set(cases.loc[fold["train"], "group"])
        assert not train_groups & set(cases.loc[fold["val"], "group"])  # no group on both sides


def test_group_folds_with_no_val_and_few_groups() -> None:
    cases = pd.DataFrame({"case": list("abcdef"), "group": ["x", "x", "y", "y", "z", "z"],
                          "split": ["train"] * 6})
    folds = group_folds(cases, n_folds=5)
    assert len(folds) == 3 and sorted(len(f["val"]) for f in folds) == [2, 2, 2]


def test_the_nnunet_reader_reads_the_export_back(tmp_path: Path) -> None:
    manifest = manifest_with(tmp_path / "work")
    export_nnunet(manifest, tmp_path / "raw", dataset_id=504, name="Trip")
    root = tmp_path / "raw" / "Dataset504_Trip"
    back = ingest([root], tmp_path / "again", splits_file=root / "segkit_cases.csv", workers=1)
    table = read_manifest(back.manifest_path)
    cases = pd.read_csv(root / "segkit_cases.csv", dtype=str, keep_default_na=False)
    original = read_manifest(manifest).set_index("sample_id")
    merged = table.assign(stem=table["sample_id"].str.split("/").str[1]).merge(cases, on="stem",
                                                                                suffixes=("", "_case"))
    assert len(merged) == len(table) == 14
    for row in merged.itertuples():
        before = original.loc[row.sample_id_case]
        assert row.split == before["split"]           # same split per sample
        assert row.image_sha1 == _sha1_of(manifest, before, "image")   # same pixels
        assert row.mask_sha1 == _sha1_of(manifest, before, "mask")
    # the same groups: two samples share a group after the round trip iff they did before
    pairs = {(a.sample_id_case, b.sample_id_case): a.group == b.group
             for a in merged.itertuples() for b in merged.itertuples()}
    assert all(same == (original.loc[a, "group"] == original.loc[b, "group"]) for (a, b), same in pairs.items())


def _sha1_of(manifest: Path, row: pd.Series, what: str) -> str:
    from segprep.hashing import array_sha1
    from segprep.shards import read_image, read_mask
    path = manifest.parent / row[f"{what}_shard"]
    reader = read_image if what == "image" else read_mask
    return array_sha1(reader(path, int(row[f"{what}_index"])))


def test_nnunet_verify_dataset_integrity_passes_when_installed(tmp_path: Path) -> None:
    verify = pytest.importorskip("nnunetv2.experiment_planning.verify_dataset_integrity")
    manifest = manifest_with(tmp_path / "work")
    export_nnunet(manifest, tmp_path / "raw", dataset_id=505, name="Verify")
    verify.verify_dataset_integrity(str(tmp_path / "raw" / "Dataset505_Verify"), num_processes=1)


def test_nnunet_export_bad_input(tmp_path: Path) -> None:
    manifest = manifest_with(tmp_path / "work")
    with pytest.raises(SegprepError, match="dataset ids are 1-999"):
        export_nnunet(manifest, tmp_path / "raw", dataset_id=1000, name="X")
    with pytest.raises(SegprepError, match="letters, digits"):
        export_nnunet(manifest, tmp_path / "raw", dataset_id=501, name="my data")
    excluded = manifest_with(tmp_path / "w2", excluded_only=True)
    with pytest.raises(SegprepError, match="no rows to export: all 15 rows are excluded"):
        export_nnunet(excluded, tmp_path / "raw", dataset_id=501, name="X")
    export_nnunet(manifest, tmp_path / "raw", dataset_id=501, name="X")
    stamp = (tmp_path / "raw" / "Dataset501_X" / "dataset.json").read_bytes()
    with pytest.raises(SegprepError, match="exists; pass --force"):
        export_nnunet(manifest, tmp_path / "raw", dataset_id=501, name="X")
    assert (tmp_path / "raw" / "Dataset501_X" / "dataset.json").read_bytes() == stamp
    assert [p.name for p in (tmp_path / "raw").iterdir()] == ["Dataset501_X"]  # no staging left
    result = CliRunner().invoke(segprep_cli, ["export", "nnunet", str(tmp_path / "nope.csv"), "-o",
                                              str(tmp_path / "raw"), "--dataset-id", "506", "--name", "Y"])
    assert result.exit_code == 1 and "nope.csv" in result.output and "Traceback" not in result.output


# ----------------------------------------------------------------------------- folder

def test_folder_export_writes_the_values_asked_for(tmp_path: Path) -> None:
    manifest = manifest_with(tmp_path / "work")
    result = CliRunner().invoke(segprep_cli, ["export", "folder", str(manifest), "-o", str(tmp_path / "png")])
    assert result.exit_code == 0, result.output
    assert "14 samples (train 9, val 2, test 3)" in result.output
    masks = list((tmp_path / "png" / "train" / "masks").iterdir())
    assert len(masks) == 9 and all(set(np.unique(read_png(p))) == {0, 255} for p in masks)
    cases = pd.read_csv(tmp_path / "png" / "cases.csv")
    assert len(cases) == 14 and (tmp_path / "png" / cases["file"][0]).is_file()
    export_folder(manifest, tmp_path / "png", mask_values=[0, 1], force=True)
    assert set(np.unique(read_png(next((tmp_path / "png" / "test" / "masks").iterdir())))) == {0, 1}
    with pytest.raises(SegprepError, match="distinct values 0-255"):
        parse_mask_values("0,300")
    with pytest.raises(SegprepError, match="one value 0-255 per class"):
        parse_mask_values("zero,one")


# ----------------------------------------------------------------------------- ONNX

def _checkpoint(tmp_path: Path, name: str, **kwargs) -> Path:
    return untrained_checkpoint(tmp_path / name.replace(":", "-") / "best.pt", name, SIZE, **kwargs)


SCRATCH = [(name, {"base_channels": 4}) for name in MODELS]
ON_ENCODERS = [(name, {"encoder": "resnet10t"}) for name in ENCODER_MODELS]


@pytest.mark.parametrize("name, kwargs", SCRATCH + ON_ENCODERS,
                         ids=[n for n, _ in SCRATCH] + [f"{n}:resnet10t" for n, _ in ON_ENCODERS])
def test_every_model_exports_to_onnx_with_parity(tmp_path: Path, name: str, kwargs: dict) -> None:
    checkpoint = _checkpoint(tmp_path, name, **kwargs)
    report = export_model(checkpoint.parent, tmp_path / "m.onnx")
    assert report["max_abs_diff"] < 1e-3 and report["min_mask_agreement"] >= 0.999
    assert report["dynamic"], report["static_because"]  # every model here keeps dynamic sizes
    meta = read_metadata(tmp_path / "m.onnx")
    assert meta["input_size"] == [SIZE, SIZE] and meta["threshold"] == 0.5 and meta["dynamic"]


def test_torchscript_export_and_predict_with_onnx_give_the_torch_masks(tmp_path: Path) -> None:
    from blobs import blob_manifest

    manifest = blob_manifest(tmp_path / "data")
    checkpoint = _checkpoint(tmp_path, "unet", base_channels=4, depth=2)
    report = export_model(checkpoint, tmp_path / "m.pt", fmt="torchscript", manifest=manifest)
    assert report["real_images"] == 4 and report["max_abs_diff"] < 1e-3
    module = torch.jit.load(str(tmp_path / "m.pt"))
    assert module(torch.rand(1, 3, SIZE, SIZE) * 255).shape == (1, 1, SIZE, SIZE)
    result = CliRunner().invoke(segtrain_cli, ["export", str(checkpoint.parent), "-o", str(tmp_path / "m.onnx"),
                                               "--manifest", str(manifest)])
    assert result.exit_code == 0, result.output
    assert "parity on 4 real images of augment.csv" in result.output
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(1)
    for i, size in enumerate([(50, 70), (64, 64), (81, 33)]):
        cv2.imwrite(str(images / f"im{i}.png"), rng.integers(0, 255, (*size, 3), dtype=np.uint8))
    predict(checkpoint, [images], tmp_path / "torch", device="cpu")
    result = CliRunner().invoke(segtrain_cli, ["predict", "--onnx", str(tmp_path / "m.onnx"), str(images),
                                               "-o", str(tmp_path / "onnx")])
    assert result.exit_code == 0, result.output
    for i in range(3):
        a = read_png(tmp_path / "torch" / "masks" / f"im{i}.png")
        b = read_png(tmp_path / "onnx" / "masks" / f"im{i}.png")
        assert a.shape == b.shape and (a == b).mean() >= 0.999


def test_export_bad_input(tmp_path: Path, monkeypatch) -> None:
    with pytest.raises(SegtrainError, match="no such run folder or checkpoint"):
        export_model(tmp_path / "nope", tmp_path / "m.onnx")
    (tmp_path / "empty-run").mkdir()
    with pytest.raises(SegtrainError, match="no best.pt"):
        export_model(tmp_path / "empty-run", tmp_path / "m.onnx")
    checkpoint = _checkpoint(tmp_path, "unet", base_channels=4, depth=2)
    with pytest.raises(SegtrainError, match="unknown format 'tflite'; choose one of onnx, torchscript"):
        export_model(checkpoint, tmp_path / "m.onnx", fmt="tflite")
    # a graph that disagrees with PyTorch is refused, and nothing is left behind
    with pytest.raises(SegtrainError, match=r"disagrees with PyTorch.*\(tolerance 0\)"):
        export_model(checkpoint, tmp_path / "m.onnx", tolerance=0.0)
    assert list(tmp_path.glob("*.onnx")) == [] and list(tmp_path.glob(".*tmp*")) == []

    def refuse(*args, **kwargs):
        raise RuntimeError("Exporting the operator 'aten::magic' to ONNX opset version 17 is not supported")

    monkeypatch.setattr(torch.onnx, "export", refuse)
    with pytest.raises(SegtrainError, match="unet cannot be exported to ONNX: .*aten::magic"):
        export_model(checkpoint, tmp_path / "m.onnx")
    result = CliRunner().invoke(segtrain_cli, ["predict", "--onnx", str(tmp_path / "missing.onnx"),
                                               str(tmp_path), "-o", str(tmp_path / "o")])
    assert result.exit_code == 1 and "model file not found" in result.output


def test_onnx_without_onnxruntime_names_the_extra(tmp_path: Path, monkeypatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "onnxruntime" else real(name, *a))
    checkpoint = _checkpoint(tmp_path, "unet", base_channels=4, depth=2)
    with pytest.raises(SegtrainError, match=r"needs onnxruntime.*segkit\[export\].*torchscript"):
        export_model(checkpoint, tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()
