"""``segprep ingest``: raw dataset folders -> HDF5 shards + ``WORK/manifests/ingest.csv``.

The only stage that understands raw layouts (:mod:`segprep.readers`). What it writes:

* ``WORK/shards/ingest-00000.h5 ...``: variable-size shards, stage ``ingest``: the RGB image,
  the mask exactly as decoded, and the ROI (DRIVE's field of view) beside the image.
* ``WORK/manifests/ingest.csv``: one row per sample (docs/FORMATS.md), written last.
* ``WORK/reports/ingest/unpaired.csv`` and ``unreadable.csv``: every file that could not
  become a sample, with the reason (clean reads them).
* ``WORK/manifests/ingest.json``: what this ingest was made from, so a rerun on unchanged
  inputs is a no-op.

Resumable: the sorted list of pairs is cut into fixed blocks of :data:`BLOCK` pairs, and
block ``k`` becomes shard ``ingest-0000k.h5`` plus a small ``.meta.json`` holding its rows.
Both are written under a temporary name and renamed when complete, by the process that
decoded the block, so decoding and writing scale with ``--workers`` and shard contents never
depend on the worker count. A restarted run reuses every block whose inputs (paths, sizes,
mtimes) are unchanged, then recomputes groups and splits from all blocks, so it ends with the
same manifest as an uninterrupted run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import pandas as pd

from segprep.errors import DecodeError, SegprepError
from segprep.executor import available_cpus, executor_settings, make_executor
from segprep.hashing import array_sha1, image_hashes, phash_hex
from segprep.imageio import MAX_PIXELS, Decoded, decode_image, decode_mask, is_grey, keepable
from segprep.manifest import COLUMNS, write_manifest
from segprep.progress import progress
from segprep.readers import RawPair, Source, resolve_sources
from segprep.readers.base import natural_key
from segprep.shards import ShardWriter, shard_problem
from segprep.splits import assign_splits, read_splits_file
from segprep.stage import StageRecord, relative, remove_stale
from segprep.work import WorkLock, atomic_write_csv, atomic_write_json, read_json

log = logging.getLogger(__name__)

INGEST_VERSION = 4      # bump when a block's content changes meaning, so old blocks are not reused
BLOCK = 64              # pairs per shard: the unit of parallel work and of resuming
SHARD_PREFIX = "ingest"
# lzf costs ~10 ms per megapixel-RGB on one core and saves only ~30% on photographs, several
# times the JPEG decode itself; masks and ROIs are mostly flat and shrink ~30x for little.
COMPRESSION = {"images": "lzf", "masks": "lzf", "roi": "lzf"}  # pixels not kept as files
EXTRA_COLUMNS = ("stem", "phash", "image_sha1", "mask_sha1", "mask_values", "has_roi", "roi_path",
                 "phash256", "image_decoder", "mask_format", "extra_mask_paths", "decode_warnings")
UNPAIRED_COLUMNS = ("source", "stem", "path", "reason")
UNREADABLE_COLUMNS = ("source", "stem", "path", "reason")
_SHARD_FILE = re.compile(rf"^{SHARD_PREFIX}-(\d{{5}})\.(h5|meta\.json)(\.tmp)?$")


# ----------------------------------------------------------------------------- results

@dataclass
class IngestResult:
    """What an ingest did (or found already done: ``skipped``)."""

    manifest_path: Path
    work: Path
    n_samples: int
    sources: list[dict]                    # name, layout, root
    counts: dict[str, dict[str, int]]      # source -> train/val/test/excluded/unpaired/unreadable
    unpaired: int
    unreadable: int
    excluded: int
    seconds: float
    skipped: bool = False
    splits: dict = field(default_factory=dict)   # group and fraction statistics (splits.py)
    blocks: int = 0
    blocks_reused: int = 0
    rebuilt: int = 0        # blocks of a finished run found damaged and rebuilt
    notes: list[str] = field(default_factory=list)   # what the user must know about the data

    @property
    def unpaired_path(self) -> Path:
        return self.work / "reports" / "ingest" / "unpaired.csv"

    @property
    def unreadable_path(self) -> Path:
        return self.work / "reports" / "ingest" / "unreadable.csv"

    def to_json(self) -> dict:
        data = asdict(self)
        data["manifest_path"], data["work"] = str(self.manifest_path), str(self.work)
        return data

    @classmethod
    def from_json(cls, data: dict) -> "IngestResult":
        data = dict(data)
        data["manifest_path"], data["work"] = Path(data["manifest_path"]), Path(data["work"])
        return cls(**data)

    def summary(self) -> str:
        """The printed summary: per source and split, unpaired and unreadable files, groups,
        requested against realised fractions, time and where the output went."""
        lines = []
        if self.skipped:
            lines.append(f"ingest: nothing changed since the last run (use --force to redo); "
                         f"{self.manifest_path}")
        for s in self.sources:
            lines.append(f"source {s['name']}: layout {s['layout']} at {s['root']}")
        width = max([len(name) for name in self.counts] + [20]) + 2
        columns = (("train", 7), ("val", 6), ("test", 6), ("excluded", 10), ("unpaired", 10),
                   ("unreadable", 12))
        lines.append(f"{'source':<{width}}" + "".join(f"{k:>{w}}" for k, w in columns))
        total = {k: 0 for k, _ in columns}
        for name, c in self.counts.items():
            lines.append(f"{name:<{width}}" + "".join(f"{c[k]:>{w}}" for k, w in columns))
            for k in total:
                total[k] += c[k]
        if len(self.counts) > 1:
            lines.append(f"{'all':<{width}}" + "".join(f"{total[k]:>{w}}" for k, w in columns))
        sp = self.splits
        if sp:
            buckets = ", ".join(f"{k}: {v}" for k, v in sp["group_sizes"].items() if v)
            largest = ", ".join(f"{g} ({n})" for g, n in sp["largest_groups"] if n > 1)
            lines.append(f"groups: {sp['n_groups']} (sizes {buckets}; "
                         + (f"largest {largest})" if largest else "every group is one sample)"))
            bits = sp["near_duplicate_bits"]
            # 0 bits: the layout's images are known to be distinct (DRIVE); only exact copies count
            within = f"phash <= {bits} bits" if bits else "identical phash only"
            lines.append(f"near duplicates: {sp['near_duplicate_candidates']} candidate pairs "
                         f"({within}), {sp['near_duplicate_pairs']} "
                         f"confirmed, {sp['near_duplicate_merges']} merges, "
                         f"{sp['merges_refused_by_cap']} refused by the group cap of {sp['group_cap']}, "
                         f"{sp['n_straddling_pairs']} straddling a fixed split")
            for name, r in sp["sources"].items():
                parts = []
                for split in ("val", "test"):
                    req = r["requested"][split]
                    got = r["fractions"][split]
                    parts.append(f"{split} {got:.3f} (official/fixed)" if req == "fixed"
                                 else f"{split} {got:.3f} (requested {float(req):.3f}, "
                                      f"{got - float(req):+.3f})")
                lines.append(f"fractions {name}: train {r['fractions']['train']:.3f}, " + ", ".join(parts))
            for note in sp.get("notes", []):
                lines.append(f"note: {note}")
        lines.extend(self.notes)
        if self.rebuilt:
            lines.append(f"rebuilt {self.rebuilt} damaged block(s) of the finished run "
                         f"(shards missing, truncated or not matching their record)")
        lines.append(f"{self.n_samples} samples ({self.excluded} excluded), {self.unpaired} unpaired, "
                     f"{self.unreadable} unreadable file(s) in {self.seconds:.1f} s "
                     f"({self.blocks_reused}/{self.blocks} blocks reused)")
        lines.append(f"manifest: {self.manifest_path}")
        if self.unpaired or self.unreadable:
            lines.append(f"reports:  {self.unpaired_path.parent}/(unpaired|unreadable).csv")
        return "\n".join(lines)


# ----------------------------------------------------------------------------- decoding (workers)

@dataclass(frozen=True)
class Task:
    """One image/mask pair to load; plain strings so it pickles cheaply to a worker."""

    sample_id: str
    source: str
    stem: str
    image_path: str
    mask_path: str
    roi_path: str
    fg_threshold: int
    extra_mask_paths: tuple[str, ...] = ()   # further masks of the image, merged into one
    max_pixels: int = MAX_PIXELS


@dataclass(frozen=True)
class BlockTask:
    number: int
    shard_path: str
    meta_path: str
    fingerprint: str
    tasks: tuple[Task, ...]


def _reason(error: DecodeError, path: str) -> str:
    message = str(error)
    prefix = f"{path}: "
    return message[len(prefix):] if message.startswith(prefix) else message


def load_pair(task: Task) -> tuple[dict | None, dict, list[dict]]:
    """Decode one pair and compute everything the manifest needs about it.

    Returns ``(arrays, record, unreadable)``; ``arrays`` is None when a file could not be
    decoded, and each such file is one entry of ``unreadable``. ``arrays["files"]`` holds the
    bytes of the files the shard may keep as they are (:func:`segprep.imageio.keepable`). Several mask files of one
    image are merged into one mask (their pixel-wise maximum: the union of 0/255 masks).
    """
    decoded: dict[str, list[Decoded]] = {"image": [], "mask": [], "roi": []}
    errors = []
    files = ([("image", task.image_path, decode_image), ("mask", task.mask_path, decode_mask)]
             + [("mask", path, decode_mask) for path in task.extra_mask_paths]
             + [("roi", task.roi_path, decode_mask)])
    for name, path, decoder in files:
        if not path:
            continue
        try:
            decoded[name].append(decoder(Path(path), task.max_pixels))
        except DecodeError as exc:
            errors.append({"source": task.source, "stem": task.stem, "path": path,
                           "reason": _reason(exc, path)})
        except Exception as exc:  # a decoder's own failure on one odd file must not stop the run
            log.warning("%s: unexpected %s while decoding: %s", path, type(exc).__name__, exc)
            errors.append({"source": task.source, "stem": task.stem, "path": path,
                           "reason": f"cannot decode ({type(exc).__name__}: {exc})"})
    if errors:
        return None, {}, errors
    image_file, mask_files = decoded["image"][0], decoded["mask"]
    image = image_file.array
    roi = decoded["roi"][0].array if decoded["roi"] else None
    height, width = image.shape[:2]
    masks = [m.array for m in mask_files]
    issues = []
    if (any(m.shape != (height, width) for m in masks)
            or (roi is not None and roi.shape != (height, width))):
        issues.append("size_mismatch")
    mask = masks[0]
    if len(masks) > 1 and all(m.shape == mask.shape for m in masks):
        mask = np.maximum.reduce(masks)
    # One histogram gives both the distinct values and the foreground count (np.bincount
    # would first widen every pixel to 64 bits).
    histogram = cv2.calcHist([mask], [0], None, [256], [0, 256]).ravel()
    if roi is not None and roi.shape == mask.shape:
        inside = roi > 0
        fg = (float(np.count_nonzero((mask > task.fg_threshold) & inside))
              / max(int(np.count_nonzero(inside)), 1))
    else:
        fg = float(histogram[task.fg_threshold + 1:].sum(dtype=np.float64)) / mask.size
    hash64, hash256 = image_hashes(image)
    warnings = [f"{Path(path).name}: {message}" for f, path in
                zip([image_file, *mask_files], [task.image_path, task.mask_path, *task.extra_mask_paths])
                for message in f.warnings]
    record = {
        "sample_id": task.sample_id, "source": task.source, "stem": task.stem,
        "height": int(height), "width": int(width),
        "mask_height": int(mask.shape[0]), "mask_width": int(mask.shape[1]),
        "fg_fraction": fg,
        "issues": ";".join(issues),
        "phash": phash_hex(hash64), "phash256": phash_hex(hash256, 256),
        "image_sha1": array_sha1(image), "mask_sha1": array_sha1(mask),
        "mask_values": int(np.count_nonzero(histogram)),
        "has_roi": int(roi is not None),
        "image_path": task.image_path, "mask_path": task.mask_path, "roi_path": task.roi_path,
        "extra_mask_paths": list(task.extra_mask_paths),
        "image_decoder": image_file.decoder, "mask_format": mask_files[0].container,
        "decode_warnings": " | ".join(warnings),
        # what ingest's summary needs: colour the file declares against colour decoded
        "declared_colour": int((image_file.declared_channels or 0) >= 3),
        "grey": int(is_grey(image)),
    }
    # Files whose bytes the shard keeps instead of their pixels: the pixels stored are exactly
    # what decoding the bytes gave (a merged mask is not one file's).
    files = {"images": image_file.data} if keepable(image_file) else {}
    if len(mask_files) == 1 and keepable(mask_files[0]):
        files["masks"] = mask_files[0].data
    if decoded["roi"] and keepable(decoded["roi"][0]):
        files["roi"] = decoded["roi"][0].data
    return {"image": image, "mask": mask, "roi": roi, "files": files}, record, []


def run_block(block: BlockTask, progress: Callable[[int], None] | None = None) -> dict:
    """Decode one block's pairs into its shard, then write the block's meta file.

    Runs in a worker process (or inline with one worker). The shard appears under its final
    name only when complete, and the meta file only after it, so a block with a meta file is
    finished.
    """
    rows, unreadable = [], []
    writer: ShardWriter | None = None
    try:
        for task in block.tasks:
            arrays, record, errors = load_pair(task)
            if arrays is None:
                unreadable.extend(errors)
            else:
                if writer is None:
                    writer = ShardWriter(Path(block.shard_path), SHARD_PREFIX, compression=COMPRESSION)
                record["index"] = writer.add(sample_id=task.sample_id, image=arrays["image"],
                                             mask=arrays["mask"], roi=arrays.get("roi"),
                                             files=arrays["files"])
                rows.append(record)
            if progress is not None:
                progress(1)
        if writer is not None:
            writer.close()
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    shard = Path(block.shard_path)
    meta = {"version": INGEST_VERSION, "fingerprint": block.fingerprint,
            "number": block.number, "n_tasks": len(block.tasks),
            "shard": shard.name if rows else "",
            "shard_size": shard.stat().st_size if rows else 0,
            "rows": rows, "unreadable": unreadable}
    atomic_write_json(Path(block.meta_path), meta)
    return meta


# ----------------------------------------------------------------------------- planning (parent)

def _stat(path: Path | None) -> list:
    if path is None:
        return []
    try:
        st = path.stat()
        return [str(path), st.st_size, st.st_mtime_ns]
    except OSError:
        return [str(path), -1, -1]  # vanished since listing: the worker reports it unreadable


def _sha1_text(data) -> str:
    return hashlib.sha1(json.dumps(data, sort_keys=True).encode("utf-8")).hexdigest()


def _unpaired_reason(pair: RawPair) -> str:
    """Reasons start with "image without mask" or "mask without image" (clean maps those to
    missing_mask / missing_image); a file that lost to another with the same stem says so."""
    if pair.note.startswith("duplicate"):
        return pair.note
    generic = "image without mask" if pair.mask_path is None else "mask without image"
    return f"{generic} ({pair.note})" if pair.note else generic


@dataclass
class _Plan:
    sources: list[Source]
    tasks: list[Task]
    stats: list[list]
    official: dict[str, str]           # sample_id -> official split
    layout_group: dict[str, str]       # sample_id -> group from the layout
    near_bits: dict[str, int]          # source -> near-duplicate threshold of its layout
    unpaired: list[dict]


def _plan(sources: list[Source], max_pixels: int = MAX_PIXELS) -> _Plan:
    tasks, stats, unpaired = [], [], []
    official, layout_group = {}, {}
    near_bits = {source.name: source.near_duplicate_bits for source in sources}
    for source in sources:
        pairs = sorted(source.pairs(), key=lambda p: natural_key(p.stem))
        fg_threshold = source.fg_threshold  # looks the layout up again on every call
        seen: dict[str, RawPair] = {}
        for pair in pairs:
            if pair.image_path is None or pair.mask_path is None:
                path = pair.image_path or pair.mask_path
                unpaired.append({"source": source.name, "stem": pair.stem, "path": str(path),
                                 "reason": _unpaired_reason(pair)})
                continue
            if pair.stem in seen:  # e.g. an nnU-Net case id in both imagesTr and imagesTs
                unpaired.append({"source": source.name, "stem": pair.stem,
                                 "path": str(pair.image_path),
                                 "reason": f"duplicate stem in {source.name} (kept "
                                           f"{seen[pair.stem].image_path})"})
                continue
            seen[pair.stem] = pair
            sample_id = f"{source.name}/{pair.stem}"
            tasks.append(Task(sample_id, source.name, pair.stem, str(pair.image_path),
                              str(pair.mask_path), str(pair.roi_path) if pair.roi_path else "",
                              fg_threshold, tuple(str(p) for p in pair.extra_masks), max_pixels))
            stats.append([_stat(pair.image_path), _stat(pair.mask_path), _stat(pair.roi_path)]
                         + [_stat(p) for p in pair.extra_masks])
            official[sample_id] = pair.split
            layout_group[sample_id] = pair.group
        log.info("%s: %d pairs, %d unpaired file(s)", source.name, len(seen),
                 sum(1 for u in unpaired if u["source"] == source.name))
    return _Plan(sources, tasks, stats, official, layout_group, near_bits, unpaired)


def _blocks(plan: _Plan, shard_dir: Path) -> list[BlockTask]:
    blocks = []
    for number, start in enumerate(range(0, len(plan.tasks), BLOCK)):
        tasks = tuple(plan.tasks[start:start + BLOCK])
        fingerprint = _sha1_text({"version": INGEST_VERSION, "compression": COMPRESSION,
                                  "tasks": [asdict(t) for t in tasks],
                                  "stats": plan.stats[start:start + BLOCK]})
        name = f"{SHARD_PREFIX}-{number:05d}"
        blocks.append(BlockTask(number, str(shard_dir / f"{name}.h5"),
                                str(shard_dir / f"{name}.meta.json"), fingerprint, tasks))
    return blocks


def _finished(block: BlockTask, verify: bool = False) -> dict | None:
    """The block's meta when an earlier run completed exactly this block and its shard is
    intact (size, HDF5 header, sample count; with ``verify`` every checksum), else None."""
    meta = read_json(Path(block.meta_path))
    if not isinstance(meta, dict) or meta.get("version") != INGEST_VERSION \
            or meta.get("fingerprint") != block.fingerprint:
        return None
    if meta["rows"]:
        checksums = ([(r["index"], r["image_sha1"], r["mask_sha1"]) for r in meta["rows"]]
                     if verify else None)
        problem = shard_problem(Path(block.shard_path), size=meta["shard_size"],
                                n=len(meta["rows"]), checksums=checksums)
        if problem is not None:
            log.warning("%s: %s; rebuilding its block", block.shard_path, problem)
            return None
    return meta


def _run_blocks(pending: list[BlockTask], workers: int, bar) -> dict[int, dict]:
    """Run blocks on worker processes (inline with one); each writes its own shard and meta.
    Interrupted or failed: the workers are ended, and a restart reuses every finished block."""
    done: dict[int, dict] = {}
    with make_executor(min(workers, max(1, len(pending))), preload=[__name__]) as pool:
        for meta in pool.imap_unordered(run_block, pending):
            done[meta["number"]] = meta
            bar.update(meta["n_tasks"])
    return done


# ----------------------------------------------------------------------------- the stage

def _check_options(sources: list[Path], val: float, test: float, workers: int | None,
                   max_pixels: int) -> int:
    if not (0 <= val < 1 and 0 <= test < 1 and val + test < 1):
        raise SegprepError(f"--val {val} and --test {test} must be fractions in [0, 1) that "
                           "leave some samples for training")
    if not sources:
        raise SegprepError("give at least one dataset folder (SRC)")
    workers = available_cpus() if workers is None else int(workers)
    if workers < 1:
        raise SegprepError(f"--workers must be at least 1, got {workers}")
    if max_pixels < 1:
        raise SegprepError(f"--max-pixels must be at least 1, got {max_pixels}")
    return workers


def ingest(sources: list[Path], work: Path, *, layout: str = "auto", val: float = 0.1,
           test: float = 0.1, split_seed: int = 0, splits_file: Path | None = None,
           workers: int | None = None, force: bool = False, verify: bool = False,
           max_pixels: int = MAX_PIXELS, executor: str = "local",
           scheduler: str | None = None) -> IngestResult:
    """Ingest raw dataset folders into ``WORK`` (see the module docstring).

    An unchanged rerun is a no-op when the outputs it would keep are intact (``verify``: down
    to every checksum); damaged blocks are rebuilt. A finished ingest of other sources or
    options is replaced only with ``force``; inputs that changed are an update (unchanged blocks
    are reused). Raises :class:`SegprepError` for unusable arguments (unknown layout, empty or
    unknown folder, bad splits file), when WORK is in use by another run, and when no sample at
    all could be ingested; a bad file is a row in the reports, never an abort. ``executor``
    ``dask`` runs the blocks on a Dask cluster (``scheduler``: its address; None starts a
    LocalCluster of ``workers`` processes), with the same output.
    """
    started = time.perf_counter()
    work = Path(work)
    workers = _check_options(sources, val, test, workers, max_pixels)
    # Absolute paths: reports name files the user can open, and the no-op check does not
    # depend on the folder the command ran from.
    resolved = resolve_sources([Path(s).absolute() for s in sources], layout)
    splits_table = read_splits_file(splits_file) if splits_file is not None else None
    plan = _plan(resolved, max_pixels)
    options = {"sources": [[s.name, s.layout, str(s.root.resolve())] for s in resolved],
               "val": val, "test": test, "split_seed": split_seed, "max_pixels": max_pixels,
               "splits_file": None if splits_table is None else splits_table.to_csv(index=False)}
    with WorkLock(work, "segprep ingest"), executor_settings(executor, scheduler, shared_dir=work):
        return _run(plan, work, options, sources, layout, splits_table, splits_file, workers,
                    force, verify, started)


#: option keys and the flags a user types for them
FLAGS = {"sources": "sources", "val": "--val", "test": "--test", "split_seed": "--seed",
         "max_pixels": "--max-pixels", "splits_file": "--splits"}


def _run(plan: _Plan, work: Path, options: dict, sources: list[Path], layout: str,
         splits_table: pd.DataFrame | None, splits_file: Path | None, workers: int, force: bool,
         verify: bool, started: float) -> IngestResult:
    shard_dir, manifest_dir = work / "shards", work / "manifests"
    manifest_path, record_path = manifest_dir / "ingest.csv", manifest_dir / "ingest.json"
    fingerprint = _sha1_text({"version": INGEST_VERSION, "compression": COMPRESSION,
                              "options": options, "tasks": [asdict(t) for t in plan.tasks],
                              "stats": plan.stats, "unpaired": plan.unpaired})
    record = StageRecord(record_path, manifest_path)
    previous_record = record.read()
    record.refuse_other(previous_record, "options", options, force=force, names=FLAGS,
                        hint=", or -o another WORK folder")
    blocks = _blocks(plan, shard_dir)
    metas = {} if force else {b.number: m for b in blocks if (m := _finished(b, verify)) is not None}
    previous = None if force else _previous_result(record, previous_record, fingerprint)
    if previous is not None and len(metas) == len(blocks):
        previous.skipped = True
        previous.manifest_path, previous.work = manifest_path, work
        previous.seconds = time.perf_counter() - started
        log.info("ingest: inputs unchanged since %s and outputs intact; nothing to do", record_path)
        return previous
    rebuilt = len(blocks) - len(metas) if previous is not None else 0
    record.withdraw()  # from here on the old manifest may no longer describe the shards
    shard_dir.mkdir(parents=True, exist_ok=True)
    reused = len(metas)
    pending = [b for b in blocks if b.number not in metas]
    with progress(total=len(plan.tasks), desc="ingest", unit="sample") as bar:
        bar.update(sum(len(b.tasks) for b in blocks if b.number in metas))
        metas.update(_run_blocks(pending, workers, bar))

    table, unreadable = _collect(blocks, metas, plan, work, sources)
    manifest, split_stats = _manifest(table, plan, splits_table, splits_file, options, manifest_dir)
    write_manifest(manifest, manifest_path)
    remove_stale(shard_dir, _SHARD_FILE, keep=lambda name: _block_file(name, len(blocks)))
    result = IngestResult(
        notes=_data_notes(table), manifest_path=manifest_path, work=work, n_samples=len(manifest),
        sources=[{"name": name, "layout": lay, "root": root} for name, lay, root in options["sources"]],
        counts=_counts(manifest, plan, unreadable), unpaired=len(plan.unpaired),
        unreadable=len(unreadable), excluded=int((manifest["status"] == "excluded").sum()),
        seconds=time.perf_counter() - started, splits=split_stats, blocks=len(blocks),
        blocks_reused=reused, rebuilt=rebuilt)
    record.write(version=INGEST_VERSION, fingerprint=fingerprint, options=options,
                 sources=[str(p) for p in sources], layout=layout, result=result.to_json())
    log.info("ingest: %d samples -> %s in %.1f s", len(manifest), manifest_path, result.seconds)
    return result


def _collect(blocks: list[BlockTask], metas: dict[int, dict], plan: _Plan, work: Path,
             sources: list[Path]) -> tuple[pd.DataFrame, list[dict]]:
    """The blocks' rows (with their shard paths) and unreadable files, and the reports."""
    shard_dir, manifest_dir = work / "shards", work / "manifests"
    report_dir = work / "reports" / "ingest"
    rows, unreadable = [], []
    for block in blocks:
        meta = metas[block.number]
        shard_rel = relative(str(shard_dir / meta["shard"]), manifest_dir) if meta["shard"] else ""
        rows += [{**record, "shard": shard_rel} for record in meta["rows"]]
        unreadable.extend(meta["unreadable"])
    atomic_write_csv(report_dir / "unpaired.csv", pd.DataFrame(plan.unpaired, columns=list(UNPAIRED_COLUMNS)))
    atomic_write_csv(report_dir / "unreadable.csv", pd.DataFrame(unreadable, columns=list(UNREADABLE_COLUMNS)))
    if not rows:
        raise SegprepError(
            f"nothing could be ingested from {', '.join(str(s) for s in sources)}: "
            f"{len(plan.unpaired)} unpaired and {len(unreadable)} unreadable file(s); "
            f"see {report_dir}")
    return pd.DataFrame(rows), unreadable


