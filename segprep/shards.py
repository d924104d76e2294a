"""HDF5 shards: the immutable sample store every stage writes and reads.

Two layouts, both with root attributes ``format="segprep-shard"``, ``version``, ``stage``,
``layout`` and ``n`` (number of samples), and an ``ids`` dataset of sample ids:

* ``variable`` (ingest, clean): one dataset per sample at native size,
  ``images/0000000`` ``(H, W, 3)``, ``masks/0000000`` ``(H, W)``, ``roi/0000000`` ``(H, W)``.
  Since version 2 such a dataset may instead be 1-D: the bytes of the source file (an 8-bit
  JPEG or PNG, see :func:`segprep.imageio.keepable`); reading decodes them with the function ingest decoded the file with
  (:func:`~segprep.imageio.decode_image` for images, :func:`~segprep.imageio.decode_mask` for
  masks and ROIs), so the pixels are those the manifest's checksums describe. Version-1 shards
  (pixels only) read as before.
* ``fixed`` (augment): ``images (N, H, W, 3)``, ``masks (N, H, W)`` and optionally
  ``roi (N, H, W)``, one chunk per sample so a training read is one chunk. With an image codec
  (``png``, ``jpeg:Q``; root attribute ``image_codec``), ``images`` is instead ``(N,)`` of
  variable-length uint8: each sample's encoded image, decoded on read.

A shard may hold only masks (clean writes new masks and leaves images in the ingest shards).
A shard is written under ``<name>.tmp`` and renamed when complete, so a file with the final
name is always whole. Readers open each file lazily, once per process: a handle opened
before a DataLoader forks is never reused in the child.
"""

from __future__ import annotations

import logging
import os
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import h5py
import numpy as np

from segprep.errors import DecodeError, ShardError
from segprep.imageio import decode_image, decode_mask, stored_size

log = logging.getLogger(__name__)

SHARD_FORMAT = "segprep-shard"
SHARD_VERSION = 2          # 2: variable-layout samples may be kept as their source file's bytes
COMPRESSIONS = ("lzf", "gzip", "none")
_GROW = 32  # fixed-layout rows are written in blocks of this many samples


IMAGE_CODECS = ("raw", "png", "jpeg:Q")   # Q: JPEG quality 1-100


def parse_image_codec(text: str) -> str:
    """The canonical name of an image codec (``raw``, ``png``, ``jpeg:Q``; ``jpeg`` = ``jpeg:90``),
    or a ShardError listing the valid ones."""
    text = str(text).strip().lower()
    if text in ("raw", "png"):
        return text
    if text == "jpeg":
        return "jpeg:90"
    if text.startswith("jpeg:") and text[5:].isdigit() and 1 <= int(text[5:]) <= 100:
        return f"jpeg:{int(text[5:])}"
    raise ShardError(f"unknown image codec {text!r}; valid: raw, png, jpeg:Q with Q a JPEG "
                     f"quality of 1-100 (jpeg = jpeg:90)")


def encode_image(image: np.ndarray, codec: str) -> bytes:
    """An RGB uint8 image's bytes under ``codec`` (``png`` or ``jpeg:Q``), as a fixed shard
    keeps it. PNG at level 1: Kvasir-SEG's photographs barely shrink at higher levels, and
    encoding takes 3x longer."""
    bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    if codec == "png":
        ok, data = cv2.imencode(".png", bgr, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    elif codec.startswith("jpeg:"):
        ok, data = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(codec[5:])])
    else:
        raise ShardError(f"cannot encode with image codec {codec!r}")
    if not ok:
        raise ShardError(f"OpenCV could not encode an image of shape {image.shape} as {codec}")
    return data.tobytes()


def decode_stored_image(data: np.ndarray | bytes) -> np.ndarray | None:
    """An image stored by :func:`encode_image` as RGB uint8, or None when it does not decode."""
    buffer = np.frombuffer(data, np.uint8) if isinstance(data, bytes) else data
    if _RGB_FLAG is not None:
        return cv2.imdecode(buffer, _RGB_FLAG)
    bgr = cv2.imdecode(buffer, cv2.IMREAD_COLOR)
    return None if bgr is None else cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


