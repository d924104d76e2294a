"""The torch side of the shards: a ``Dataset`` over one split of a manifest, and its loader.

Reading goes through ``segprep.shards.open_shard`` (one read-only handle per file and per
process, dropped after a fork), so a dataset built in the parent can be handed to a
``DataLoader`` with workers: each worker opens the files it reads on its first item.

Speed (``benchmarks/loader_throughput.py``): a fixed-layout sample is one chunk read per array.
The DataLoader fetches a batch at a time (``ShardDataset.__getitems__``) and workers write it as
uint8 into a slot of a ring of shared buffers that ``make_loader`` allocates once
(``_BatchRing``); only the slot's number travels to the main process. ``make_loader``'s loader
normalises the batch there with numpy, or, when training on a GPU, copies it there as uint8 and
normalises it there. Compared with float tensors built per item and passed in new shared memory
per batch (what a plain DataLoader does), this costs a third of the CPU per sample.

Normalisation (``normalize=``):

* ``"imagenet"``: ImageNet mean/std (0.485, 0.456, 0.406) / (0.229, 0.224, 0.225).
* ``"unit"``: ``x / 255`` (mean 0, std 1 in 0-1 units).
* a dict ``{"mean": [r, g, b], "std": [r, g, b]}``: in 0-1 units when every value is <= 1,
  otherwise in 0-255 units (``{"mean": [123.7, 116.3, 103.5], "std": [58.4, 57.1, 57.4]}``).
  A single number is used for all three channels.
"""

from __future__ import annotations

import functools
import logging
import random
import uuid
import weakref
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler, Subset, get_worker_info
from torch.utils.data.dataloader import default_collate

from segprep.manifest import SPLITS, active, read_manifest
from segprep.shards import ShardReader, close_shards, load_sample, open_shard
from segtrain.errors import SegtrainError

log = logging.getLogger(__name__)

# Mean and std per RGB channel, in 0-1 units.
NORMALIZATIONS: dict[str, dict[str, tuple[float, float, float]]] = {
    "imagenet": {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)},
    "unit": {"mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0)},
}