def _manifest(table: pd.DataFrame, plan: _Plan, splits_table: pd.DataFrame | None,
              splits_file: Path | None, options: dict, manifest_dir: Path) -> tuple[pd.DataFrame, dict]:
    """Groups and splits over all samples, then the manifest in the contract's column order."""
    samples = pd.DataFrame({
        "sample_id": table["sample_id"], "source": table["source"], "stem": table["stem"],
        "phash": [int(h, 16) for h in table["phash"]],
        "official_split": table["sample_id"].map(plan.official),
        "layout_group": table["sample_id"].map(plan.layout_group),
        "near_bits": table["source"].map(plan.near_bits),
        "confirm_hash": [int(h, 16) for h in table["phash256"]],
    })
    assignment, split_stats = assign_splits(samples, val=options["val"], test=options["test"],
                                            seed=options["split_seed"], splits_table=splits_table,
                                            splits_path=splits_file or "")
    excluded = table["issues"] != ""
    relative_all = lambda paths: [relative(p, manifest_dir) for p in paths]  # noqa: E731
    manifest = pd.DataFrame({
        "sample_id": table["sample_id"], "source": table["source"],
        "split": assignment["split"].to_numpy(), "group": assignment["group"].to_numpy(),
        "image_shard": table["shard"], "image_index": table["index"],
        "mask_shard": table["shard"], "mask_index": table["index"],
        "height": table["height"], "width": table["width"], "fg_fraction": table["fg_fraction"],
        "status": np.where(excluded, "excluded", "ok"), "issues": table["issues"],
        "parent_id": "", "image_path": relative_all(table["image_path"]),
        "mask_path": relative_all(table["mask_path"]),
        "stem": table["stem"], "phash": table["phash"],
        "image_sha1": table["image_sha1"], "mask_sha1": table["mask_sha1"],
        "mask_values": table["mask_values"], "has_roi": table["has_roi"],
        "roi_path": relative_all(table["roi_path"]),
        "phash256": table["phash256"], "image_decoder": table["image_decoder"],
        "mask_format": table["mask_format"],
        "extra_mask_paths": [";".join(relative_all(paths)) for paths in table["extra_mask_paths"]],
        "decode_warnings": table["decode_warnings"],
    })
    assert tuple(manifest.columns) == COLUMNS + EXTRA_COLUMNS
    return manifest, split_stats