_RGB_FLAG = (cv2.IMREAD_COLOR_RGB | cv2.IMREAD_IGNORE_ORIENTATION
             if hasattr(cv2, "IMREAD_COLOR_RGB") else None)


BINARIZE_THRESHOLD = 128  # raw 0/255 grey masks (as ingest stores them): foreground from mid-grey


def binary_mask(mask: np.ndarray) -> tuple[np.ndarray, bool]:
    """A stored mask as 0/1 foreground, and whether it had to be binarized: ingest keeps a mask's
    grey values as decoded (0/255, JPEG noise), binarized here at BINARIZE_THRESHOLD; from clean
    on, masks are class indices 0/1 and pass as they are."""
    if mask.size and int(mask.max()) > 1:
        return (mask >= BINARIZE_THRESHOLD).astype(np.uint8), True
    return mask, False


def _key(index: int) -> str:
    return f"{index:07d}"


def _compression_args(compression: str | None) -> dict:
    """h5py arguments for a compression name: ``COMPRESSIONS`` (``gzip`` is level 4), or
    ``gzip-N`` for a gzip level N of 1-9 (``gzip-1`` decodes a 0/1 mask ~2x faster than lzf
    and stores it smaller)."""
    if compression in (None, "none"):
        return {}
    if compression == "lzf":
        return {"compression": "lzf"}
    if compression == "gzip":
        return {"compression": "gzip", "compression_opts": 4}
    if (isinstance(compression, str) and compression.startswith("gzip-")
            and compression[5:] in tuple("123456789")):
        return {"compression": "gzip", "compression_opts": int(compression[5:])}
    raise ShardError(f"unknown shard compression {compression!r}; valid: {', '.join(COMPRESSIONS)} "
                     f"or gzip-1 ... gzip-9")


def _chunk_encoder(args: dict) -> Callable[[np.ndarray], Any] | None:
    """The bytes HDF5 would store for one chunk under these h5py compression arguments, or None
    where only HDF5 can make them (lzf). HDF5's deflate filter is a zlib stream of the chunk."""
    if not args:
        return lambda array: array
    if args.get("compression") == "gzip" and set(args) <= {"compression", "compression_opts"}:
        level = int(args.get("compression_opts", 4))
        return lambda array: zlib.compress(array, level)
    return None