def resolve_normalization(normalize: str | Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std as float32 arrays of 3 values in 0-255 units (what uint8 pixels are in)."""
    if isinstance(normalize, str):
        if normalize not in NORMALIZATIONS:
            raise SegtrainError(f"unknown normalize {normalize!r}; valid: {', '.join(NORMALIZATIONS)} "
                                f"or a dict with mean and std")
        spec: Mapping[str, Any] = NORMALIZATIONS[normalize]
    elif isinstance(normalize, Mapping):
        spec = normalize
    else:
        raise SegtrainError(f"normalize must be one of {', '.join(NORMALIZATIONS)} or a dict with "
                            f"mean and std; got {normalize!r}")
    if set(spec) != {"mean", "std"}:
        raise SegtrainError(f"normalize dict needs exactly the keys mean and std; got {sorted(spec)}")
    values = {}
    for key in ("mean", "std"):
        array = np.asarray(spec[key], dtype=np.float64).reshape(-1)
        if array.size == 1:
            array = np.repeat(array, 3)
        if array.size != 3 or not np.all(np.isfinite(array)):
            raise SegtrainError(f"normalize {key} must be 1 or 3 finite numbers; got {spec[key]!r}")
        values[key] = array
    if np.any(values["std"] <= 0):
        raise SegtrainError(f"normalize std must be > 0; got {spec['std']!r}")
    # Values all <= 1 can only be meant as 0-1 units (a 0-255 std of 1 would be absurd).
    scale = 255.0 if max(values["mean"].max(), values["std"].max()) <= 1.0 else 1.0
    return (values["mean"] * scale).astype(np.float32), (values["std"] * scale).astype(np.float32)


def _normalize_into(image: np.ndarray, out: np.ndarray, mean: np.ndarray, std: np.ndarray) -> None:
    """uint8 (H, W, 3) -> ``out`` float32 (3, H, W): ``(x - mean) * (1 / std)`` per channel.

    numpy, not torch: torch's intra-op thread pool makes these small element-wise ops several
    times slower when the cores are busy (and the main process has no worker limit). Plane by
    plane: cv2.split de-interleaves RGB in one SIMD pass (it starts no OpenCV threads) and each
    plane's two passes stay in cache; 1.5x faster than numpy over the transposed image, which
    reads with a stride of 3. The float32 operations are the same, so the result is too."""
    scale = 1.0 / std
    for c, plane in enumerate(cv2.split(np.ascontiguousarray(image))):
        np.subtract(plane, mean[c], out=out[c], dtype=np.float32)
        out[c] *= scale[c]


def image_to_tensor(image: np.ndarray, mean: np.ndarray, std: np.ndarray) -> torch.Tensor:
    """uint8 (H, W, 3) -> normalised float32 (3, H, W), contiguous. Shared with prediction."""
    out = np.empty((3, image.shape[0], image.shape[1]), dtype=np.float32)
    _normalize_into(image, out, mean, std)
    return torch.from_numpy(out)


def resize(array: np.ndarray, size: tuple[int, int], smooth: bool) -> np.ndarray:
    """To (H, W): images area-averaged when shrinking, linear when growing; masks and ROIs
    (``smooth=False``) nearest. The one resize of training, evaluation and prediction."""
    height, width = size
    if array.shape[:2] == (height, width):
        return array
    if smooth:
        shrinking = height <= array.shape[0] and width <= array.shape[1]
        interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    else:
        interpolation = cv2.INTER_NEAREST  # labels: never invent in-between classes
    return cv2.resize(array, (width, height), interpolation=interpolation)


class ShardDataset(Dataset):
    """The non-excluded rows of one split of a manifest, as tensors.

    An item is ``dict(image=float32 (3, H, W) normalised, mask=int64 (H, W) class indices,
    roi=uint8 (H, W) (all ones when the sample has none), sample_id=str, index=int)``.
    ``size=(H, W)`` resizes every sample (image area/linear, mask and ROI nearest); without it
    every sample of the split must already share one size.
    """

    def __init__(self, manifest: Path | str, split: str, *, size: tuple[int, int] | None = None,
                 normalize: str | Mapping[str, Any] = "imagenet") -> None:
        self.manifest_path = Path(manifest)
        self.split = split
        if split not in SPLITS:
            raise SegtrainError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
        self.mean, self.std = resolve_normalization(normalize)
        table = read_manifest(self.manifest_path)
        self.rows: pd.DataFrame = active(table, split).reset_index(drop=True)
        if self.rows.empty:
            counts = active(table)["split"].value_counts()
            present = ", ".join(f"{name} ({counts[name]})" for name in SPLITS if name in counts)
            raise SegtrainError(f"{self.manifest_path}: split {split!r} has no rows that are not "
                                f"excluded; splits with rows: {present or 'none'}")
        sizes = sorted(set(zip(self.rows["height"].tolist(), self.rows["width"].tolist())))
        if size is not None:
            size = (int(size[0]), int(size[1]))
            if min(size) < 1:
                raise SegtrainError(f"size must be two positive integers (H, W); got {size}")
        elif len(sizes) > 1:
            examples = ", ".join(f"{h}x{w}" for h, w in sizes[:4])
            raise SegtrainError(
                f"{self.manifest_path}: split {split!r} holds samples of {len(sizes)} different sizes "
                f"({examples}{', ...' if len(sizes) > 4 else ''}), which cannot be batched; pass "
                f"--size HxW (size=(H, W)) to resize them, or make a fixed-size manifest with "
                f"`segprep augment --size N`")
        self.size: tuple[int, int] = size if size is not None else sizes[0]
        self._resize = any(s != self.size for s in sizes)

        root = self.manifest_path.parent.resolve()
        # Plain lists: indexing a DataFrame per item would cost more than the shard read.
        self._ids: list[str] = self.rows["sample_id"].tolist()
        self._image_shards = [str(root / p) for p in self.rows["image_shard"].tolist()]
        self._image_index = [int(i) for i in self.rows["image_index"].tolist()]
        self._mask_shards = [str(root / p) for p in self.rows["mask_shard"].tolist()]
        self._mask_index = [int(i) for i in self.rows["mask_index"].tolist()]

        self._check_layout()
        # Ingest shards keep masks as raw grey values (0/255); training needs class indices.
        stages = {path: open_shard(Path(path)).attrs.get("stage") for path in set(self._mask_shards)}
        self.raw_masks = any(stage == "ingest" for stage in stages.values())
        if self.raw_masks:
            log.warning("%s: masks are raw grey values (ingest stage); mapping values > 127 to "
                        "class 1. Train from a clean or augment manifest instead.", self.manifest_path)
        self._warned_raw = self.raw_masks
        # Whether any sample can have an ROI (the shard holds some): batches then carry a 5th plane.
        self.has_roi = any("roi" in open_shard(Path(path)) for path in set(self._image_shards))
        # read_manifest opened every shard to check indices; drop those handles so that no
        # HDF5 file is open when a DataLoader forks its workers.
        close_shards()
        self._reader = ShardReader()   # one handle per file and process, looked up once
        log.info("%s: %s split, %d samples at %dx%d", self.manifest_path, split, len(self._ids),
                 *self.size)

    def _check_layout(self) -> None:
        """Every shard this split reads holds uint8 images (H, W, 3) and uint8 masks (H, W) of
        the manifest's sizes: a shard of another dtype (float64 images, say) would train on
        nonsense without a word. One read of metadata per shard (variable shards: their first
        sample of this split)."""
        heights, widths = self.rows["height"].tolist(), self.rows["width"].tolist()
        reader = ShardReader()
        checked: set[tuple[str, str]] = set()
        for column, shards, indices, name, ndim in (
                ("image", self._image_shards, self._image_index, "images", 3),
                ("mask", self._mask_shards, self._mask_index, "masks", 2)):
            for k, (path, index) in enumerate(zip(shards, indices)):
                if (path, name) in checked:
                    continue
                checked.add((path, name))
                spec = reader.spec(path, name, index)
                if spec is None:
                    raise SegtrainError(f"{path}: holds no {name} for index {index} ({self.manifest_path} "
                                        f"names it as the {column} of {self._ids[k]})")
                dtype, shape = spec
                fixed = reader.node(path, name, index)[1]
                wanted = (heights[k], widths[k], 3) if ndim == 3 else (heights[k], widths[k])
                if dtype != np.uint8 or len(shape) != ndim or (ndim == 3 and shape[2] != 3):
                    raise SegtrainError(
                        f"{path}: {name} are {dtype} {shape}, expected uint8 "
                        f"{'(H, W, 3)' if ndim == 3 else '(H, W)'}; this shard was not written by "
                        f"segprep or is corrupt (`segprep verify {self.manifest_path}` lists the rows)")
                if fixed and shape != wanted and "size_mismatch" not in self.rows["issues"].iloc[k]:
                    raise SegtrainError(f"{path}: {name} are {shape[0]}x{shape[1]}, "
                                        f"{self.manifest_path} says {wanted[0]}x{wanted[1]} for "
                                        f"{self._ids[k]}")

    def __len__(self) -> int:
        return len(self._ids)

    def _load(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Sample ``i`` as uint8 arrays at ``self.size``: image (H, W, 3), mask, ROI or None."""
        read = self._reader.read
        image = read(self._image_shards[i], "images", self._image_index[i])
        roi = read(self._image_shards[i], "roi", self._image_index[i], required=False)
        mask = read(self._mask_shards[i], "masks", self._mask_index[i])
        if self.raw_masks or mask.max() > 127:
            if not self._warned_raw:
                log.warning("%s: sample %s has mask values > 127 (raw 0/255 mask?); mapping "
                            "them to class 1", self.manifest_path, self._ids[i])
                self._warned_raw = True
            mask = (mask > 127).view(np.uint8)
        if roi is not None:
            # ingest stores a field of view as decoded (DRIVE's GIFs: 0/255); the loss and the
            # metrics weigh pixels by it, so it must be 0/1 on every path
            roi = (roi != 0).view(np.uint8)
        if self._resize:
            image = resize(image, self.size, smooth=True)
            mask = resize(mask, self.size, smooth=False)
            if roi is not None:
                roi = resize(roi, self.size, smooth=False)
        return image, mask, roi

    def __getitem__(self, i: int) -> dict[str, Any]:
        image, mask, roi = self._load(i)
        return {
            "image": image_to_tensor(image, self.mean, self.std),
            "mask": torch.from_numpy(mask.astype(np.int64)),
            "roi": torch.from_numpy(roi if roi is not None else np.ones(self.size, dtype=np.uint8)),
            "sample_id": self._ids[i],
            "index": i,
        }

    def __getitems__(self, indices: list[int]) -> "RawBatch":
        """A whole batch at once, as uint8 (the DataLoader calls this instead of ``__getitem__``).

        Why uint8: the batch goes from a worker to the main process through shared memory, and
        writing it there costs more than reading the sample. float32 images and int64 masks are
        2.6 MB per 352x352 sample, uint8 0.5 MB. The loader from ``make_loader`` turns the batch
        into the documented float32/int64 tensors in the main process (``finish_batch``); any
        other collate sees ordinary items.

        Why one array per batch (``data``: per sample the RGB pixels, the mask, the ROI if any
        sample has one): in a ``make_loader`` worker it is a slot of the loader's ring of shared
        buffers (``_BatchRing``), and only the slot's number is sent.
        """
        loaded = [self._load(i) for i in indices]
        has_roi = any(roi is not None for _, _, roi in loaded)  # else all ones, made in the main process
        height, width = self.size
        shape = (len(indices), height * width * (5 if has_roi else 4))
        worker = get_worker_info()
        slot = _worker_ring.take(worker.id, shape) if worker is not None and _worker_ring is not None else None
        if slot is not None:
            where, data = slot
        else:  # not in a make_loader worker: an ordinary tensor, pickled like any other
            where, data = None, torch.empty(shape, dtype=torch.uint8)
        images, masks, rois = _unpack(data.numpy(), self.size, has_roi)
        for k, (image, mask, roi) in enumerate(loaded):
            images[k] = image
            masks[k] = mask
            if rois is not None:
                rois[k] = 1 if roi is None else roi
        return RawBatch({"data": data, "ring_slot": where, "size": self.size, "has_roi": has_roi,
                         "ring": _worker_ring.token if where is not None else None,
                         "sample_id": [self._ids[i] for i in indices], "index": list(indices),
                         "mean": self.mean, "std": self.std})


class _BatchRing:
    """Shared uint8 buffers, ``slots`` per worker, allocated once per loader: workers write
    their batches there and send only ``(worker, slot)`` to the main process.

    Why: a plain DataLoader worker allocates new shared memory for every batch and passes its
    file descriptor; the main process then receives it over a connection to that worker, maps
    it, faults its pages in and unmaps it. On 2 cores that is ~0.4 ms of CPU per 352x352 sample,
    a third of what the shard loader costs in all (``benchmarks/loader_throughput.py``).

    Why a worker may reuse a slot: with ``in_order`` batches (the default) the DataLoader hands
    batch ``i`` to worker ``i % workers`` and keeps at most ``prefetch_factor`` batches in flight
    per worker. It sends a worker its next batch when the main process receives one of that
    worker's batches, before finishing it; the main process finishes (copies out of the slot)
    each batch before it asks for the next. So a worker's batch number ``k + prefetch_factor``
    can be in flight while ``k`` is being read, but not ``k + prefetch_factor + 1``: with
    ``prefetch_factor + 1`` slots used in turn, no worker overwrites a slot that is still read.
    Batches left unread when an iteration is abandoned are discarded by the DataLoader."""

    def __init__(self, workers: int, slots: int, capacity: int) -> None:
        self.slots = slots
        self.capacity = capacity
        storage = torch.UntypedStorage._new_shared(workers * slots * capacity)
        self.buffer = torch.empty(0, dtype=torch.uint8).set_(storage).view(workers, slots, capacity)
        self._taken = 0  # batches this process (a worker) has written; each worker has its copy
        # Batches name their ring by this token: the DataLoader's pin-memory thread, which reads
        # them first on a GPU, knows nothing of the loader (see _RawCollated.pin_memory).
        self.token = uuid.uuid4().hex
        _rings[self.token] = self

    def take(self, worker: int, shape: tuple[int, int]) -> tuple[tuple[int, int], torch.Tensor] | None:
        """The next slot of ``worker`` as a uint8 tensor of ``shape``, or None when it does not fit."""
        nbytes = shape[0] * shape[1]
        if nbytes > self.capacity or worker >= self.buffer.shape[0]:
            return None
        slot = self._taken % self.slots
        self._taken += 1
        return (worker, slot), self.buffer[worker, slot, :nbytes].view(shape)

    def get(self, where: tuple[int, int], shape: tuple[int, int]) -> torch.Tensor:
        """The batch a worker wrote into slot ``where`` (main process)."""
        worker, slot = where
        return self.buffer[worker, slot, :shape[0] * shape[1]].view(shape)


# The ring of the loader this process is a worker of (set by _init_worker), else None.
_worker_ring: _BatchRing | None = None
# The rings of this process's live loaders, by token.
_rings: weakref.WeakValueDictionary[str, _BatchRing] = weakref.WeakValueDictionary()


def _unpack(data: np.ndarray | torch.Tensor, size: tuple[int, int], has_roi: bool) -> tuple:
    """Views of a raw batch's ``data`` (N, H*W*4 or 5; a numpy array, or a tensor on any
    device): images (N, H, W, 3), masks (N, H, W), ROIs (N, H, W) or None. Each sample's arrays
    are contiguous. The one place that knows the layout of a raw batch."""
    height, width = size
    n, plane = data.shape[0], height * width

    def view(start: int, shape: tuple[int, ...]) -> np.ndarray | torch.Tensor:
        part = data[:, start:start + int(np.prod(shape))]
        if isinstance(part, torch.Tensor):
            return part.view(n, *shape)  # view() never copies (it raises instead)
        part = part.view()
        part.shape = (n, *shape)  # setting the shape never copies (it raises instead)
        return part

    return (view(0, (height, width, 3)), view(3 * plane, (height, width)),
            view(4 * plane, (height, width)) if has_roi else None)


class StoredSizeDataset(Dataset):
    """The rows of a ``ShardDataset`` at their stored size (no resize), for scoring test
    images against their untouched masks when training used ``--size``."""

    def __init__(self, dataset) -> None:
        self.rows = dataset.rows
        self.root = dataset.manifest_path.parent
        self.mean, self.std = dataset.mean, dataset.std

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, Any]:
        row = self.rows.iloc[i]
        sample = load_sample(self.root, row)
        mask = sample.mask if sample.mask.max() <= 127 else (sample.mask > 127).view(np.uint8)
        roi = (sample.roi != 0).view(np.uint8) if sample.roi is not None else np.ones(mask.shape, np.uint8)
        return {"image": image_to_tensor(sample.image, self.mean, self.std),
                "mask": torch.from_numpy(mask.astype(np.int64)), "roi": torch.from_numpy(roi),
                "sample_id": row["sample_id"], "index": i}


