"""segtrain.data: the shard dataset and its loader, on tiny manifests written here."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from segprep.errors import SegprepError
from segprep.manifest import write_manifest
from segprep.shards import ShardWriter
from segtrain.data import NORMALIZATIONS, ShardDataset, make_loader, resolve_normalization
from segtrain.errors import SegtrainError


def _row(sample_id: str, split: str, shard: str, index: int, size: tuple[int, int],
         status: str = "ok") -> dict:
    return dict(sample_id=sample_id, source="t", split=split, group=sample_id, image_shard=shard,
                image_index=index, mask_shard=shard, mask_index=index, height=size[0],
                width=size[1], fg_fraction=0.5, status=status, issues="", parent_id="",
                image_path="", mask_path="")


def _image(i: int, size: tuple[int, int]) -> np.ndarray:
    # Each sample's pixels encode its number, so tests can tell samples apart.
    image = np.zeros((*size, 3), np.uint8)
    image[..., 0] = i
    image[..., 1] = np.arange(size[1], dtype=np.uint8)[None, :]
    image[..., 2] = 200
    return image


def _mask(i: int, size: tuple[int, int], scale: int = 1) -> np.ndarray:
    mask = np.zeros(size, np.uint8)
    mask[: size[0] // 2, : i % size[1] + 1] = scale
    return mask


def make_manifest(root: Path, *, sizes: list[tuple[int, int]], splits: list[str],
                  statuses: list[str] | None = None, fixed: bool = True, stage: str = "augment",
                  mask_scale: int = 1, roi_for: tuple[int, ...] = ()) -> Path:
    statuses = statuses or ["ok"] * len(sizes)
    shard = "shards/s-00000.h5"
    with ShardWriter(root / shard, stage, fixed_size=sizes[0] if fixed else None) as writer:
        for i, size in enumerate(sizes):
            roi = None
            if i in roi_for:
                roi = np.zeros(size, np.uint8)
                roi[1:-1, 1:-1] = 1
            writer.add(sample_id=f"t/{i}", image=_image(i, size), mask=_mask(i, size, mask_scale), roi=roi)
    rows = [_row(f"t/{i}", split, shard, i, size, status)
            for i, (size, split, status) in enumerate(zip(sizes, splits, statuses))]
    return write_manifest(pd.DataFrame(rows), root / "m.csv")


@pytest.fixture
def fixed_manifest(tmp_path: Path) -> Path:
    return make_manifest(tmp_path, sizes=[(16, 24)] * 6,
                         splits=["train", "train", "train", "train", "val", "test"],
                         statuses=["ok", "excluded", "repaired", "ok", "ok", "ok"], roi_for=(2,))


def test_item_types_shapes_and_values(fixed_manifest: Path) -> None:
    dataset = ShardDataset(fixed_manifest, "train", normalize="unit")
    assert len(dataset) == 3
    assert dataset.manifest_path == fixed_manifest
    assert list(dataset.rows["sample_id"]) == ["t/0", "t/2", "t/3"]  # t/1 is excluded
    item = dataset[1]
    assert item["sample_id"] == "t/2" and item["index"] == 1
    assert item["image"].dtype == torch.float32 and item["image"].shape == (3, 16, 24)
    assert item["image"].is_contiguous()
    assert item["mask"].dtype == torch.int64 and item["mask"].shape == (16, 24)
    assert item["roi"].dtype == torch.uint8 and item["roi"].shape == (16, 24)
    expected = torch.from_numpy(_image(2, (16, 24))).permute(2, 0, 1).float() / 255
    assert torch.allclose(item["image"], expected)
    assert torch.equal(item["mask"], torch.from_numpy(_mask(2, (16, 24)).astype(np.int64)))
    assert item["roi"].sum() == 14 * 22  # the stored ROI
    assert torch.all(dataset[0]["roi"] == 1)  # no ROI: all ones


def test_imagenet_and_custom_normalization(fixed_manifest: Path) -> None:
    pixel = torch.tensor([0.0, 0.0, 200.0]) / 255  # first pixel of t/0: (0, 0, 200)
    mean, std = (torch.tensor(NORMALIZATIONS["imagenet"][k]) for k in ("mean", "std"))
    image = ShardDataset(fixed_manifest, "train")[0]["image"]
    assert torch.allclose(image[:, 0, 0], (pixel - mean) / std, atol=1e-5)
    # The same normalisation in 0-255 units and in 0-1 units.
    a = resolve_normalization({"mean": [100, 110, 120], "std": [50, 50, 50]})
    b = resolve_normalization({"mean": [100 / 255, 110 / 255, 120 / 255], "std": [50 / 255] * 3})
    assert np.allclose(a[0], b[0]) and np.allclose(a[1], b[1])
    custom = ShardDataset(fixed_manifest, "val", normalize={"mean": 100, "std": 50})[0]["image"]
    assert torch.allclose(custom[:, 0, 0], torch.tensor([-1.92, -2.0, 2.0]))  # t/4: (4, 0, 200)
    with pytest.raises(SegtrainError, match="imagenet, unit"):
        ShardDataset(fixed_manifest, "train", normalize="zscore")


def test_split_filtering_and_empty_split(tmp_path: Path) -> None:
    manifest = make_manifest(tmp_path, sizes=[(8, 8)] * 3, splits=["train", "train", "val"],
                             statuses=["ok", "ok", "excluded"])
    assert len(ShardDataset(manifest, "train")) == 2
    with pytest.raises(SegtrainError) as info:
        ShardDataset(manifest, "val")  # its only row is excluded
    message = str(info.value)
    assert str(manifest) in message and "'val'" in message and "train (2)" in message
    with pytest.raises(SegtrainError, match="train, val, test"):
        ShardDataset(manifest, "training")


def test_raw_ingest_masks_are_mapped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    manifest = make_manifest(tmp_path, sizes=[(8, 12), (8, 12)], splits=["train", "train"],
                             fixed=False, stage="ingest", mask_scale=255)
    with caplog.at_level(logging.WARNING, logger="segtrain.data"):
        dataset = ShardDataset(manifest, "train")
    assert sum("raw grey values" in r.message for r in caplog.records) == 1
    mask = dataset[1]["mask"]
    assert set(mask.unique().tolist()) == {0, 1}
    assert torch.equal(mask, torch.from_numpy(_mask(1, (8, 12)).astype(np.int64)))


def test_variable_sizes_need_size(tmp_path: Path) -> None:
    manifest = make_manifest(tmp_path, sizes=[(8, 12), (10, 14), (8, 12)],
                             splits=["train"] * 3, fixed=False, roi_for=(1,))
    with pytest.raises(SegtrainError) as info:
        ShardDataset(manifest, "train")
    assert "--size" in str(info.value) and "segprep augment" in str(info.value)
    assert "8x12" in str(info.value) and "10x14" in str(info.value)
    dataset = ShardDataset(manifest, "train", size=(16, 16))
    for item in (dataset[0], dataset[1]):
        assert item["image"].shape == (3, 16, 16)
        assert item["mask"].shape == (16, 16) and item["roi"].shape == (16, 16)
        # Nearest resizing keeps labels labels.
        assert set(item["mask"].unique().tolist()) <= {0, 1}
        assert set(item["roi"].unique().tolist()) <= {0, 1}
    assert dataset[1]["roi"].min() == 0  # the stored ROI, resized
    batch = next(iter(make_loader(dataset, batch_size=3, shuffle=False, workers=0)))
    assert batch["image"].shape == (3, 3, 16, 16)


def test_resize_fixed_layout(fixed_manifest: Path) -> None:
    item = ShardDataset(fixed_manifest, "train", size=(32, 48))[0]
    assert item["image"].shape == (3, 32, 48) and item["mask"].shape == (32, 48)


def _all_items(loader) -> dict[str, tuple]:
    seen = {}
    for batch in loader:
        for k, sample_id in enumerate(batch["sample_id"]):
            seen[sample_id] = (batch["image"][k], batch["mask"][k], batch["roi"][k])
    return seen


def test_workers_return_same_samples(tmp_path: Path) -> None:
    manifest = make_manifest(tmp_path, sizes=[(16, 16)] * 10, splits=["train"] * 10, roi_for=(3,))
    dataset = ShardDataset(manifest, "train")
    # Workers=0 first: the parent now holds open handles, which the forked workers must not use.
    serial = _all_items(make_loader(dataset, batch_size=4, shuffle=False, workers=0))
    parallel = _all_items(make_loader(dataset, batch_size=4, shuffle=True, workers=2, seed=3))
    assert serial.keys() == parallel.keys() and len(serial) == 10
    for i, (sample_id, tensors) in enumerate(sorted(serial.items())):
        item = dataset[i]  # the per-item path gives what the batched path gives
        assert item["sample_id"] == sample_id
        for a, b, c in zip(tensors, parallel[sample_id], (item["image"], item["mask"], item["roi"])):
            assert torch.equal(a, b) and torch.equal(a, c)
    assert serial["t/3"][2].min() == 0 and serial["t/2"][2].min() == 1  # ROI only where stored


@pytest.mark.parametrize("device", [None, pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs CUDA"))])
def test_worker_ring_slots_are_never_overwritten_while_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            device: str | None) -> None:
    # Workers write batches into a ring of shared slots and reuse them (segtrain.data._BatchRing).
    # The main process reads each slot slowly here, so a worker that reused a slot too early
    # would overwrite the pixels while they are read; every batch must still equal the serial
    # loader's, over epochs, an abandoned epoch, a short last batch and mixed ROI batches.
    # On a GPU the slot is read by the DataLoader's pin-memory thread instead.
    manifest = make_manifest(tmp_path, sizes=[(16, 16)] * 23, splits=["train"] * 23, roi_for=(3, 17))
    dataset = ShardDataset(manifest, "train")

    def batches(loader, epoch: int, stop: int | None = None) -> list[dict]:
        loader.sampler.set_epoch(epoch)
        out = []
        for batch in loader:
            out.append(batch)
            if len(out) == stop:
                break
        return out

    serial = make_loader(dataset, batch_size=2, shuffle=True, workers=0, seed=1)
    expected = {epoch: batches(serial, epoch) for epoch in range(3)}
    import segtrain.data as data
    normalize = data._normalize_into

    pixels = data._RawCollated.pixels

    def slow(*args) -> None:
        time.sleep(0.003)
        normalize(*args)

    def slow_pixels(self):
        time.sleep(0.006)  # between finding the slot and copying out of it
        return pixels(self)

    monkeypatch.setattr(data, "_normalize_into", slow)
    monkeypatch.setattr(data._RawCollated, "pixels", slow_pixels)
    parallel = make_loader(dataset, batch_size=2, shuffle=True, workers=2, seed=1, device=device)
    assert parallel.ring is not None
    got = {0: batches(parallel, 0), 1: batches(parallel, 1, stop=3), 2: batches(parallel, 2)}
    assert len(got[0]) == len(got[2]) == 12 and len(got[1]) == 3
    for epoch, epoch_batches in got.items():
        for a, b in zip(expected[epoch], epoch_batches, strict=False):
            assert a["sample_id"] == b["sample_id"]
            for key in ("image", "mask", "roi"):
                assert torch.equal(a[key], b[key].cpu()), (epoch, a["sample_id"], key)
                assert b[key].device.type == (device or "cpu")


def test_gpu_loader_pins_batches_out_of_the_ring(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # On a GPU the DataLoader's pin-memory thread hands each collated batch to torch's
    # pin_memory helper; a ring batch must copy itself out of its slot there (so the slot is
    # free before the main thread sees the batch), not be walked as a mapping. The helper is
    # called here as that thread calls it; pinning itself needs CUDA, so a copy stands in.
    manifest = make_manifest(tmp_path, sizes=[(16, 16)] * 6, splits=["train"] * 6, roi_for=(2,))
    dataset = ShardDataset(manifest, "train")
    loader = make_loader(dataset, batch_size=3, shuffle=False, workers=2)
    expected = list(make_loader(dataset, batch_size=3, shuffle=False, workers=0))
    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda self, *args: self.clone())
    from torch.utils.data._utils.pin_memory import pin_memory
    import segtrain.data as data

    iterator = torch.utils.data.DataLoader.__iter__(loader)  # the raw batches, before finishing
    for want in expected:
        raw = next(iterator)
        assert isinstance(raw, data._RawCollated) and raw.raw["ring_slot"] is not None
        pinned = pin_memory(raw)
        assert pinned.raw["ring_slot"] is None
        # its slot may be reused now: the pinned batch owns its pixels
        loader.ring.get(raw.raw["ring_slot"], raw.raw["shape"]).fill_(7)
        got = data.finish_batch(pinned)
        for key in ("image", "mask", "roi"):
            assert torch.equal(want[key], got[key]), key


def test_ring_without_rois_has_no_roi_plane(tmp_path: Path) -> None:
    # No sample has an ROI: the ring holds RGB + mask per sample (4 planes), and the batches
    # that go through it still carry all-ones ROIs.
    manifest = make_manifest(tmp_path, sizes=[(16, 16)] * 7, splits=["train"] * 7)
    dataset = ShardDataset(manifest, "train")
    assert not dataset.has_roi
    serial = list(make_loader(dataset, batch_size=3, shuffle=False, workers=0))
    loader = make_loader(dataset, batch_size=3, shuffle=False, workers=2)
    assert loader.ring is not None and loader.ring.capacity == 3 * 16 * 16 * 4
    for a, b in zip(serial, loader, strict=True):
        for key in ("image", "mask", "roi"):
            assert torch.equal(a[key], b[key])
        assert b["roi"].min() == 1


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs CUDA"))])
@pytest.mark.parametrize("channels_last", [False, True])
def test_finishing_on_the_device_gives_the_same_batches(tmp_path: Path, device: str, channels_last: bool) -> None:
    # On a GPU the loader copies uint8 batches there and normalises there: the same values as
    # numpy in the main process. The CPU runs the same torch code (make_loader only picks it
    # for CUDA devices), so CI checks it without a GPU.
    manifest = make_manifest(tmp_path, sizes=[(16, 24)] * 6, splits=["train"] * 6, roi_for=(4,))
    dataset = ShardDataset(manifest, "train", normalize="imagenet")
    host = list(make_loader(dataset, batch_size=4, shuffle=False, workers=0))
    loader = make_loader(dataset, batch_size=4, shuffle=False, workers=0, device=device,
                         channels_last=channels_last)
    loader.finish_device = torch.device(device)  # what make_loader sets for a CUDA device
    on_device = list(loader)
    assert len(host) == len(on_device) == 2
    for a, b in zip(host, on_device):
        assert b["image"].device.type == device and b["mask"].device.type == device
        assert b["image"].dtype == torch.float32 and b["mask"].dtype == torch.int64 and b["roi"].dtype == torch.uint8
        assert b["image"].is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
        for key in ("image", "mask", "roi"):
            assert torch.equal(a[key], b[key].cpu()), key
        assert a["sample_id"] == b["sample_id"] and torch.equal(a["index"], b["index"])
    assert on_device[1]["roi"].min() == 0 and on_device[0]["roi"].min() == 1  # sample 4's ROI only
    # make_loader finishes on the device only for CUDA: on the CPU, numpy in this process.
    assert make_loader(dataset, batch_size=4, shuffle=False, workers=0, device="cpu").finish_device is None


def test_plain_dataloader_gets_ordinary_items(fixed_manifest: Path) -> None:
    # Without make_loader (default collate), batches still have the documented types.
    dataset = ShardDataset(fixed_manifest, "train")
    batch = next(iter(torch.utils.data.DataLoader(dataset, batch_size=2)))
    assert batch["image"].dtype == torch.float32 and batch["image"].shape == (2, 3, 16, 24)
    assert batch["mask"].dtype == torch.int64 and batch["roi"].dtype == torch.uint8
    assert batch["sample_id"] == ["t/0", "t/2"]
    assert torch.equal(batch["image"][1], dataset[1]["image"])
    # A Subset (the trainer's val share) goes through the batched path too.
    subset = torch.utils.data.Subset(dataset, [2, 0])
    batch = next(iter(make_loader(subset, batch_size=2, shuffle=False, workers=0)))
    assert batch["sample_id"] == ["t/3", "t/0"] and batch["index"].tolist() == [2, 0]
    assert torch.equal(batch["image"][0], dataset[2]["image"])
    assert batch["mask"].dtype == torch.int64 and batch["roi"].shape == (2, 16, 24)


def test_epoch_order_is_reproducible(fixed_manifest: Path) -> None:
    dataset = ShardDataset(fixed_manifest, "train")

    def order(loader) -> list[str]:
        return [sample_id for batch in loader for sample_id in batch["sample_id"]]

    loader = make_loader(dataset, batch_size=2, shuffle=True, workers=0, seed=5)
    epochs = [order(loader) for _ in range(4)]
    # A loader made for epoch 3 (a resumed run) sees what the 4th pass of the first one saw.
    assert order(make_loader(dataset, batch_size=2, shuffle=True, workers=0, seed=5, epoch=3)) == epochs[3]
    loader.sampler.set_epoch(1)
    assert order(loader) == epochs[1]
    assert len({tuple(e) for e in epochs}) > 1
    assert order(make_loader(dataset, batch_size=2, shuffle=False, workers=0)) == ["t/0", "t/2", "t/3"]


def test_truncated_shard_names_the_file(fixed_manifest: Path) -> None:
    shard = fixed_manifest.parent / "shards" / "s-00000.h5"
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2])
    with pytest.raises(SegprepError, match="s-00000.h5"):
        ShardDataset(fixed_manifest, "train")


def test_corrupt_chunk_names_the_file(tmp_path: Path) -> None:
    manifest = make_manifest(tmp_path, sizes=[(64, 64)] * 2, splits=["train"] * 2)
    dataset = ShardDataset(manifest, "train")
    shard = tmp_path / "shards" / "s-00000.h5"
    # Overwrite the first image chunk (lzf-compressed) in place: the file still opens.
    import h5py
    with h5py.File(shard, "r") as handle:
        offset = handle["images"].id.get_chunk_info(0).byte_offset
    with open(shard, "r+b") as f:
        f.seek(offset)
        f.write(b"\xff" * 64)
    with pytest.raises(SegprepError, match="s-00000.h5.*images\\[0\\]"):
        dataset[0]
