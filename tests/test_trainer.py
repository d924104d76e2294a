"""`segtrain run` end to end on tiny synthetic shards: every output file, config precedence,
resume equality, NaN handling, early stop and bad input."""

from __future__ import annotations

import logging

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from segprep.errors import SegprepError
from segprep.manifest import write_manifest
from segprep.shards import ShardWriter
from segtrain import trainer
from segtrain.checkpoint import load_model, read_checkpoint
from segtrain.cli import main as cli
from segtrain.config import CONFIG_KEYS, RunConfig, resolve_config
from segtrain.errors import SegtrainError
from segtrain.metrics import METRIC_NAMES

from blobs import SIZE, blob_manifest

TINY = {"base_channels": 4, "model_kwargs": {"depth": 2}}  # unet: 4-8-16 channels, ~6k parameters


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Path:
    return blob_manifest(tmp_path_factory.mktemp("blobs"), excluded_train_row=True)


def config(manifest: Path, out: Path, **options) -> RunConfig:
    base = {"epochs": 1, "batch_size": 4, "workers": 0, "lr": 1e-2, "device": "cpu", **TINY}
    return RunConfig(manifest=str(manifest), out=str(out), **{**base, **options})


def is_png(path: Path) -> bool:
    return path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ----------------------------------------------------------------------------- end to end