def stored_size(dataset) -> Dataset:
    """``dataset`` when it already serves every sample at its stored size, else a reader that does."""
    sizes = set(zip(dataset.rows["height"].tolist(), dataset.rows["width"].tolist()))
    return dataset if sizes == {tuple(dataset.size)} else StoredSizeDataset(dataset)


class RawBatch(list):
    """A batch as ``ShardDataset.__getitems__`` reads it: uint8 arrays in ``.raw``.

    As a list it holds the ordinary items (built on access), so ``default_collate`` or any
    other collate function still gets what ``__getitem__`` returns."""

    def __init__(self, raw: dict[str, Any]) -> None:
        super().__init__(range(len(raw["sample_id"])))
        self.raw = raw

    def _item(self, k: int) -> dict[str, Any]:
        raw = self.raw
        images, masks, rois = _unpack(raw["data"].numpy(), raw["size"], raw["has_roi"])
        return {"image": image_to_tensor(images[k], raw["mean"], raw["std"]),
                "mask": torch.from_numpy(masks[k].astype(np.int64)),
                "roi": torch.from_numpy(rois[k].copy() if rois is not None else np.ones(raw["size"], np.uint8)),
                "sample_id": raw["sample_id"][k], "index": int(raw["index"][k])}

    def __getitem__(self, k):  # type: ignore[override]
        if isinstance(k, slice):
            return [self._item(j) for j in range(len(self))[k]]
        return self._item(range(len(self))[k])

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return (self._item(k) for k in range(len(self)))