class ShardWriter:
    """Write one shard. Use as a context manager: the file appears under its final name only
    when the block ends without an exception.

    ``fixed_size=(H, W)`` selects the fixed layout; otherwise samples keep their own size.
    ``compression`` is one name for every array, or a mapping from array name (``images``,
    ``masks``, ``roi``) to a name, missing names meaning lzf. ``image_codec`` (fixed layout):
    ``raw`` stores pixels; ``png`` or ``jpeg:Q`` stores each image encoded (:func:`encode_image`).
    """

    def __init__(self, path: Path, stage: str, *, fixed_size: tuple[int, int] | None = None,
                 compression: str | None | Mapping[str, str | None] = "lzf",
                 image_codec: str = "raw"):
        self.path = Path(path)
        self.tmp_path = self.path.with_name(self.path.name + ".tmp")
        self.stage = stage
        self.fixed_size = tuple(fixed_size) if fixed_size is not None else None
        if isinstance(compression, Mapping):
            self._compression = {name: _compression_args(compression.get(name, "lzf"))
                                 for name in ("images", "masks", "roi")}
        else:
            self._compression = dict.fromkeys(("images", "masks", "roi"),
                                              _compression_args(compression))
        self._encoders = {name: _chunk_encoder(args) for name, args in self._compression.items()}
        self.image_codec = parse_image_codec(image_codec)
        if self.image_codec != "raw" and fixed_size is None:
            raise ShardError(f"{self.path}: an image codec needs the fixed layout "
                             f"(variable shards keep source files as they are)")
        self._ids: list[str] = []
        self._pending: list[dict[str, np.ndarray]] = []  # fixed layout: rows not yet written
        self._written = 0
        self._groups: dict[str, h5py.Group] = {}  # variable layout: images/, masks/, roi/
        self._templates: dict[str, tuple] = {}     # ... and their datasets' creation properties
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = h5py.File(self.tmp_path, "w")
        self._file.attrs.update(format=SHARD_FORMAT, version=SHARD_VERSION, stage=stage,
                                layout="fixed" if self.fixed_size else "variable")
        if self.fixed_size:
            self._file.attrs["size"] = self.fixed_size
        if self.image_codec != "raw":
            self._file.attrs["image_codec"] = self.image_codec

    def __len__(self) -> int:
        return len(self._ids)

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def add(self, *, sample_id: str, image: np.ndarray | None = None,
            mask: np.ndarray | None = None, roi: np.ndarray | None = None,
            files: Mapping[str, bytes] | None = None) -> int:
        """Store one sample's arrays; returns its index in this shard. ``files`` (variable
        layout): for some of ``images``, ``masks``, ``roi``, the source file's bytes to keep
        instead of the array, which the caller has decoded from exactly these bytes. Fixed
        layout with an image codec: ``files["images"]`` may give the image already encoded
        (otherwise it is encoded here)."""
        index = len(self._ids)
        if files and self.fixed_size and (set(files) != {"images"} or self.image_codec == "raw"):
            raise ShardError(f"{self.path}: a fixed-size shard stores pixels, not files"
                             f"{'' if self.image_codec == 'raw' else ', except its encoded images'}")
        arrays = {}
        for name, array, ndim in (("images", image, 3), ("masks", mask, 2), ("roi", roi, 2)):
            if array is None:
                continue
            array = np.ascontiguousarray(array)
            if array.dtype != np.uint8 or array.ndim != ndim or (ndim == 3 and array.shape[2] != 3):
                raise ShardError(f"{sample_id}: {name} must be uint8 with {ndim} dims"
                                 f"{' (H, W, 3)' if ndim == 3 else ''}; got {array.dtype} {array.shape}")
            if self.fixed_size and array.shape[:2] != self.fixed_size:
                raise ShardError(f"{sample_id}: {name} is {array.shape[:2]}, shard is fixed at "
                                 f"{self.fixed_size}")
            arrays[name] = array
        if self.fixed_size:
            if self.image_codec != "raw" and "images" in arrays:
                encoded = (files or {}).get("images")
                arrays["images"] = np.frombuffer(
                    encoded if encoded is not None else encode_image(arrays["images"], self.image_codec),
                    np.uint8)
            self._pending.append(arrays)
            if len(self._pending) >= _GROW:
                self._flush()
        else:
            for name, array in arrays.items():
                if files and name in files:
                    self._store_file(name, index, files[name])
                else:
                    self._store(name, index, array)
        self._ids.append(sample_id)
        return index

    def _store(self, name: str, index: int, array: np.ndarray) -> None:
        """A variable-layout array as the single-chunk dataset ``name/<index>``."""
        group = self._groups.get(name)
        if group is None:
            group = self._groups[name] = self._file.require_group(name)
        template = self._templates.get(name)
        if template is None:
            # The first array of a kind goes through h5py, which sets up its creation properties
            # (filters, no timestamps); later ones reuse them with their own chunk shape: h5py's
            # per-call work is twice HDF5's own for a dataset this simple.
            dsid = group.create_dataset(_key(index), shape=array.shape, dtype=array.dtype,
                                        chunks=array.shape, **self._compression[name]).id
            self._templates[name] = (dsid.get_create_plist(), dsid.get_type())
        else:
            dcpl, type_id = template[0].copy(), template[1]
            dcpl.set_chunk(array.shape)
            dsid = h5py.h5d.create(group.id, _key(index).encode(), type_id,
                                   h5py.h5s.create_simple(array.shape), dcpl=dcpl)
        encode = self._encoders[name]
        if encode is None:  # lzf: only HDF5 has the codec
            dsid.write(h5py.h5s.ALL, h5py.h5s.ALL, array)
        else:
            # The chunk's bytes, made here and handed to HDF5 directly instead of being copied
            # through the chunk cache first.
            dsid.write_direct_chunk((0,) * array.ndim, encode(array))

    def _store_file(self, name: str, index: int, data: bytes) -> None:
        """A source file's bytes as the 1-D dataset ``name/<index>``, contiguous and
        uncompressed (they are compressed already). Through HDF5's own calls: h5py's
        create_dataset costs 4x as much, more than the write itself."""
        group = self._groups.get(name)
        if group is None:
            group = self._groups[name] = self._file.require_group(name)
        buffer = np.frombuffer(data, np.uint8)
        dsid = h5py.h5d.create(group.id, _key(index).encode(), h5py.h5t.NATIVE_UINT8,
                               h5py.h5s.create_simple((len(buffer),)))
        dsid.write(h5py.h5s.ALL, h5py.h5s.ALL, buffer)

    def _flush(self) -> None:
        """Write the pending fixed-size rows with one call per array: h5py's per-call cost
        is several times the cost of copying one 352x352 chunk."""
        if not self._pending:
            return
        start, stop = self._written, self._written + len(self._pending)
        for name in ("images", "masks", "roi"):
            given = [row.get(name) for row in self._pending]
            if all(array is None for array in given) and name not in self._file:
                continue
            if name == "roi":  # samples without an ROI get an all-ones one
                given = [np.ones(self.fixed_size, np.uint8) if array is None else array
                         for array in given]
            elif any(array is None for array in given) or (start and name not in self._file):
                raise ShardError(f"{self.path}: every sample of a fixed-size shard needs {name}")
            if name == "images" and self.image_codec != "raw":
                self._flush_encoded(given, start, stop)
                continue
            if name not in self._file:
                shape = given[0].shape
                dataset = self._file.create_dataset(
                    name, shape=(start, *shape), maxshape=(None, *shape), chunks=(1, *shape),
                    dtype=np.uint8, **self._compression[name])
                if start:  # samples written before the first ROI have none
                    dataset[:start] = 1
            dataset = self._file[name]
            dataset.resize(stop, axis=0)
            encode = self._encoders[name]
            if encode is None:  # lzf: only HDF5 has the codec
                dataset[start:stop] = np.stack(given)
                continue
            # One chunk per sample, encoded here and handed to HDF5 as it is: no stacked copy of
            # the block and no pass through the chunk cache (~0.3 ms less per 352x352 sample).
            dsid, tail = dataset.id, (0,) * given[0].ndim
            for k, array in enumerate(given):
                dsid.write_direct_chunk((start + k, *tail), encode(array))
        self._written = stop
        self._pending = []

    def _flush_encoded(self, given: list[np.ndarray], start: int, stop: int) -> None:
        """Encoded images as rows of a variable-length uint8 dataset (N,)."""
        if "images" not in self._file:
            self._file.create_dataset("images", shape=(0,), maxshape=(None,), chunks=(64,),
                                      dtype=h5py.vlen_dtype(np.uint8))
        dataset = self._file["images"]
        dataset.resize(stop, axis=0)
        rows = np.empty(len(given), dtype=object)
        for k, data in enumerate(given):  # one by one: equal lengths would make a 2-D array
            rows[k] = data
        dataset[start:stop] = rows

    def close(self) -> Path:
        """Finish the file and give it its final name."""
        if self._file is None:
            return self.path
        n = len(self._ids)
        if self.fixed_size:
            self._flush()
        self._file.create_dataset("ids", data=np.array(self._ids, dtype=object),
                                  dtype=h5py.string_dtype())
        self._file.attrs["n"] = n
        self._file.close()
        self._file = None
        os.replace(self.tmp_path, self.path)
        log.debug("wrote %s (%d samples)", self.path, n)
        return self.path

    def abort(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        self.tmp_path.unlink(missing_ok=True)


class ShardSequence:
    """Roll samples over a numbered series of shards: ``<prefix>-00000.h5``, ``<prefix>-00001.h5``...

    ``add`` returns the shard's file name (relative to ``directory``) and the sample's index.
    """

    def __init__(self, directory: Path, prefix: str, stage: str, *, max_samples: int = 500,
                 start: int = 0, **writer_kwargs):
        self.directory = Path(directory)
        self.prefix = prefix
        self.stage = stage
        self.max_samples = max_samples
        self.next_number = start
        self.writer_kwargs = writer_kwargs
        self.written: list[Path] = []
        self._writer: ShardWriter | None = None

    def name(self, number: int) -> str:
        return f"{self.prefix}-{number:05d}.h5"

    def add(self, *, sample_id: str, **arrays: np.ndarray | None) -> tuple[str, int]:
        if self._writer is None:
            self._writer = ShardWriter(self.directory / self.name(self.next_number), self.stage,
                                       **self.writer_kwargs)
            self.next_number += 1
        index = self._writer.add(sample_id=sample_id, **arrays)
        name = self._writer.path.name
        if len(self._writer) >= self.max_samples:
            self.written.append(self._writer.close())
            self._writer = None
        return name, index

    def close(self) -> list[Path]:
        if self._writer is not None:
            self.written.append(self._writer.close())
            self._writer = None
        return self.written

    def abort(self) -> None:
        if self._writer is not None:
            self._writer.abort()
            self._writer = None

    def __enter__(self) -> "ShardSequence":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


# ----------------------------------------------------------------------------- reading

_handles: dict[str, h5py.File] = {}
_handles_pid: int | None = None


def open_shard(path: Path) -> h5py.File:
    """The process's read-only handle on a shard, opened on first use."""
    global _handles_pid
    if _handles_pid != os.getpid():
        # Inherited through fork: HDF5 handles must not be shared between processes.
        _handles.clear()
        _handles_pid = os.getpid()
    key = str(Path(path).resolve())
    handle = _handles.get(key)
    if handle is None:
        if not os.path.exists(key):
            raise ShardError(f"{path}: shard not found")
        try:
            handle = h5py.File(key, "r")
        except OSError as exc:
            raise ShardError(f"{path}: not a readable HDF5 file (truncated or corrupt: {exc})") from None
        if handle.attrs.get("format") != SHARD_FORMAT:
            handle.close()
            raise ShardError(f"{path}: not a segprep shard (format attribute missing)")
        version = int(handle.attrs.get("version", 0))
        if version > SHARD_VERSION:
            handle.close()
            raise ShardError(f"{path}: shard format version {version} is newer than this segprep "
                             f"reads ({SHARD_VERSION}); upgrade segkit, or re-run the stage that "
                             f"wrote it with --force")
        _handles[key] = handle
    return handle


def close_shards() -> None:
    """Close every handle this process holds (before a fork, or to free files on Windows)."""
    for handle in _handles.values():
        handle.close()
    _handles.clear()


def shard_info(path: Path) -> dict:
    handle = open_shard(path)
    return {key: (value.tolist() if hasattr(value, "tolist") else value)
            for key, value in handle.attrs.items()}


def shard_length(path: Path) -> int:
    return int(open_shard(path).attrs["n"])


class ShardReader:
    """Reads of single samples' arrays from any number of shards, fast enough for a training
    loader: one read-only handle per file and process (a forked or unpickled copy opens its own;
    a handle closed by :func:`close_shards` is reopened), and each file's layout and datasets
    looked up once (through h5py that costs about as much as reading a chunk). The one reader
    of the shard layout: the stages' :func:`read_image` ... and segtrain's loader use it."""

    ARRAYS = ("images", "masks", "roi")

    def __init__(self) -> None:
        self._files: dict[str, tuple[h5py.File, bool, dict[str, Any]]] = {}
        self._pid: int | None = None

    def __getstate__(self) -> dict:
        return {"_files": {}, "_pid": None}  # HDF5 handles do not travel to another process

    def _open(self, path: str) -> tuple[h5py.File, bool, dict[str, Any]]:
        if self._pid != os.getpid():  # a forked worker: never use the parent's handles
            self._files = {}
            self._pid = os.getpid()
        entry = self._files.get(path)
        if entry is None or not entry[0].id.valid:
            handle = open_shard(Path(path))
            fixed = handle.attrs.get("layout") == "fixed"
            nodes = {name: handle[name] if name in handle else None for name in self.ARRAYS}
            entry = (handle, fixed, nodes)
            self._files[path] = entry
        return entry

    def node(self, path: str | Path, name: str, index: int):
        """The h5py dataset holding ``name``'s sample ``index`` (fixed layout: the whole array,
        one sample per row) and whether the layout is fixed; None when the shard has none."""
        _, fixed, nodes = self._open(str(path))
        node = nodes.get(name)
        if node is None or fixed:
            return node, fixed
        return node.get(_key(index)), fixed

    def spec(self, path: str | Path, name: str, index: int) -> tuple[np.dtype, tuple] | None:
        """dtype and shape of one sample's ``name`` array without reading it; None if absent."""
        node, fixed = self.node(path, name, index)
        if node is None:
            return None
        if not fixed and node.ndim == 1:  # a kept file: decodes to uint8 of its header's size
            size = stored_size(node[()].tobytes())
            if size is None:
                return np.dtype(np.uint8), tuple(self.read(path, name, index).shape)
            return np.dtype(np.uint8), (*size, 3) if name == "images" else size
        if fixed and node.ndim == 1:  # encoded images: RGB at the shard's size
            return np.dtype(np.uint8), (*(int(v) for v in node.file.attrs["size"]), 3)
        return node.dtype, tuple(node.shape[1:] if fixed else node.shape)

    def read(self, path: str | Path, name: str, index: int, required: bool = True) -> np.ndarray | None:
        """Sample ``index``'s ``name`` array (images, masks, roi), or None (``required=False``)."""
        try:
            node, fixed = self.node(path, name, index)
            if node is None:
                array = None
            elif fixed:
                if not 0 <= index < node.shape[0]:
                    raise ShardError(f"{path}: index {index} out of range for {name} "
                                     f"({node.shape[0]} samples)")
                array = node[index:index + 1][0]  # one chunk; a slice is faster in h5py than an int
                if array.ndim == 1:  # an encoded image (image_codec png or jpeg:Q): its bytes
                    encoded, array = array, decode_stored_image(array)
                    if array is None:
                        raise ShardError(f"{path}: {name}[{index}] does not decode "
                                         f"({len(encoded)} bytes; corrupt)")
            else:
                array = node[()]
                if array.ndim == 1:
                    array = _decode_file(path, name, index, array)
        except (OSError, KeyError, ValueError, RuntimeError) as exc:
            raise ShardError(f"{path}: cannot read {name}[{index}] (truncated or corrupt: {exc})") from None
        if array is None and required:
            raise ShardError(f"{path}: holds no {name} for index {index}")
        return array


def _decode_file(path: str | Path, name: str, index: int, data: np.ndarray) -> np.ndarray:
    """A kept source file's pixels, decoded by the function ingest used on it."""
    decode = decode_image if name == "images" else decode_mask
    try:
        # No pixel limit: ingest applied its own before keeping the file.
        return decode(Path(f"{path}:{name}[{index}]"), None, data.tobytes()).array
    except DecodeError as exc:
        raise ShardError(f"{exc} (the kept file is corrupt)") from None


_reader = ShardReader()


def _read(path: Path, name: str, index: int, required: bool) -> np.ndarray | None:
    handle = open_shard(path)
    n = int(handle.attrs["n"])
    if not 0 <= index < n:
        raise ShardError(f"{path}: index {index} out of range (shard holds {n} samples)")
    return _reader.read(Path(path).resolve(), name, index, required)


def _checked(path: Path, name: str, index: int, array: np.ndarray | None) -> np.ndarray | None:
    """Arrays as the shard contract has them (uint8; images (H, W, 3), masks and ROIs
    (H, W)), or a ShardError naming the shard: a hand-made or foreign shard must not reach a
    stage as a float or 3-D mask."""
    if array is None:
        return None
    ndim = 3 if name == "images" else 2
    if array.dtype != np.uint8 or array.ndim != ndim or (ndim == 3 and array.shape[2] != 3):
        expected = "uint8 (H, W, 3)" if ndim == 3 else "uint8 (H, W)"
        raise ShardError(f"{path}: {name}[{index}] is {array.dtype} {tuple(array.shape)}, "
                         f"expected {expected}; this shard was not written by segprep or is corrupt")
    return array


def read_image(path: Path, index: int) -> np.ndarray:
    return _checked(path, "images", index, _read(path, "images", index, required=True))


def read_mask(path: Path, index: int) -> np.ndarray:
    return _checked(path, "masks", index, _read(path, "masks", index, required=True))


def read_roi(path: Path, index: int) -> np.ndarray | None:
    return _checked(path, "roi", index, _read(path, "roi", index, required=False))


def shard_problem(path: Path, *, size: int | None = None, n: int | None = None,
                  checksums: list[tuple[int, str, str]] | None = None) -> str | None:
    """Why the file at ``path`` is not the shard a finished run wrote, or None when it is.

    Cheap checks: it exists, has ``size`` bytes, opens as a segprep shard holding ``n``
    samples. With ``checksums`` ((index, image SHA-1, mask SHA-1), "" to skip one), every named
    array is read and its SHA-1 compared: what ``--verify`` adds, catching a flipped byte."""
    path = Path(path)
    if not path.is_file():
        return "missing"
    if size is not None and path.stat().st_size != size:
        return f"{path.stat().st_size} bytes, {size} when written"
    try:
        with h5py.File(path, "r") as handle:
            if handle.attrs.get("format") != SHARD_FORMAT:
                return "not a segprep shard"
            if n is not None and int(handle.attrs.get("n", -1)) != n:
                return f"holds {int(handle.attrs.get('n', -1))} samples, {n} when written"
    except OSError as exc:
        return f"not a readable HDF5 file ({exc})"
    if checksums:
        from segprep.hashing import array_sha1

        close_shards()  # read this file afresh, not through a handle opened before the damage
        try:
            for index, image_sha1, mask_sha1 in checksums:
                for expected, read in ((image_sha1, read_image), (mask_sha1, read_mask)):
                    if expected and array_sha1(read(path, index)) != expected:
                        return f"sample {index}: checksum differs from the one recorded"
        except ShardError as exc:
            return str(exc).removeprefix(f"{path}: ")
        finally:
            close_shards()
    return None


@dataclass
class Sample:
    image: np.ndarray          # uint8 (H, W, 3)
    mask: np.ndarray           # uint8 (H, W): raw grey values at ingest, class indices later
    roi: np.ndarray | None     # uint8 (H, W), nonzero inside the field of view, or None


def load_sample(root: Path, row: Mapping) -> Sample:
    """Read one manifest row's sample; shard paths in the row are relative to ``root``
    (the manifest's folder). The ROI travels with the image."""
    root = Path(root)
    image_shard = root / row["image_shard"]
    image_index = int(row["image_index"])
    return Sample(image=read_image(image_shard, image_index),
                  mask=read_mask(root / row["mask_shard"], int(row["mask_index"])),
                  roi=read_roi(image_shard, image_index))