def _counts(manifest: pd.DataFrame, plan: _Plan, unreadable: list[dict]) -> dict[str, dict[str, int]]:
    counts = {}
    for name in dict.fromkeys(manifest["source"]).keys() | {s.name for s in plan.sources}:
        mine = manifest[manifest["source"] == name]
        counts[name] = {
            **{split: int((mine["split"] == split).sum()) for split in ("train", "val", "test")},
            "excluded": int((mine["status"] == "excluded").sum()),
            "unpaired": sum(1 for u in plan.unpaired if u["source"] == name),
            "unreadable": sum(1 for u in unreadable if u["source"] == name),
        }
    return {s.name: counts[s.name] for s in plan.sources}


def _data_notes(table: pd.DataFrame) -> list[str]:
    """Per source: images whose colour the decoders could not find, merged masks, decoders'
    warnings, and which decoders produced the pixels when it was not OpenCV alone."""
    notes = []
    for source, rows in table.groupby("source", sort=False):
        n = len(rows)
        declared = int(rows["declared_colour"].sum())
        grey = rows["grey"].astype(bool)
        if declared and grey.all():
            notes.append(f"WARNING {source}: all {n} images decoded grey although {declared} "
                         f"declare colour channels; a decoder may have lost their colour "
                         f"(image_decoder in the manifest says which one read them)")
        decoders = rows["image_decoder"].value_counts()
        if list(decoders.index) != ["opencv"]:
            notes.append(f"{source}: image decoders " + ", ".join(f"{name} {count}" for name, count
                                                                  in decoders.items())
                         + " (tifffile where OpenCV dropped channels a TIFF declares)")
        merged = rows["extra_mask_paths"].map(len)
        if merged.any():
            notes.append(f"{source}: {int((merged > 0).sum())} image(s) had several mask files "
                         f"({int(merged.sum())} extra), merged into one mask each (union); "
                         f"clean reports them as merged_masks")
        warned = rows["decode_warnings"] != ""
        if warned.any():
            first = rows.loc[warned, "decode_warnings"].iloc[0]
            notes.append(f"{source}: {int(warned.sum())} file(s) decoded with warnings (e.g. "
                         f"{first}); clean reports them as decoder_warning")
    return notes


def _previous_result(record: StageRecord, previous: dict | None, fingerprint: str
                     ) -> IngestResult | None:
    """The recorded result of a finished ingest with the same inputs whose manifest is intact."""
    if not isinstance(previous, dict) or previous.get("fingerprint") != fingerprint:
        return None
    if not record.intact(previous):
        return None
    try:
        return IngestResult.from_json(previous["result"])
    except (ValueError, KeyError, TypeError):
        return None


def _block_file(name: str, n_blocks: int) -> bool:
    """Whether a file in WORK/shards is a complete shard or meta file of this run's blocks."""
    match = _SHARD_FILE.match(name)
    return bool(match) and not match.group(3) and int(match.group(1)) < n_blocks