class _RawCollated:
    """A collated uint8 batch on its way to the main process (see ``finish_batch``): ``raw``
    as ``ShardDataset.__getitems__`` made it, its pixels in ``raw["data"]`` or in a ring slot.

    Not a dict: the DataLoader's pin-memory thread must call ``pin_memory`` below, and some torch
    versions walk a mapping's values before they look for that method."""

    def __init__(self, raw: dict[str, Any]) -> None:
        self.raw = raw

    def pixels(self) -> torch.Tensor:
        """The uint8 (N, H*W*planes) batch: a view of the ring slot it was written into, if any."""
        raw = self.raw
        if raw["ring_slot"] is None:
            return raw["data"]
        ring = _rings.get(raw["ring"])
        if ring is None:
            raise SegtrainError("a batch written into a loader's ring reached a process without that loader")
        return ring.get(raw["ring_slot"], raw["shape"])

    def pin_memory(self, device: Any = None) -> "_RawCollated":
        """The DataLoader's pin-memory thread (a GPU loader) calls this: the pixels are copied out
        of the ring into page-locked memory there, off the training loop's thread, and the copy to
        the GPU can then be asynchronous. The ring slot is free once this returns, before the
        main thread receives the batch, so the ring's argument holds (see ``_BatchRing``)."""
        return _RawCollated({**self.raw, "data": self.pixels().pin_memory(), "ring_slot": None, "ring": None})