def test_cli_run_writes_every_output(manifest, tmp_path, monkeypatch):
    compiled = []
    monkeypatch.setattr(torch, "compile", lambda model, **kw: compiled.append(model) or model)
    cfg_file = tmp_path / "run.yaml"
    cfg_file.write_text("model: unet\nbase_channels: 4\nmodel_kwargs: {depth: 2}\nepochs: 5\nbatch-size: 4\n"
                        "lr: 0.01\n")
    out = tmp_path / "run"
    result = CliRunner().invoke(cli, [
        "run", str(manifest), "--config", str(cfg_file), "--epochs", "2", "--loss", "bce+dice",
        "--workers", "1", "--device", "cpu", "--channels-last", "--compile", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert result.output.count("epoch ") >= 2 and "test on 4 images" in result.output
    assert len(compiled) == 1

    config_json = json.loads((out / "config.json").read_text())
    assert config_json["epochs"] == 2                      # the command line beats the file
    assert config_json["base_channels"] == 4               # the file beats the defaults
    assert config_json["optimizer"] == "adam"              # defaults fill the rest
    assert config_json["channels_last"] and config_json["compile"]
    assert set(CONFIG_KEYS) <= set(config_json) and "torch" in config_json["versions"]

    history = pd.read_csv(out / "history.csv")
    assert list(history.columns) == list(trainer.HISTORY_COLUMNS)
    assert history["epoch"].tolist() == [1, 2]
    assert np.isfinite(history.drop(columns="epoch").to_numpy()).all()
    assert (history[["val_dice", "val_iou"]].to_numpy() <= 1).all()

    summary = json.loads((out / "summary.json").read_text())
    for key in ("test", "best_epoch", "best_val_dice", "train_images_per_s", "inference_images_per_s",
                "peak_gpu_memory_mb", "parameters", "wall_seconds", "versions", "epochs_run"):
        assert key in summary, key
    assert summary["peak_gpu_memory_mb"] is None and summary["epochs_run"] == 2
    assert set(summary["versions"]) == {"torch", "segkit", "python"}
    assert summary["best_val_dice"] == pytest.approx(history["val_dice"].max())
    assert summary["test"]["n_images"] == 4
    for stat in ("mean", "std", "min", "max"):
        assert set(summary["test"][stat]) == set(METRIC_NAMES)
    assert {"dice", "iou"} <= set(summary["test"]["global"])

    per_image = pd.read_csv(out / "test_per_image.csv")
    assert len(per_image) == 4 and list(per_image.columns[:8]) == ["sample_id", *METRIC_NAMES]
    assert set(per_image["sample_id"]) == {f"blobs/test{i:02d}" for i in range(4)}  # excluded row skipped
    assert per_image["dice"].mean() == pytest.approx(summary["test"]["mean"]["dice"])

    for name in ("best.pt", "last.pt"):
        raw = torch.load(out / name, weights_only=True)     # plain types only
        assert raw["model_name"] == "unet" and raw["input_size"] == [SIZE, SIZE]
        model, checkpoint = load_model(out / name)
        assert checkpoint["model_kwargs"]["base_channels"] == 4 and checkpoint["model_kwargs"]["depth"] == 2
        assert model(torch.zeros(1, 3, SIZE, SIZE)).shape == (1, 1, SIZE, SIZE)
    assert torch.load(out / "last.pt", weights_only=True)["epoch"] == 2
    assert torch.load(out / "best.pt", weights_only=True)["epoch"] == summary["best_epoch"]
    assert is_png(out / "curves.png") and is_png(out / "predictions.png")


def test_model_learns_a_little(manifest, tmp_path):
    summary = trainer.train(config(manifest, tmp_path / "learn", epochs=4, batch_size=2))
    history = pd.read_csv(tmp_path / "learn" / "history.csv")
    assert history["train_loss"].iloc[-1] < history["train_loss"].iloc[0]
    assert summary["test"]["mean"]["dice"] > 0.5  # 0.87 at the time of writing


def test_variable_size_manifest_trains_at_size_and_tests_at_stored_size(tmp_path):
    """clean.csv-style shards (samples at their own size): --size is required for training, and
    the test images are scored at their stored size against their untouched masks."""
    rng = np.random.default_rng(3)
    shard, rows = "shards/clean-00000.h5", []
    sizes = {"train": [(32, 32), (40, 36), (28, 44), (32, 40)], "val": [(36, 36), (32, 32)],
             "test": [(44, 30), (32, 32)]}
    with ShardWriter(tmp_path / shard, "clean") as writer:
        for split, shapes in sizes.items():
            for i, (h, w) in enumerate(shapes):
                mask = np.zeros((h, w), np.uint8)
                mask[h // 4: 3 * h // 4, w // 4: 3 * w // 4] = 1
                image = rng.integers(0, 60, (h, w, 3), dtype=np.uint8)
                image[mask > 0] += np.uint8(150)
                index = writer.add(sample_id=f"v/{split}{i}", image=image, mask=mask)
                rows.append({"sample_id": f"v/{split}{i}", "source": "v", "split": split, "group": f"{split}{i}",
                             "image_shard": shard, "image_index": index, "mask_shard": shard,
                             "mask_index": index, "height": h, "width": w, "fg_fraction": float(mask.mean()),
                             "status": "ok", "issues": "", "parent_id": "", "image_path": "", "mask_path": ""})
    manifest = write_manifest(pd.DataFrame(rows), tmp_path / "clean.csv")
    with pytest.raises(SegtrainError, match="different sizes .*--size"):
        trainer.train(config(manifest, tmp_path / "nosize"))

    out = tmp_path / "sized"
    summary = trainer.train(config(manifest, out, size=[32, 32], batch_size=2))
    assert summary["input_size"] == [32, 32] and summary["test"]["n_images"] == 2
    assert torch.load(out / "best.pt", weights_only=True)["input_size"] == [32, 32]
    per_image = pd.read_csv(out / "test_per_image.csv").set_index("sample_id")
    # the counts cover every pixel of the stored 44x30 mask, not of a 32x32 resize
    assert per_image.loc["v/test0", ["tp", "fp", "fn", "tn"]].sum() == 44 * 30
    assert is_png(out / "predictions.png")


# ----------------------------------------------------------------------------- config

def test_config_precedence_and_validation(tmp_path):
    yaml_file = tmp_path / "c.yaml"
    yaml_file.write_text("manifest: m.csv\nepochs: 7\nlr: 0.01\nsize: 64x48\nloss: dice\n")
    cfg = resolve_config(yaml_file, {"epochs": 3})
    assert (cfg.epochs, cfg.lr, cfg.size, cfg.loss, cfg.batch_size) == (3, 0.01, [64, 48], "dice", 8)
    assert cfg.out_dir == Path("runs/unet-dice")
    json_file = tmp_path / "c.json"
    json_file.write_text(json.dumps({"manifest": "m.csv", "optimizer": "sgd", "early-stop": 4}))
    cfg = resolve_config(json_file, {"manifest": "other.csv"})
    assert (cfg.manifest, cfg.optimizer, cfg.early_stop) == ("other.csv", "sgd", 4)

    bad = tmp_path / "bad.yaml"
    bad.write_text("manifest: m.csv\nepoch: 3\n")
    with pytest.raises(SegtrainError, match=r"bad.yaml: unknown key\(s\) epoch; valid keys: manifest, model"):
        resolve_config(bad, {})
    with pytest.raises(SegtrainError, match="optimizer must be one of adam, adamw, nadam, sgd"):
        resolve_config(None, {"manifest": "m.csv", "optimizer": "lion"})
    with pytest.raises(SegtrainError, match="a manifest is needed"):
        resolve_config(None, {})
    with pytest.raises(SegtrainError, match="epochs must be an integer >= 1"):
        resolve_config(None, {"manifest": "m.csv", "epochs": 0})
    with pytest.raises(SegtrainError, match="config file not found"):
        resolve_config(tmp_path / "missing.yaml", {})


# ----------------------------------------------------------------------------- resume, NaN, early stop

class Killed(Exception):
    pass


def test_resume_matches_uninterrupted_run(manifest, tmp_path, caplog):
    straight = tmp_path / "straight"
    trainer.train(config(manifest, straight, epochs=2))

    def kill_after_first(row):
        if row["epoch"] == 1:
            raise Killed  # after last.pt of epoch 1 is on disk, as a kill would leave it

    resumed = tmp_path / "resumed"
    with pytest.raises(Killed):
        trainer.train(config(manifest, resumed, epochs=2), on_epoch=kill_after_first)
    assert read_checkpoint(resumed / "last.pt")["epoch"] == 1
    summary = trainer.train(config(manifest, resumed, epochs=2, resume=True))
    assert summary["epochs_run"] == 2

    a, b = read_checkpoint(straight / "last.pt"), read_checkpoint(resumed / "last.pt")
    assert a["model_state"].keys() == b["model_state"].keys()
    for key, tensor in a["model_state"].items():
        assert torch.equal(tensor, b["model_state"][key]), key
    assert pd.read_csv(straight / "history.csv")["train_loss"].tolist() == \
        pd.read_csv(resumed / "history.csv")["train_loss"].tolist()

    # --resume on a folder whose run died before its first checkpoint: starts fresh, says so
    with caplog.at_level(logging.WARNING, logger="segtrain.trainer"):
        fresh = trainer.train(config(manifest, tmp_path / "never", epochs=1, resume=True))
    assert fresh["epochs_run"] == 1 and "starting fresh" in caplog.text
    # an earlier run is never overwritten silently: --resume or --force
    with pytest.raises(SegtrainError, match="holds an earlier run.*--resume continues it, --force"):
        trainer.train(config(manifest, straight, epochs=2))
    assert trainer.train(config(manifest, tmp_path / "never", epochs=1, force=True))["epochs_run"] == 1


def test_nan_loss_stops_and_keeps_last_good_checkpoint(manifest, tmp_path, monkeypatch):
    import segtrain.losses

    poisoned = {"on": False}
    real = segtrain.losses.DeepSupervisionLoss

    class Poisoned(real):
        def forward(self, outputs, target, valid=None):
            loss = super().forward(outputs, target, valid)
            return loss * float("nan") if poisoned["on"] else loss

    monkeypatch.setattr(segtrain.losses, "DeepSupervisionLoss", Poisoned)
    out = tmp_path / "nan"
    with pytest.raises(SegtrainError, match=r"training loss is nan at epoch 2, step 1/2.*last.pt \(epoch 1\)"):
        trainer.train(config(manifest, out, epochs=3), on_epoch=lambda row: poisoned.update(on=True))
    checkpoint = read_checkpoint(out / "last.pt")
    assert checkpoint["epoch"] == 1
    assert all(torch.isfinite(t).all() for t in checkpoint["model_state"].values() if t.is_floating_point())
    assert len(pd.read_csv(out / "history.csv")) == 1


def test_early_stop(manifest, tmp_path, monkeypatch):
    monkeypatch.setattr(trainer, "validate", lambda run: {"val_loss": 0.5, "val_dice": 0.5, "val_iou": 0.4})
    summary = trainer.train(config(manifest, tmp_path / "early", epochs=10, early_stop=2))
    assert summary["epochs_run"] == 3 and summary["stopped_early"] and summary["best_epoch"] == 1


def test_max_minutes_stops_before_an_epoch_that_would_overrun(manifest, tmp_path):
    summary = trainer.train(config(manifest, tmp_path / "budget", epochs=5, max_minutes=1e-6))
    assert summary["epochs_run"] == 1 and summary["stopped_early"] and summary["stop_reason"] == "max_minutes"
    assert summary["test"]["n_images"] > 0 and (tmp_path / "budget" / "best.pt").is_file()
    start = time.perf_counter()
    assert not trainer.out_of_time(None, start - 1e6, [1.0])
    assert not trainer.out_of_time(1.0, start, [])            # the first epoch always runs
    assert not trainer.out_of_time(1.0, start - 30.0, [20.0])  # 30 s + 20 s < 60 s
    assert trainer.out_of_time(1.0, start - 30.0, [20.0, 40.0])  # 30 s + 30 s mean > 60 s budget
    with pytest.raises(SegtrainError, match="max_minutes must be a positive number"):
        config(manifest, tmp_path / "x", max_minutes=0)
    result = CliRunner().invoke(cli, [
        "run", str(manifest), "--model", "unet", "--base-channels", "4", "--epochs", "3", "--batch-size", "4",
        "--workers", "0", "--device", "cpu", "--max-minutes", "1e-6", "--out", str(tmp_path / "cli")])
    assert result.exit_code == 0, result.output
    assert "1 epoch of 3 (time budget: --max-minutes 1e-06)" in result.output
    assert json.loads((tmp_path / "cli" / "config.json").read_text())["max_minutes"] == 1e-6


# ----------------------------------------------------------------------------- bad input

def test_bad_input(manifest, tmp_path):
    with pytest.raises(SegtrainError, match=r"unknown model 'unet3d'; choose from: unet, .*unetpp"):
        trainer.train(config(manifest, tmp_path / "x", model="unet3d"))
    with pytest.raises(SegtrainError, match=r"unknown loss 'l2'; valid losses: bce, dice, bce\+dice"):
        trainer.train(config(manifest, tmp_path / "x", loss="l2"))
    with pytest.raises(SegprepError, match="missing.csv: manifest not found"):
        trainer.train(config(tmp_path / "missing.csv", tmp_path / "x"))
    no_val = blob_manifest(tmp_path / "noval", counts={"train": 4, "test": 2}, excluded_train_row=True)
    with pytest.raises(SegtrainError, match=r"split 'val' has no rows"):
        trainer.train(config(no_val, tmp_path / "x"))
    with pytest.raises(SegtrainError, match="has no option 'deep_supervision'"):
        trainer.train(config(manifest, tmp_path / "x", deep_supervision=True))
    if not torch.cuda.is_available():
        with pytest.raises(SegtrainError, match="--device cuda: CUDA is not available"):
            trainer.train(config(manifest, tmp_path / "x", device="cuda"))
        with pytest.raises(SegtrainError, match="--amp fp16 needs CUDA"):
            trainer.train(config(manifest, tmp_path / "x", amp="fp16"))
    result = CliRunner().invoke(cli, ["run", str(manifest), "--model", "nope", "--out", str(tmp_path / "x")])
    assert result.exit_code == 1 and "unknown model 'nope'" in result.output
    assert "Traceback" not in result.output
