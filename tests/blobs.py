"""A tiny learnable fixed-size manifest (bright discs on dark noise) for segtrain's tests,
written straight through the shard and manifest APIs so they do not depend on the segprep
stages."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from segprep.manifest import write_manifest
from segprep.shards import ShardWriter

SIZE = 32


def blob_manifest(root: Path, counts: dict[str, int] | None = None, *, size: int = SIZE,
                  seed: int = 0, excluded_train_row: bool = False) -> Path:
    """``counts`` samples per split; ``excluded_train_row`` adds one excluded train row that
    every stage must skip."""
    counts = counts or {"train": 8, "val": 4, "test": 4}
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    rows = []
    shard = "shards/blobs-00000.h5"
    with ShardWriter(root / shard, "augment", fixed_size=(size, size)) as writer:
        for split, n in counts.items():
            extra = int(excluded_train_row and split == "train")
            for i in range(n + extra):
                cy, cx = rng.uniform(0.3 * size, 0.7 * size, 2)
                radius = rng.uniform(0.15 * size, 0.3 * size)
                mask = ((yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2).astype(np.uint8)
                image = rng.integers(0, 60, (size, size, 3), dtype=np.uint8)
                image[mask > 0] += np.uint8(150)
                sample_id = f"blobs/{split}{i:02d}"
                index = writer.add(sample_id=sample_id, image=image, mask=mask)
                rows.append({"sample_id": sample_id, "source": "blobs", "split": split,
                             "group": sample_id, "image_shard": shard, "image_index": index,
                             "mask_shard": shard, "mask_index": index, "height": size,
                             "width": size, "fg_fraction": float(mask.mean()),
                             "status": "excluded" if i == n else "ok", "issues": "",
                             "parent_id": "", "image_path": "", "mask_path": ""})
    return write_manifest(pd.DataFrame(rows), root / "augment.csv")


def untrained_checkpoint(path: Path, name: str = "unet", size: int = SIZE, **kwargs) -> Path:
    """``name`` (with ``kwargs``) untrained (torch seed 0), saved at ``path`` the way `segtrain
    run` saves its best.pt: for tests of what reads checkpoints (predict, export, the app)."""
    import torch

    from segtrain.checkpoint import save_checkpoint
    from segtrain.models import build_model

    torch.manual_seed(0)
    model = build_model(name, **kwargs)
    save_checkpoint(path, {"model_name": model.segkit_name, "model_kwargs": model.segkit_kwargs,
                           "model_state": model.state_dict(), "input_size": [size, size],
                           "normalize": "imagenet", "threshold": 0.5, "config": {}, "epoch": 1})
    return Path(path)