def collate(data: list[dict[str, Any]]) -> dict[str, Any]:
    """``default_collate``, except that a ``RawBatch`` is passed on as it is (still uint8)."""
    if isinstance(data, RawBatch):
        raw = dict(data.raw)
        if raw["ring_slot"] is not None:
            # The pixels stay in the ring; pickling the view would share its memory anew.
            raw["shape"] = tuple(raw.pop("data").shape)
        return _RawCollated(raw)
    return default_collate(data)


def finish_batch(batch: Any, pin_memory: bool = False, device: torch.device | None = None,
                 channels_last: bool = False) -> dict[str, Any]:
    """uint8 batch -> ``image`` float32 (N, 3, H, W) normalised, ``mask`` int64, ``roi`` uint8.

    Without ``device``: in this process with numpy (see ``_normalize_into``). With ``device``
    (a GPU), the uint8 batch is copied there as it is and cast and normalised there
    (``_finish_on_device``). The values are the same either way (the same float32 operations)."""
    if not isinstance(batch, _RawCollated):
        return batch
    data, batch = batch.pixels(), batch.raw
    if device is not None:
        return _finish_on_device(data, batch, device, channels_last)
    images, masks, rois = _unpack(data.numpy(), batch["size"], batch["has_roi"])
    n, (height, width) = len(images), batch["size"]
    image = torch.empty((n, 3, height, width), dtype=torch.float32, pin_memory=pin_memory)
    mask = torch.empty((n, height, width), dtype=torch.int64, pin_memory=pin_memory)
    roi = torch.empty((n, height, width), dtype=torch.uint8, pin_memory=pin_memory)
    out = image.numpy()
    for k in range(n):  # per sample: the same operations as image_to_tensor, cache-sized
        _normalize_into(images[k], out[k], batch["mean"], batch["std"])
    mask.numpy()[...] = masks
    roi.numpy()[...] = 1 if rois is None else rois
    return {"image": image, "mask": mask, "roi": roi, "sample_id": batch["sample_id"],
            "index": torch.tensor(batch["index"], dtype=torch.int64)}


