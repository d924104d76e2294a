"""`torchrun --nproc-per-node 2 -m segtrain run` on CPU (gloo): DDP trains, only rank 0 prints and
writes, the ranks end with identical weights, and the val metrics are reduced over both ranks."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from segtrain.checkpoint import load_model
from segtrain.data import ShardDataset
from segtrain.evaluate import evaluate

from blobs import blob_manifest



@pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                    reason="torch built without gloo")
def test_torchrun_two_cpu_processes(tmp_path):
    # odd counts: the ranks get unequal val/test shares, which must not hang or double count
    manifest = blob_manifest(tmp_path, {"train": 8, "val": 5, "test": 3}, seed=1)
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps({"base_channels": 4, "model_kwargs": {"depth": 2}}))
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               "-m", "segtrain", "run", str(manifest), "--config", str(config), "--epochs", "1",
               "--batch-size", "2", "--workers", "0", "--device", "cpu", "--out", str(out)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    assert done.stdout.count("epoch 1/1") == 1                     # rank 0 alone prints
    assert done.stdout.count("run folder:") == 1
    for name in ("config.json", "history.csv", "best.pt", "last.pt", "test_per_image.csv", "summary.json",
                 "curves.png", "predictions.png"):
        assert (out / name).is_file(), name
    assert not list(out.glob("*.tmp"))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["ranks_in_sync"]   # checked with an all-reduce of weights
    assert summary["test"]["n_images"] == 3                          # both ranks' shares, none twice
    assert len(pd.read_csv(out / "test_per_image.csv")) == 3
    # train: 8 images = 2 ranks x 2 steps x batch 2
    assert json.loads((out / "config.json").read_text())["resolved"]["world_size"] == 2

    # The val Dice reduced over the two ranks equals a single-process evaluation of the saved model.
    model, _ = load_model(out / "last.pt")
    rows, _ = evaluate(model, ShardDataset(manifest, "val"), device=torch.device("cpu"), with_hd95=False)
    history = pd.read_csv(out / "history.csv")
    assert len(rows) == 5
    assert history["val_dice"].iloc[-1] == pytest.approx(np.mean([r["dice"] for r in rows]), abs=1e-5)
