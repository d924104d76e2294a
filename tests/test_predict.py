"""`segtrain predict` on image files, a folder and a manifest: outputs at the input's own size,
binary 0/255 masks, bad files skipped with a reason, and checkpoints that rebuild alone."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from blobs import untrained_checkpoint
from segprep.manifest import write_manifest
from segprep.shards import ShardWriter
from segtrain.checkpoint import load_model
from segtrain.cli import main as cli
from segtrain.errors import SegtrainError
from segtrain.predict import predict, read_image_file

TRAIN_SIZE = 32


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """An untrained tiny U-Net saved the way `segtrain run` saves one (training is tested elsewhere)."""
    return untrained_checkpoint(tmp_path_factory.mktemp("ckpt") / "best.pt", "unet", TRAIN_SIZE,
                                base_channels=4, depth=2)


def disc_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 60, (height, width, 3), dtype=np.uint8)
    yy, xx = np.mgrid[:height, :width]
    image[(yy - height / 2) ** 2 + (xx - width / 2) ** 2 <= (min(height, width) / 4) ** 2] += np.uint8(150)
    return image


def write_image(path: Path, image: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, data = cv2.imencode(path.suffix, image[..., ::-1] if image.ndim == 3 else image)
    assert ok
    data.tofile(path)
    return path


def read_grey(path: Path) -> np.ndarray:
    return cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_UNCHANGED)


def check_outputs(out: Path, name: str, shape: tuple[int, int]) -> None:
    mask = read_grey(out / "masks" / f"{name}.png")
    assert mask.shape == shape and set(np.unique(mask)) <= {0, 255}
    overlay = read_grey(out / "overlays" / f"{name}.png")
    assert overlay.shape == (*shape, 3)


def test_predict_files_and_folder(checkpoint, tmp_path, caplog):
    images = tmp_path / "in"
    a = write_image(images / "a.png", disc_image(40, 56))
    b = write_image(images / "b b ü.jpg", disc_image(33, 20, seed=1))      # odd size, space, non-ASCII
    c = write_image(tmp_path / "other" / "a.png", disc_image(64, 64, seed=2))  # same stem as a.png
    write_image(images / "grey.png", disc_image(24, 24)[..., 0])               # one channel
    (images / "notes.txt").write_text("not an image")                       # skipped, and counted
    (images / ".DS_Store").write_bytes(b"\0")                                # hidden: skipped quietly
    (images / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")     # skipped with a reason

    out = tmp_path / "out"
    result = predict(checkpoint, [a, c, images], out, device="cpu", batch_size=2)
    assert result["written"] == 5                                           # a, other/a, and 3 in the folder
    # every file not predicted is in the result (the summary counts it), the hidden one aside
    assert [Path(s).name for s, _ in result["skipped"]] == ["notes.txt", "broken.png"]
    assert "not an image by its name" in result["skipped"][0][1]
    assert "truncated PNG" in result["skipped"][1][1]
    check_outputs(out, "a", (40, 56))
    check_outputs(out, "a-2", (64, 64))                                     # no overwrite of a.png's outputs
    check_outputs(out, "b_b_ü", (33, 20))
    check_outputs(out, "grey", (24, 24))
    table = pd.read_csv(out / "predictions.csv")
    assert len(table) == 5 and set(table.columns) == {"name", "input", "height", "width", "fg_fraction"}
    assert read_image_file(b).shape == (33, 20, 3)


def test_predict_manifest_split_via_cli(checkpoint, tmp_path):
    shard = "shards/s-00000.h5"
    rows = []
    with ShardWriter(tmp_path / shard, "clean") as writer:  # variable sizes, as clean writes them
        for i, (split, (h, w)) in enumerate([("train", (32, 32)), ("test", (48, 40)), ("test", (36, 52)),
                                             ("test", (32, 32))]):
            index = writer.add(sample_id=f"src/s{i}", image=disc_image(h, w, i),
                               mask=np.zeros((h, w), np.uint8))
            rows.append({"sample_id": f"src/s{i}", "source": "src", "split": split, "group": str(i),
                         "image_shard": shard, "image_index": index, "mask_shard": shard, "mask_index": index,
                         "height": h, "width": w, "fg_fraction": 0.0,
                         "status": "excluded" if i == 3 else "ok", "issues": "", "parent_id": "",
                         "image_path": "", "mask_path": ""})
    manifest = write_manifest(pd.DataFrame(rows), tmp_path / "clean.csv")
    out = tmp_path / "pred"
    result = CliRunner().invoke(cli, ["predict", str(checkpoint), str(manifest), "--split", "test",
                                      "-o", str(out), "--device", "cpu", "--threshold", "0.4"])
    assert result.exit_code == 0, result.output
    assert "predicted 2 images (0 skipped)" in result.output
    check_outputs(out, "src__s1", (48, 40))
    check_outputs(out, "src__s2", (36, 52))
    assert not (out / "masks" / "src__s3.png").exists()                    # excluded row
    assert not (out / "masks" / "src__s0.png").exists()                    # other split


def test_predict_bad_input(checkpoint, tmp_path):
    with pytest.raises(SegtrainError, match="missing.png: input not found"):
        predict(checkpoint, [tmp_path / "missing.png"], tmp_path / "o")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SegtrainError, match="folder holds no images"):
        predict(checkpoint, [empty], tmp_path / "o")
    bad = tmp_path / "zero.png"
    bad.write_bytes(b"")
    with pytest.raises(SegtrainError, match="no image could be read .*zero.png: zero-byte file"):
        predict(checkpoint, [bad], tmp_path / "o", device="cpu")
    image = write_image(tmp_path / "x.png", disc_image(16, 16))
    with pytest.raises(SegtrainError, match="--split test applies to manifest inputs"):
        predict(checkpoint, [image], tmp_path / "o", split="test")
    not_ckpt = tmp_path / "weights.pt"
    torch.save({"state_dict": {}}, not_ckpt)
    with pytest.raises(SegtrainError, match="not a segkit checkpoint"):
        predict(not_ckpt, [image], tmp_path / "o", device="cpu")
    with pytest.raises(SegtrainError, match="checkpoint not found"):
        load_model(tmp_path / "nothing.pt")
    result = CliRunner().invoke(cli, ["predict", str(checkpoint), str(tmp_path / "missing.png"),
                                      "-o", str(tmp_path / "o")])
    assert result.exit_code == 1 and "input not found" in result.output