@functools.lru_cache(maxsize=8)
def _normalization_on(device: torch.device, mean: tuple[float, ...], std: tuple[float, ...]
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """mean and 1/std as (1, 3, 1, 1) float32 tensors on ``device``, made once: creating them
    from host memory every batch would be a synchronous copy (see ``_finish_on_device``)."""
    mean_t = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    scale_t = (1.0 / torch.tensor(std, dtype=torch.float32)).view(1, 3, 1, 1)  # as _normalize_into
    return mean_t.to(device), scale_t.to(device)


def _finish_on_device(data: torch.Tensor, batch: dict[str, Any], device: torch.device, channels_last: bool
                      ) -> dict[str, Any]:
    """``finish_batch`` on ``device``: one uint8 copy (0.5 MB per 352x352 sample, a fifth of the
    float32/int64 tensors), then the cast and normalisation as a few GPU kernels.

    Why: on a GPU the main process is the loader's bottleneck otherwise. Normalising a
    352x352 sample with numpy costs it ~0.5 ms, so a model training at 350 images/s waited
    for data ~20% of each step (H100, benchmarks/README.md). The channels-last layout comes
    for free: the stored pixels already are (N, H, W, 3)."""
    if device.type == "cuda" and not data.is_pinned():
        # Through pinned memory, asynchronously: a copy from pageable memory waits until the GPU
        # has finished every queued kernel (the previous step), and the GPU then idles while
        # this process copies and launches the next step. pin_memory() draws from torch's caching
        # host allocator, which keeps the block until the copy is done. (With workers, the
        # DataLoader's pin-memory thread has done this already: _RawCollated.pin_memory.)
        data = data.pin_memory()
    images, masks, rois = _unpack(data.to(device, non_blocking=True), batch["size"], batch["has_roi"])
    n, (height, width) = len(images), batch["size"]
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    image = torch.empty((n, 3, height, width), dtype=torch.float32, device=device, memory_format=memory_format)
    image.copy_(images.permute(0, 3, 1, 2))
    mean, scale = _normalization_on(device, tuple(map(float, batch["mean"])), tuple(map(float, batch["std"])))
    image.sub_(mean).mul_(scale)
    mask = masks.long()
    if rois is not None:
        roi = rois.contiguous()
    else:
        roi = torch.ones((n, height, width), dtype=torch.uint8, device=device)
    return {"image": image, "mask": mask, "roi": roi, "sample_id": batch["sample_id"],
            "index": torch.tensor(batch["index"], dtype=torch.int64)}


class ShardLoader(DataLoader):
    """A DataLoader whose ``ShardDataset`` batches are finished (normalised, cast) in the main
    process, into pinned memory when ``pin_finished`` (pinning the uint8 batch would be wasted),
    or on ``finish_device`` when one is given (its batches then arrive on that device)."""

    def __init__(self, *args: Any, pin_finished: bool = False, finish_device: torch.device | None = None,
                 channels_last: bool = False, ring: _BatchRing | None = None, **kwargs: Any) -> None:
        # ring: held here so that it lives as long as the loader (_rings holds it weakly)
        super().__init__(*args, **kwargs)
        self.pin_finished = pin_finished
        self.finish_device = finish_device
        self.channels_last = channels_last
        self.ring = ring

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for batch in super().__iter__():
            yield finish_batch(batch, pin_memory=self.pin_finished, device=self.finish_device,
                               channels_last=self.channels_last)


class EpochSampler(Sampler[int]):
    """Order of one epoch = a function of (seed, epoch) only, so a resumed run sees the same
    batches as an uninterrupted one. ``set_epoch`` as for ``DistributedSampler``; without it
    the epoch advances by one per pass, which gives the same orders."""

    def __init__(self, length: int, *, shuffle: bool, seed: int = 0, epoch: int = 0) -> None:
        self.length = length
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = epoch

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[int]:
        epoch = self.epoch
        self.epoch += 1
        if not self.shuffle:
            return iter(range(self.length))
        generator = torch.Generator()
        generator.manual_seed(self.seed + epoch)
        return iter(torch.randperm(self.length, generator=generator).tolist())


def _seed_worker(worker_id: int) -> None:
    # torch seeds each worker from the loader's generator; numpy and random follow it.
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)
    # Never cv2.setNumThreads() here: reconfiguring OpenCV's thread pool in a forked child
    # whose parent already used it deadlocks.


