"""What a new user trips over in the first hour: threads, progress without a terminal, the
pipeline-file rerun, the field-of-view ROI's values, flagged test images, small messages."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from segprep.clean import clean
from segprep.cli import main as segprep_cli
from segprep.errors import SegprepError
from segprep.ingest import ingest
from segprep.shards import close_shards


def test_threads_follow_the_cpus_this_process_may_use(monkeypatch) -> None:
    import os

    import torch

    from segprep import executor
    from segtrain.trainer import set_cpu_threads

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(executor, "_cgroup_cpus", lambda: 1.5)          # a quota of 1.5 CPUs
    assert executor.available_cpus() == 1
    monkeypatch.setattr(executor, "_cgroup_cpus", lambda: None)
    assert executor.available_cpus() == len(os.sched_getaffinity(0))
    before = torch.get_num_threads()
    try:
        monkeypatch.setattr("segtrain.trainer.available_cpus", lambda: 4)
        assert set_cpu_threads() == 4 and torch.get_num_threads() == 4
        assert set_cpu_threads(world_size=2) == 2                        # shared by DDP ranks
        monkeypatch.setenv("OMP_NUM_THREADS", "3")                      # the user's choice wins
        assert set_cpu_threads() == torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    # torch's OpenMP threads wait passively unless the user says otherwise (set on import)
    import subprocess

    code = "import os, segtrain; print(os.environ['OMP_WAIT_POLICY'])"
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.strip() == "PASSIVE"
    out = subprocess.run([sys.executable, "-c", code], env={**env, "OMP_WAIT_POLICY": "ACTIVE"},
                         capture_output=True, text=True)
    assert out.stdout.strip() == "ACTIVE"


def test_progress_without_a_terminal_prints_plain_lines(monkeypatch) -> None:
    from segprep import progress as P

    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    monkeypatch.setattr(P, "INTERVAL", 0.0)
    bar = P.progress(total=4, desc="ingest", unit="sample")
    assert isinstance(bar, P.PlainProgress)
    with bar:
        for _ in range(4):
            bar.update(1)
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("ingest: 1/4 sample (25%) after") and "done in" in lines[-1]
    assert [line for line in lines if "4/4" in line]
    quiet = P.progress(range(3), desc="x", enabled=False)
    assert list(quiet) == [0, 1, 2] and stream.getvalue().count("x:") == 0


def test_bench_prints_every_epoch_when_not_on_a_terminal(tmp_path: Path) -> None:
    from blobs import blob_manifest

    from segtrain.cli import main as segtrain_cli

    manifest = blob_manifest(tmp_path / "work")
    result = CliRunner().invoke(segtrain_cli, [
        "bench", str(manifest), "--models", "unet", "--losses", "dice", "--epochs", "2",
        "--batch-size", "4", "--workers", "0", "--device", "cpu", "--base-channels", "4",
        "-o", str(tmp_path / "bench")])
    assert result.exit_code == 0, result.output
    assert "unet-dice-s0: epoch 1/2" in result.output and "unet-dice-s0: epoch 2/2" in result.output
    text = (tmp_path / "bench" / "leaderboard.md").read_text()
    assert text.startswith("# segtrain bench: blobs (") and "WARNING: the test split has" in text
    assert "WARNING: the test split has" in result.output


def test_augment_with_a_pipeline_file_reruns_as_a_no_op(synth, tmp_path: Path) -> None:
    import albumentations as A

    data = synth("kvasir-seg", n=10, seed=21)
    work = tmp_path / "work"
    cleaned = clean(ingest([data.root], work, workers=1).manifest_path, workers=1, progress=False)
    pipeline = tmp_path / "pipe.yaml"
    # Rotate's limit is a tuple in to_dict() and a list once read back from the record
    A.save(A.Compose([A.HorizontalFlip(p=0.5), A.Rotate(limit=20, p=0.5)]), str(pipeline),
           data_format="yaml")
    args = ["augment", str(cleaned.manifest_path), "--pipeline", str(pipeline), "--factor", "2",
            "--size", "64", "--workers", "1"]
    first = CliRunner().invoke(segprep_cli, args)
    assert first.exit_code == 0, first.output
    again = CliRunner().invoke(segprep_cli, args)
    assert again.exit_code == 0 and "is up to date" in again.output, again.output
    A.save(A.Compose([A.VerticalFlip(p=0.5)]), str(pipeline), data_format="yaml")
    changed = CliRunner().invoke(segprep_cli, args)
    assert changed.exit_code == 1 and "pipeline changed" in changed.output
    assert "'transforms'" not in changed.output and len(changed.output) < 400   # brief, no dict dump
    close_shards()


def test_the_field_of_view_is_0_1_on_every_path(synth, tmp_path: Path) -> None:
    from segtrain.data import ShardDataset, make_loader
    from segtrain.data import StoredSizeDataset

    data = synth("drive", n=8, seed=22, size=(64, 64))
    result = ingest([data.root], tmp_path / "work", workers=1)
    manifests = [result.manifest_path,
                 clean(result.manifest_path, workers=1, progress=False).manifest_path]
    for manifest in manifests:
        dataset = ShardDataset(manifest, "train", size=(32, 32))
        item = dataset[0]
        assert set(np.unique(item["roi"].numpy())) <= {0, 1} and item["roi"].numpy().max() == 1
        batch = next(iter(make_loader(dataset, batch_size=2, shuffle=False, workers=0)))
        assert int(batch["roi"].max()) == 1
        stored = StoredSizeDataset(ShardDataset(manifest, "test", size=(32, 32)))[0]
        assert int(stored["roi"].max()) == 1
    close_shards()


def test_flagged_test_images_are_marked_in_the_per_image_table(tmp_path: Path, caplog) -> None:
    from blobs import blob_manifest

    from segprep.manifest import read_manifest, write_manifest
    from segtrain.config import RunConfig
    from segtrain.trainer import train

    manifest = blob_manifest(tmp_path / "work")
    table = read_manifest(manifest)
    test_ids = table.loc[table["split"] == "test", "sample_id"].tolist()
    table.loc[table["sample_id"] == test_ids[0], "issues"] = "misaligned"
    write_manifest(table, manifest)
    out = tmp_path / "run"
    train(RunConfig(manifest=str(manifest), out=str(out), epochs=1, batch_size=4, workers=0,
                    device="cpu", base_channels=4, model_kwargs={"depth": 2}))
    per_image = pd.read_csv(out / "test_per_image.csv", dtype=str, keep_default_na=False)
    assert per_image.set_index("sample_id").loc[test_ids[0], "issues"] == "misaligned"
    assert (per_image["issues"] == "").sum() == len(per_image) - 1
    assert "carry clean findings" in caplog.text


def test_ingest_summary_does_not_list_groups_of_one(synth, tmp_path: Path) -> None:
    data = synth("ph2", n=6, seed=23)
    text = ingest([data.root], tmp_path / "work", workers=1).summary()
    assert "(1)" not in text.split("groups:")[1].splitlines()[0]


def test_images_with_an_empty_masks_folder_say_so(tmp_path: Path) -> None:
    import cv2

    (tmp_path / "data" / "images").mkdir(parents=True)
    (tmp_path / "data" / "masks").mkdir()
    cv2.imwrite(str(tmp_path / "data" / "images" / "a.png"), np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(SegprepError, match=r"masks/ holds no image files \(and images/ holds 1\)"):
        ingest([tmp_path / "data"], tmp_path / "work", workers=1)


def test_models_listing_is_cached(tmp_path: Path, monkeypatch) -> None:
    from segtrain import catalog

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    calls = []
    import segtrain.models as models

    real = models.model_info
    monkeypatch.setattr(models, "model_info", lambda *a, **k: calls.append(a) or real(*a, **k))
    first = catalog.model_table(64)
    every = len(models.MODELS) + len(models.ENCODER_MODELS)
    assert len(calls) == every
    assert catalog.model_table(64) == first and len(calls) == every
    assert json.loads(next((tmp_path / "cache" / "segkit").glob("models-64-*.json")).read_text()) == first
