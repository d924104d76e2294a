"""`segtrain bench`: leaderboards over tiny synthetic runs, grids, resume, speed-only, bad input."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from segtrain import bench as B
from segtrain import speed as S
from segtrain.cli import main as cli
from segtrain.errors import SegtrainError

from blobs import blob_manifest

# 1 epoch of 4-8-16-channel U-Nets on 8 images of 32x32: a run takes a second or two on a CPU.
RUN_ARGS = ["--epochs", "1", "--batch-size", "4", "--workers", "0", "--device", "cpu", "--lr", "0.01",
            "--base-channels", "4"]
MODELS = "unet,unet-strided"  # both take depth=2 (from the config file)


def markdown_header(text: str) -> list[str]:
    """The cells of the first markdown table row in ``text``."""
    line = next(line for line in text.splitlines() if line.startswith("|"))
    return [cell.strip() for cell in line.strip("|").split("|")]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("bench-data")
    config = root / "tiny.yaml"
    config.write_text("model_kwargs: {depth: 2}\n")
    return blob_manifest(root), config


@pytest.fixture(scope="module")
def grid_bench(data, tmp_path_factory) -> tuple[Path, str]:
    """2 models x 2 losses, run once for the tests that read its output."""
    manifest, config = data
    out = tmp_path_factory.mktemp("bench") / "b"
    result = CliRunner().invoke(cli, ["bench", str(manifest), "--models", MODELS, "--losses", "bce,dice",
                                      "--out", str(out), "--config", str(config), *RUN_ARGS])
    assert result.exit_code == 0, result.output
    return out, result.output


def test_models_x_losses_leaderboard(grid_bench) -> None:
    out, output = grid_bench
    board = pd.read_csv(out / "leaderboard.csv", keep_default_na=False, na_values=[""])
    assert list(board.columns) == [*B.LEADERBOARD_COLUMNS, "errors"]
    assert len(board) == 4
    assert sorted(zip(board["model"], board["loss"])) == [
        ("unet", "bce"), ("unet", "dice"), ("unet-strided", "bce"), ("unet-strided", "dice")]
    dice = board["dice_mean"].tolist()
    assert dice == sorted(dice, reverse=True) and board["rank"].tolist() == [1, 2, 3, 4]
    assert board["dice_std"].isna().all()  # one seed: no spread
    assert (board["params"] > 0).all() and (board["gmacs"] > 0).all() and (board["train_img_s"] > 0).all()
    for model, loss in zip(board["model"], board["loss"]):
        summary = json.loads((out / f"{model}-{loss}-s0" / "summary.json").read_text())
        assert summary["model"] == model and summary["loss"] == loss
    markdown = (out / "leaderboard.md").read_text()
    assert markdown_header(markdown)[:3] == ["#", "model", "loss"] and "best:" in markdown
    assert (out / "leaderboard.png").read_bytes()[:4] == b"\x89PNG"
    best = board.iloc[0]
    assert f"best: {best['model']} / {best['loss']}" in output
    assert "4 trained, 0 resumed, 0 reused" in output


def test_resume_runs_nothing_finished(grid_bench, data) -> None:
    out, _ = grid_bench
    manifest, config = data
    summaries = sorted(out.glob("*/summary.json"))
    mtimes = [p.stat().st_mtime_ns for p in summaries]
    args = ["bench", str(manifest), "--models", MODELS, "--losses", "bce,dice", "--out", str(out),
            "--config", str(config), *RUN_ARGS]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "0 trained, 0 resumed, 4 reused" in result.output
    assert [p.stat().st_mtime_ns for p in summaries] == mtimes
    assert len(pd.read_csv(out / "leaderboard.csv")) == 4

    # A half-finished run (last.pt, no summary) is resumed, and only it.
    (out / "unet-dice-s0" / "summary.json").unlink()
    calls = []

    def train(config):
        from segtrain.trainer import train as real_train

        calls.append((Path(config.out).name, config.resume))
        return real_train(config)

    combos = B.combinations(MODELS.split(","), ["bce", "dice"])
    base = {"epochs": 1, "batch_size": 4, "workers": 0, "device": "cpu", "lr": 0.01, "base_channels": 4,
            "model_kwargs": {"depth": 2}}
    frame, _ = B.run_bench(manifest, combos, seeds=1, out=out, base=base, train=train)
    assert calls == [("unet-dice-s0", True)]
    assert (out / "unet-dice-s0" / "summary.json").is_file() and len(frame) == 4


def test_grid_file(data, tmp_path) -> None:
    manifest, config = data
    grid = tmp_path / "grid.csv"
    grid.write_text("model,loss,lr,batch-size,seed\nunet,dice,0.01,4,\nunet-strided,bce,0.005,,5\n")
    out = tmp_path / "g"
    result = CliRunner().invoke(cli, ["bench", str(manifest), "--grid", str(grid), "--out", str(out),
                                      "--config", str(config), *RUN_ARGS])
    assert result.exit_code == 0, result.output
    board = pd.read_csv(out / "leaderboard.csv", keep_default_na=False, na_values=[""])
    assert len(board) == 2 and (board["runs"] == 1).all()
    assert set(board["options"]) == {"lr=0.01 batch_size=4", "lr=0.005 seed=5"}
    assert board["dice_mean"].tolist() == sorted(board["dice_mean"].tolist(), reverse=True)
    folders = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert folders == ["r01-unet-dice-s0", "r02-unet-strided-bce-s5"]
    config_row2 = json.loads((out / "r02-unet-strided-bce-s5" / "config.json").read_text())
    assert config_row2["lr"] == 0.005 and config_row2["seed"] == 5 and config_row2["batch_size"] == 4
    assert (out / "leaderboard.md").is_file() and (out / "leaderboard.png").is_file()


def test_leaderboard_aggregates_seeds_and_failures(tmp_path) -> None:
    """Aggregation and ordering on hand-made summaries: no training."""
    def summary(dice: float, iou: float) -> dict:
        return {"model": "unet", "test": {"mean": {"dice": dice, "iou": iou}}, "parameters": 10,
                "input_size": [32, 32], "model_kwargs": {"base_channels": 4, "depth": 2},
                "train_images_per_s": 5.0, "inference_images_per_s": 50.0, "peak_gpu_memory_mb": None,
                "wall_seconds": 2.0}

    combos = B.combinations(["unet"], ["bce", "dice", "focal"])
    jobs = B.plan(tmp_path / "m.csv", combos, seeds=2, out=tmp_path, base={"base_channels": 4,
                                                                           "model_kwargs": {"depth": 2}})
    outcomes = {("bce", 0): (0.5, 0.4), ("bce", 1): (0.7, 0.6), ("dice", 0): (0.8, 0.7), ("dice", 1): (0.8, 0.7)}
    results = []
    for job in jobs:
        scores = outcomes.get((job.config.loss, job.seed))
        results.append((job, summary(*scores) if scores else None, None if scores else "loss is nan"))
    board = B.leaderboard(results)
    assert board["loss"].tolist() == ["dice", "bce", "focal"]
    assert board.loc[1, "dice_mean"] == pytest.approx(0.6)
    assert board.loc[1, "dice_std"] == pytest.approx(np.std([0.5, 0.7], ddof=1))
    assert board.loc[0, "dice_std"] == 0.0
    assert math.isnan(board.loc[2, "dice_mean"]) and board.loc[2, "runs"] == 0
    assert board.loc[2, "errors"] == "loss is nan"
    paths = B.write_leaderboard(board, tmp_path / "lb")
    text = paths["md"].read_text()
    assert "best: unet / dice, test Dice 0.8000 ± 0.0000 (mean over 2 seeds)" in text
    assert "unet / focal: loss is nan" in text


def test_speed_only(tmp_path) -> None:
    out = tmp_path / "speed"
    result = CliRunner().invoke(cli, ["bench", "--speed-only", "--models", "unet,segnet", "--size", "32",
                                      "--batch-size", "2", "--steps", "1", "--warmup", "0",
                                      "--base-channels", "4", "--device", "cpu", "--out", str(out)])
    assert result.exit_code == 0, result.output
    speed = pd.read_csv(out / "speed.csv", keep_default_na=False, na_values=[""])
    assert list(speed.columns) == [*S.SPEED_COLUMNS, "device"]
    assert list(zip(speed["model"], speed["amp"])) == [("unet", "off"), ("unet", "bf16"),
                                                       ("segnet", "off"), ("segnet", "bf16")]
    off = speed[speed["amp"] == "off"]
    assert (off["status"] == "ok").all() and (off["train_img_s"] > 0).all() and (off["infer_img_s"] > 0).all()
    assert speed["train_peak_mb"].isna().all()  # CPU: no CUDA memory to report
    assert markdown_header((out / "speed.md").read_text())[:2] == ["model", "amp"]


def test_speed_only_odd_size_is_marked(tmp_path) -> None:
    frame = S.speed_benchmark(["unet"], size=(30, 30), batch_size=1, device="cpu", steps=1, warmup=0,
                              model_kwargs={"base_channels": 4, "depth": 2}, amp=("off",))
    assert frame["status"].tolist() == ["n/a: size must be divisible by 4"]


@pytest.mark.parametrize("args, message", [
    (["--models", "unet,nope"], "unknown model 'nope'; choose from: unet"),
    (["--models", "unet:nope"], "unknown encoder 'nope'"),
    (["--models", "segnet:resnet18"], "unknown model 'segnet' with an --encoder; choose from: unet"),
    (["--losses", "bce,nope"], "unknown loss 'nope'; valid losses: bce"),
    (["--models", "unet", "--grid", "GRID"], "either --grid or --models"),
    (["--grid", "GRID"], "unknown column(s) learning_rate; valid columns: model, loss, epochs"),
    (["--grid", "MISSING"], "grid file not found"),
])
def test_bad_input(data, tmp_path, args, message) -> None:
    manifest, _ = data
    grid = tmp_path / "grid.csv"
    grid.write_text("model,learning_rate\nunet,0.1\n")
    args = [str(grid) if a == "GRID" else str(tmp_path / "missing.csv") if a == "MISSING" else a for a in args]
    result = CliRunner().invoke(cli, ["bench", str(manifest), "--out", str(tmp_path / "o"), *args, *RUN_ARGS])
    assert result.exit_code == 1 and message in result.output, result.output
    assert not (tmp_path / "o").exists()  # checked before anything ran


def test_bad_grid_values_and_speed_names(tmp_path) -> None:
    grid = tmp_path / "grid.csv"
    grid.write_text("model,epochs\nunet,two\n")
    with pytest.raises(SegtrainError, match="line 2: epochs must be an integer"):
        B.read_grid(grid)
    grid.write_text("model,out\nunet,x\n")
    with pytest.raises(SegtrainError, match="set by the bench itself"):
        B.read_grid(grid)
    with pytest.raises(SegtrainError, match="unknown model"):
        S.speed_benchmark(["nope"], size=(32, 32), batch_size=1, device="cpu")
    result = CliRunner().invoke(cli, ["bench"])
    assert result.exit_code == 1 and "MANIFEST is needed" in result.output


def test_bad_manifest_fails_once_before_any_run(tmp_path) -> None:
    notes = tmp_path / "notes.csv"
    notes.write_text("hello\nworld\n")
    for manifest in (notes, tmp_path / "missing.csv"):
        result = CliRunner().invoke(cli, ["bench", str(manifest), "--out", str(tmp_path / "o"), *RUN_ARGS])
        assert result.exit_code == 1 and str(manifest.name) in result.output, result.output
        assert "[1/1]" not in result.output and not (tmp_path / "o").exists()


def test_failed_runs_make_a_nonzero_exit(data, tmp_path) -> None:
    manifest, config = data
    # 30 px is not divisible by the 2-level U-Net's stride: every run fails, the bench still reports.
    result = CliRunner().invoke(cli, ["bench", str(manifest), "--models", "unet", "--losses", "dice",
                                      "--out", str(tmp_path / "o"), "--config", str(config),
                                      "--size", "30", *RUN_ARGS])
    assert result.exit_code == 1, result.output
    assert "FAILED" in result.output and "1 run(s) failed" in result.output.splitlines()[-1]
    assert (tmp_path / "o" / "leaderboard.md").is_file()


def test_grid_cells_take_the_types_runconfig_declares(tmp_path) -> None:
    # encoder_lr and freeze_encoder were missing from a second, hand-kept list of int/float keys
    # and reached RunConfig as text; the types now come from RunConfig's own annotations
    grid = tmp_path / "grid.csv"
    grid.write_text("model,encoder_lr,freeze_encoder,size,normalize,channels_last,max_minutes\n"
                    "unet,0.1,2,64x48,unit,yes,1\n")
    (combo,) = B.read_grid(grid)
    assert combo.options == {"model": "unet", "encoder_lr": 0.1, "freeze_encoder": 2,
                             "size": [64, 48], "normalize": "unit", "channels_last": True,
                             "max_minutes": 1.0}
    from segtrain.config import RunConfig
    RunConfig(manifest="m.csv", **combo.options)  # every value has the type the config checks
    grid.write_text("model,freeze_encoder\nunet,0.5\n")
    with pytest.raises(SegtrainError, match="line 2: freeze_encoder must be an integer"):
        B.read_grid(grid)