def _init_worker(ring: _BatchRing | None, worker_id: int) -> None:
    global _worker_ring
    _worker_ring = ring
    _seed_worker(worker_id)


def make_loader(dataset: Dataset, *, batch_size: int, shuffle: bool, workers: int, seed: int = 0,
                drop_last: bool = False, distributed: bool = False, pin_memory: bool | None = None,
                epoch: int = 0, device: torch.device | str | None = None, channels_last: bool = False
                ) -> DataLoader:
    """A DataLoader whose order for a given epoch depends only on ``seed + epoch``.

    Batches are dicts of ``image`` float32 (N, 3, H, W), ``mask`` int64 (N, H, W), ``roi``
    uint8 (N, H, W), ``sample_id`` list of str, ``index`` int64 (N,). A ``ShardDataset`` is
    read a batch at a time and sent from the workers as uint8 (see ``__getitems__``).

    With workers, a ``ShardDataset``'s batches travel through a ring of shared buffers
    allocated here (``_BatchRing``: workers x 3 slots of batch_size x H x W x 4 bytes, x 5 when
    the split has ROIs).

    With a CUDA ``device``, a ``ShardDataset``'s batches are finished on it (image, mask and
    ROI arrive on the GPU, the image channels-last when ``channels_last``); moving them there
    again is a no-op. On the way, the DataLoader's pin-memory thread copies each batch out of
    the ring into page-locked memory (up to workers x 2 batches of it, reused through torch's
    caching host allocator). Other devices and datasets: batches stay on the CPU.

    ``loader.sampler.set_epoch(e)`` works in both modes (an ``EpochSampler``, or a
    ``DistributedSampler`` when ``distributed``). Workers persist across epochs.
    """
    if batch_size < 1:
        raise SegtrainError(f"batch_size must be >= 1; got {batch_size}")
    if workers < 0:
        raise SegtrainError(f"workers must be >= 0; got {workers}")
    if pin_memory is None:
        pin_memory = torch.cuda.is_available()
    if distributed:
        sampler: Sampler[int] = DistributedSampler(dataset, shuffle=shuffle, seed=seed, drop_last=drop_last)
        sampler.set_epoch(epoch)
    else:
        sampler = EpochSampler(len(dataset), shuffle=shuffle, seed=seed, epoch=epoch)
    generator = torch.Generator()
    generator.manual_seed(seed + epoch)
    if workers > 0:
        close_shards()  # nothing open when the workers fork
    inner = dataset
    while isinstance(inner, Subset):  # Subset passes __getitems__ through to its dataset
        inner = inner.dataset
    batched = isinstance(inner, ShardDataset)  # uint8 batches, finished in this process
    device = torch.device(device) if device is not None else None
    on_device = batched and device is not None and device.type == "cuda"
    prefetch = 2  # the DataLoader's default, named because the ring's size depends on it
    ring = None
    if batched and workers > 0:
        height, width = inner.size
        planes = 5 if inner.has_roi else 4  # RGB, mask, ROI
        ring = _BatchRing(workers, prefetch + 1, batch_size * height * width * planes)
    return ShardLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                       collate_fn=collate, ring=ring,
                       worker_init_fn=functools.partial(_init_worker, ring) if workers > 0 else None,
                       # in_order stays True (its default; torch < 2.6 has no such option): the
                       # ring's slot reuse depends on batches arriving in order.
                       prefetch_factor=prefetch if workers > 0 else None,
                       generator=generator, persistent_workers=workers > 0,
                       # a GPU loader pins raw batches in the DataLoader's pin-memory thread (the
                       # copy out of the ring, off this thread); a CPU-finishing one pins its output
                       pin_memory=pin_memory and (on_device or not batched),
                       pin_finished=pin_memory and batched and not on_device,
                       finish_device=device if on_device else None, channels_last=channels_last,
                       drop_last=drop_last)
