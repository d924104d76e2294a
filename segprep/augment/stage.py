"""The augment stage: a manifest in, fixed-size shards and ``augment.csv`` out.

Plan first, then work. The parent lists every output row in a fixed order (input manifest order;
a training sample's variants 0..F-1 together; val/test variant 0 only) and cuts that list into
shards of ``shard_size`` rows. A shard's content is therefore a function of the options alone,
which gives three properties at once:

* any number of workers produces the same bytes (each variant's seed comes from
  (seed, sample_id, variant), never from a process's history);
* each worker process writes whole shards itself (reading its sources through its own HDF5
  handles), so compression and writing run in parallel and no image crosses a pipe;
* a killed run resumes and a damaged output heals: a shard plus its row record (in
  ``manifests/.augment-shards/``, kept after the run) is reused when the shard is intact (size,
  header, count; ``verify``: every checksum), the rest is recomputed, and the result equals an
  uninterrupted run.

The manifest is written last, then ``augment.json`` (the options of the finished run), which
makes a repeated run with the same options a no-op while every shard is intact.

Excluded input rows are not carried into ``augment.csv`` (the summary counts them): augment.csv
is what training reads, and the exclusions stay visible in the input manifest.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from segprep.progress import progress as progress_bar

from segprep.augment import ASPECTS, BACKENDS, PRESET_NAMES
from segprep.augment.backends import BackendSpec, fit, make_backend
from segprep.augment.presets import pipeline_dict
from segprep.errors import SegprepError, ShardError
from segprep.hashing import array_sha1
from segprep.manifest import COLUMNS, SPLITS, read_manifest, source_rows, work_root, write_manifest
from segprep.executor import available_cpus, executor_settings, make_executor
from segprep.stage import StageRecord, file_sha1, rebase, remove_stale
from segprep.shards import (BINARIZE_THRESHOLD, COMPRESSIONS, ShardWriter, binary_mask, close_shards, decode_stored_image, encode_image,
                            load_sample, parse_image_codec, shard_problem)
from segprep.work import (WorkLock, atomic_write_json, describe_bytes, ensure_writable,
                          free_bytes, read_json)

log = logging.getLogger(__name__)

STAGE = "augment"
FORMAT_VERSION = 1
MAX_TRIES = 10
SHARD_SIZE = 128  # rows; small enough that N workers share the shards evenly
# Extra input columns that stay true for a resized/augmented variant. Others (phash, mask_values,
# checksums, clean's measurements) describe the source arrays and would be stale.
CARRIED_COLUMNS = ("stem", "has_roi", "roi_path")
LINEAGE_COLUMNS = ("variant", "aug_seed", "aug_tries", "aug_params", "fg_lost",
                   "image_sha1", "mask_sha1")
# Raw-file paths are relative to their manifest's folder: rebased when augment.csv lives elsewhere.
PATH_COLUMNS = ("image_path", "mask_path", "roi_path")
_SHARD_NAME = re.compile(r"^augment-\d{5}\.h5(\.tmp)?$")


# ----------------------------------------------------------------------------- small helpers

def parse_size(size: int | str | tuple[int, int] | list[int]) -> tuple[int, int]:
    """``352``, ``"352"``, ``"288x384"`` (H x W) or ``(288, 384)`` -> ``(H, W)``."""
    def bad() -> SegprepError:
        return SegprepError(f"bad --size {size!r}: expected N or HxW with positive integers "
                            f"(at least 8), e.g. 352 or 288x384")
    if isinstance(size, (tuple, list)):
        parts = list(size)
    elif isinstance(size, (int, np.integer)):
        parts = [int(size), int(size)]
    elif isinstance(size, str):
        text = size.strip().lower()
        if re.fullmatch(r"\d+", text):
            parts = [int(text), int(text)]
        elif re.fullmatch(r"\d+x\d+", text):
            parts = [int(v) for v in text.split("x")]
        else:
            raise bad()
    else:
        raise bad()
    if len(parts) != 2 or not all(isinstance(v, (int, np.integer)) and v >= 8 for v in parts):
        raise bad()
    return int(parts[0]), int(parts[1])


def variant_seed(seed: int, sample_id: str, variant: int) -> int:
    """A stable 32-bit seed for one variant (hashlib, not ``hash()``, which changes per process).
    32 bits because Augmentor seeds ``numpy.random``, which takes at most 2**32 - 1."""
    digest = hashlib.sha256(f"{seed}\x00{sample_id}\x00{variant}".encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "big")


# ----------------------------------------------------------------------------- plan

@dataclass
class ShardTask:
    number: int
    name: str
    items: list[tuple[dict, int]]   # (input row as a dict of strings, variant)

    def planned_ids(self) -> list[str]:
        return [f"{row['sample_id']}~a{variant:02d}" for row, variant in self.items]


@dataclass
class ShardOutcome:
    number: int
    name: str
    planned: list[str]
    rows: list[dict]
    binarized: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class _Context:
    """What a worker needs; plain data, so it pickles to any start method."""
    spec: BackendSpec
    source_root: str        # input manifest's folder (its shard paths are relative to it)
    shards_dir: str
    blocks_dir: str         # one row record per shard (manifests/.augment-shards)
    shard_prefix: str       # shard path as written in augment.csv, e.g. "../shards"
    compression: str
    seed: int
    max_tries: int
    image_codec: str = "raw"


# ----------------------------------------------------------------------------- work

# Masks and ROIs (0/1 planes) in every augment shard. gzip level 1, not lzf: at 352x352 a mask
# decodes in ~0.1 ms against lzf's ~0.23 (LZF expands long runs byte by byte), is written a
# little faster (~0.2 ms against 0.25) and stores in 1.6 KB against 2.7; uncompressed reads in
# ~0.03 ms but adds 124 KB (a third of a row) per mask. See docs/AUGMENT.md, "Compression".
MASK_COMPRESSION = "gzip-1"


class _Worker:
    def __init__(self, context: _Context):
        self.context = context
        self.backend = make_backend(context.spec)
        self.size = tuple(context.spec.size)

    def _load(self, row: dict) -> tuple[tuple, bool, bool]:
        """The sample fitted to the output size, whether the source had foreground, and whether
        its mask had to be binarized."""
        sample = load_sample(Path(self.context.source_root), row)
        mask, binarized = binary_mask(sample.mask)
        roi = None if sample.roi is None else (sample.roi > 0).astype(np.uint8)
        has_fg = bool(mask.any())
        base = fit(sample.image, mask, roi, self.size, self.context.spec.aspect)
        return base, has_fg, binarized

    def _variant(self, sample_id: str, base: tuple, has_fg: bool, variant: int):
        image, mask, roi = base
        if variant == 0:
            return image, mask, roi, [], "", 0
        first = variant_seed(self.context.seed, sample_id, variant)
        # Redraw (next seed) when a crop or rotation threw all foreground away; a base that
        # already lost it in the resize cannot get it back.
        retry = has_fg and bool(mask.any())
        for attempt in range(self.context.max_tries):
            seed = (first + attempt) % 2**32
            out = self.backend.augment(image, mask, roi, seed)
            if not retry or out.mask.any():
                break
        return out.image, out.mask, out.roi, out.params, seed, attempt + 1

    def process(self, task: ShardTask) -> ShardOutcome:
        ctx = self.context
        path = Path(ctx.shards_dir) / task.name
        outcome = ShardOutcome(task.number, task.name, task.planned_ids(), [])
        current_id, base, has_fg, skip = None, None, False, False
        shard_path = f"{ctx.shard_prefix}/{task.name}"
        # --compression is the images'; masks and ROIs are always MASK_COMPRESSION.
        compression = {"images": ctx.compression, "masks": MASK_COMPRESSION, "roi": MASK_COMPRESSION}
        with ShardWriter(path, STAGE, fixed_size=self.size, compression=compression,
                         image_codec=ctx.image_codec) as writer:
            for row, variant in task.items:
                sample_id = row["sample_id"]
                if sample_id != current_id:
                    current_id, skip = sample_id, False
                    try:
                        base, has_fg, binarized = self._load(row)
                    except SegprepError as exc:  # one unreadable sample never stops the others
                        outcome.failed.append((sample_id, str(exc)))  # logged by the parent
                        skip = True
                    else:
                        if binarized:
                            outcome.binarized.append(sample_id)
                if skip:
                    continue
                image, mask, roi, params, seed, tries = self._variant(sample_id, base, has_fg, variant)
                out_id = f"{sample_id}~a{variant:02d}"
                files = None
                if ctx.image_codec != "raw":
                    files = {"images": encode_image(image, ctx.image_codec)}
                    if ctx.image_codec.startswith("jpeg"):
                        # lossy: the row's checksum must describe the pixels a reader gets
                        image = decode_stored_image(files["images"])
                index = writer.add(sample_id=out_id, image=image, mask=mask, roi=roi, files=files)
                outcome.rows.append(_row(row, out_id, variant, shard_path, index, image, mask, roi,
                                         params, seed, tries, fg_lost=has_fg and not mask.any()))
        atomic_write_json(Path(ctx.blocks_dir) / f"{task.name}.json", {
            "name": task.name, "planned": outcome.planned, "rows": outcome.rows,
            "size": path.stat().st_size, "binarized": outcome.binarized,
            "failed": outcome.failed}, compact=True)
        return outcome


def _row(source: dict, out_id: str, variant: int, shard_path: str, index: int, image: np.ndarray,
         mask: np.ndarray, roi: np.ndarray | None, params: list, seed: int | str, tries: int,
         fg_lost: bool) -> dict:
    inside = mask if roi is None else mask[roi > 0]
    row = {
        "sample_id": out_id, "source": source["source"], "split": source["split"],
        "group": source["group"], "image_shard": shard_path, "image_index": index,
        "mask_shard": shard_path, "mask_index": index, "height": int(mask.shape[0]),
        "width": int(mask.shape[1]),
        "fg_fraction": np.count_nonzero(inside) / inside.size if inside.size else 0.0,
        "status": source["status"], "issues": source["issues"], "parent_id": source["sample_id"],
        "image_path": source["image_path"], "mask_path": source["mask_path"],
    }
    for column in CARRIED_COLUMNS:
        if column in source:
            row[column] = source[column]
    row.update(variant=variant, aug_seed=seed, aug_tries=tries,
               aug_params=json.dumps(params, separators=(",", ":")), fg_lost=int(fg_lost),
               image_sha1=array_sha1(image), mask_sha1=array_sha1(mask))
    return row


_worker: _Worker | None = None


def _init_pool_worker(context: _Context) -> None:
    global _worker
    _worker = _Worker(context)


def _pool_process(task: ShardTask) -> ShardOutcome:
    assert _worker is not None
    return _worker.process(task)


# ----------------------------------------------------------------------------- the stage

@dataclass
class AugmentResult:
    manifest: Path
    work: Path
    rows: int
    rows_per_split: dict[str, int]
    train_samples: int
    factor: int
    shards: list[Path]
    bytes: int
    seconds: float
    samples_per_s: float              # rows computed in this run / seconds (reused shards excluded)
    skipped: bool = False             # a finished run with the same options: nothing done
    reused_shards: int = 0
    computed_rows: int = 0
    excluded_not_carried: int = 0
    fg_lost: int = 0
    binarized: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    workers: int = 1
    preview: Path | None = None
    options: dict = field(default_factory=dict)
    rebuilt: int = 0                  # shards of a finished run found damaged and recomputed


def _options(manifest: Path, *, factor: int, size: tuple[int, int], backend: str, preset: str,
             pipeline: Path | None, pipeline_spec: dict | None, aspect: str, compression: str,
             seed: int, shard_size: int, max_tries: int, image_codec: str = "raw") -> dict:
    """Everything that determines the output (not --workers, --preview or --force)."""
    # image_codec only when not raw: a finished run from before the option stays the same run
    codec = {} if image_codec == "raw" else {"image_codec": image_codec}
    return {**codec, 
        "format": FORMAT_VERSION, "input": manifest.name, "input_sha1": file_sha1(manifest),
        "factor": factor, "size": list(size), "backend": backend,
        "preset": None if pipeline_spec is not None else preset,
        "pipeline_file": str(pipeline) if pipeline is not None else None,
        "pipeline": pipeline_spec, "aspect": aspect, "compression": compression, "seed": seed,
        "shard_size": shard_size, "max_tries": max_tries,
    }


def _plan(rows: pd.DataFrame, factor: int, shard_size: int, source_dir: Path,
          target_dir: Path) -> list[ShardTask]:
    items: list[tuple[dict, int]] = []
    for record in rows.to_dict("records"):
        source = {k: (str(v) if not isinstance(v, str) else v) for k, v in record.items()}
        for column in PATH_COLUMNS:
            if column in source:
                source[column] = rebase(source[column], source_dir, target_dir)
        for variant in range(factor if source["split"] == "train" else 1):
            items.append((source, variant))
    return [ShardTask(number, f"augment-{number:05d}.h5", items[start:start + shard_size])
            for number, start in enumerate(range(0, len(items), shard_size))]


def _summary_counts(df: pd.DataFrame) -> dict[str, int]:
    return {split: int((df["split"] == split).sum()) for split in SPLITS}


# Stored bytes per pixel of an augmented row, for the disk estimate before a run: uncompressed
# RGB, plus 0/1 planes at gzip-1 (a mask ~1.6 KB at 352x352 on Kvasir-SEG, about 1/80 byte a pixel).
_BYTES_PER_PIXEL = {"none": 3.0, "lzf": 2.4, "gzip": 2.2, "png": 2.2, "jpeg": 0.5}
_MASK_BYTES_PER_PIXEL = 1 / 80


def _check_space(usable: pd.DataFrame, factor: int, size: tuple[int, int], compression: str,
                 work: Path, image_codec: str = "raw") -> int:
    """The rows a run would write; refuses, before planning anything, a run whose shards would
    not fit on the disk (a factor typed with too many digits fills a disk, or memory, first)."""
    train = int((usable["split"] == "train").sum())
    rows = train * factor + len(usable) - train
    stored = compression if image_codec == "raw" else image_codec.partition(":")[0]
    per_row = size[0] * size[1] * (_BYTES_PER_PIXEL.get(stored, 3.0) + 2 * _MASK_BYTES_PER_PIXEL)
    estimate, free = rows * per_row, free_bytes(work)
    if estimate > free:
        raise SegprepError(f"--factor {factor} at {size[0]}x{size[1]}: {rows:,} rows need about "
                           f"{describe_bytes(estimate)}, {work} has {describe_bytes(free)} free; "
                           f"lower --factor or --size, or -o a folder on a larger disk")
    return rows


def _check_arguments(factor: int, backend: str, aspect: str, compression: str, preset: str | None,
                     pipeline: Path | None, shard_size: int, max_tries: int) -> str:
    """Every option checked before anything is read; returns the preset to use."""
    if isinstance(factor, bool) or not isinstance(factor, (int, np.integer)) or factor < 1:
        raise SegprepError(f"bad --factor {factor!r}: must be an integer >= 1 (1 = resize only)")
    if backend not in BACKENDS:
        raise SegprepError(f"unknown augmentation backend {backend!r}; valid: {', '.join(BACKENDS)}")
    if aspect not in ASPECTS:
        raise SegprepError(f"unknown aspect handling {aspect!r}; valid: {', '.join(ASPECTS)}")
    if compression not in COMPRESSIONS:
        raise SegprepError(f"unknown compression {compression!r}; valid: {', '.join(COMPRESSIONS)}")
    if preset is not None and pipeline is not None:
        raise SegprepError("give either --preset or --pipeline, not both")
    preset = preset if preset is not None else "default"
    if preset not in PRESET_NAMES:
        raise SegprepError(f"unknown augmentation preset {preset!r}; valid: {', '.join(PRESET_NAMES)}")
    if shard_size < 1 or max_tries < 1:
        raise SegprepError("shard_size and max_tries must be >= 1")
    if pipeline is not None and backend != "albumentations":
        raise SegprepError(f"{pipeline}: --pipeline files are albumentations pipelines; they "
                           f"cannot run on the {backend} backend (use --backend albumentations)")
    return preset


def augment(manifest: Path | str, *, factor: int = 25, size: int | str | tuple[int, int] = 352,
            backend: str = "albumentations", preset: str | None = None,
            pipeline: Path | str | None = None, aspect: str = "resize", compression: str = "none",
            image_codec: str = "raw", seed: int = 0, workers: int | None = None, preview: int = 0,
            work: Path | str | None = None, force: bool = False, verify: bool = False,
            shard_size: int = SHARD_SIZE, max_tries: int = MAX_TRIES,
            progress: bool = True, executor: str = "local", scheduler: str | None = None) -> AugmentResult:
    """Augment the training split ``factor`` times and resize val/test, into
    ``WORK/shards/augment-*.h5`` and ``WORK/manifests/augment.csv``.

    ``WORK`` defaults to the input manifest's WORK (:func:`segprep.manifest.work_root`). ``preset`` (default
    ``"default"``) and ``pipeline`` (an albumentations JSON/YAML file) are exclusive.
    ``compression`` applies to the images (default none: on Kvasir-SEG at 352x352, lzf adds
    ~6 ms per image, more than the default preset's augmentation, to save ~20%); masks and ROIs
    are always gzip level 1 (``MASK_COMPRESSION``). ``image_codec`` ``png`` or ``jpeg:Q``
    stores each image encoded instead (the loader decodes it in its workers; figures in
    docs/AUGMENT.md, "Image codecs"); ``compression`` then does not apply. A rerun with the same options is a no-op
    while its shards are intact (``verify``: checked down to every checksum); damaged shards are
    recomputed. Other options over a finished run are an error unless ``force``.

    ``executor`` ``dask`` writes the shards from a Dask cluster's workers (``scheduler``: its
    address; None starts a LocalCluster of ``workers`` processes), with the same output.

    With ``workers`` > 1 the workers come from a fork server, which imports the calling script
    again: a script calling this at its top level needs ``if __name__ == "__main__":``.
    """
    started = time.perf_counter()
    manifest = Path(manifest)
    size = parse_size(size)
    pipeline = Path(pipeline) if pipeline is not None else None
    preset = _check_arguments(factor, backend, aspect, compression, preset, pipeline, shard_size,
                              max_tries)
    try:
        image_codec = parse_image_codec(image_codec)
    except ShardError as exc:
        raise SegprepError(str(exc)) from None
    pipeline_spec = pipeline_dict(pipeline) if pipeline is not None else None
    rows = read_manifest(manifest)
    work = Path(work) if work is not None else work_root(manifest.resolve())
    if (work / "manifests" / "augment.csv").resolve() == manifest.resolve():
        raise SegprepError(f"{manifest}: the input is the output augment.csv; pass the clean (or "
                           f"ingest) manifest, or another -o WORK")
    usable = source_rows(rows, manifest, "augment")
    if not (usable["split"] == "train").any():
        log.warning("%s: no training rows (not excluded): val/test are only resized", manifest)
    options = _options(manifest, factor=factor, size=size, backend=backend, preset=preset,
                       pipeline=pipeline, pipeline_spec=pipeline_spec, aspect=aspect,
                       compression=compression, seed=seed, shard_size=shard_size,
                       max_tries=max_tries, image_codec=image_codec)
    ensure_writable(work)
    _check_space(usable, factor, size, compression, work, image_codec)
    context = _Context(
        spec=BackendSpec(backend=backend, size=size, aspect=aspect, preset=preset,
                         pipeline=pipeline_spec),
        source_root=str(manifest.resolve().parent), shards_dir=str(work / "shards"),
        blocks_dir=str(work / "manifests" / BLOCKS_DIR),
        shard_prefix=Path(os.path.relpath((work / "shards").resolve(),
                                          (work / "manifests").resolve())).as_posix(),
        compression=compression, seed=seed, max_tries=max_tries, image_codec=image_codec)
    n_workers = max(1, int(workers)) if workers is not None else available_cpus()
    with WorkLock(work, "segprep augment"), executor_settings(executor, scheduler, shared_dir=work):
        result = _run(manifest, usable, len(rows) - len(usable), work, options, context, n_workers,
                      force, verify, progress, started)
    if preview:
        result.preview = _preview(result.manifest, work, preview)
    return result


BLOCKS_DIR = ".augment-shards"


def _reusable(tasks: list[ShardTask], blocks_dir: Path, shards_dir: Path, verify: bool
              ) -> dict[int, ShardOutcome]:
    """Outcomes of earlier runs whose shards are intact (``verify``: down to every checksum)."""
    outcomes = {}
    for task in tasks:
        saved = read_json(blocks_dir / f"{task.name}.json")
        if not isinstance(saved, dict) or saved.get("planned") != task.planned_ids():
            continue
        if saved["rows"]:
            checksums = ([(r["image_index"], r["image_sha1"], r["mask_sha1"]) for r in saved["rows"]]
                         if verify else None)
            problem = shard_problem(shards_dir / task.name, size=saved.get("size"),
                                    n=len(saved["rows"]), checksums=checksums)
            if problem is not None:
                log.warning("%s: %s; recomputing it", shards_dir / task.name, problem)
                continue
        outcomes[task.number] = ShardOutcome(task.number, task.name, saved["planned"], saved["rows"],
                                             saved["binarized"], [tuple(f) for f in saved["failed"]])
    return outcomes


def _run(manifest: Path, usable: pd.DataFrame, excluded: int, work: Path, options: dict,
         context: _Context, n_workers: int, force: bool, verify: bool, progress: bool,
         started: float) -> AugmentResult:
    """plan (shard tasks, reusing intact ones) -> work (the rest on the executor) -> publish."""
    manifests_dir, shards_dir = work / "manifests", work / "shards"
    record = StageRecord(manifests_dir / "augment.json", manifests_dir / "augment.csv")
    blocks_dir = manifests_dir / BLOCKS_DIR
    previous = record.read()
    record.refuse_other(previous, "options", options, force=force)
    if force or read_json(blocks_dir / "options.json") != options:
        shutil.rmtree(blocks_dir, ignore_errors=True)  # another run's (or --force): nothing to keep
    tasks = _plan(usable, options["factor"], options["shard_size"], manifest.resolve().parent,
                  manifests_dir.resolve())
    outcomes = _reusable(tasks, blocks_dir, shards_dir, verify)
    train_samples = int((usable["split"] == "train").sum())
    if record.intact(previous) and len(outcomes) == len(tasks):
        log.info("%s is up to date; nothing to do (--force redoes it)", record.manifest)
        return _up_to_date(record, previous, work, options, train_samples, excluded, n_workers,
                           started)
    rebuilt = len(tasks) - len(outcomes) if previous is not None else 0
    record.withdraw()
    blocks_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(blocks_dir / "options.json", options)
    todo = [task for task in tasks if task.number not in outcomes]
    if outcomes and todo:
        log.info("reusing %d of %d shards of an earlier run", len(outcomes), len(tasks))
    reused_rows = sum(len(outcomes[n].planned) for n in outcomes)
    computing = time.perf_counter()
    shards_dir.mkdir(parents=True, exist_ok=True)
    with progress_bar(total=sum(len(t.items) for t in tasks), initial=reused_rows, unit="sample",
                      desc="augment", enabled=progress) as bar:
        for outcome in _compute(todo, context, n_workers):
            outcomes[outcome.number] = outcome
            bar.update(len(outcome.planned))
    result = _publish([outcomes[task.number] for task in tasks], manifest, record, shards_dir,
                      options)
    computed_rows = sum(len(t.items) for t in tasks) - reused_rows
    compute_seconds = time.perf_counter() - computing
    result.update(work=work, train_samples=train_samples, seconds=time.perf_counter() - started,
                  samples_per_s=computed_rows / compute_seconds if compute_seconds > 0 else 0.0,
                  reused_shards=len(tasks) - len(todo), computed_rows=computed_rows,
                  excluded_not_carried=excluded, workers=min(n_workers, max(1, len(todo))),
                  rebuilt=rebuilt)
    log.info("wrote %d rows to %s in %.1f s", result["rows"], record.manifest, result["seconds"])
    return AugmentResult(**result)


def _compute(todo: list[ShardTask], context: _Context, n_workers: int) -> Iterator[ShardOutcome]:
    """The shard tasks on the executor, as they finish."""
    if not todo:
        return
    close_shards()  # no HDF5 handle crosses into the workers
    with make_executor(min(n_workers, len(todo)), _init_pool_worker, (context,),
                       preload=[__name__]) as pool:
        yield from pool.imap_unordered(_pool_process, todo)


def _up_to_date(record: StageRecord, previous: dict, work: Path, options: dict,
                train_samples: int, excluded: int, n_workers: int, started: float) -> AugmentResult:
    done = read_manifest(record.manifest, check_shards=False)
    shards = [work / "shards" / name for name in previous.get("shards", [])]
    return AugmentResult(
        manifest=record.manifest, work=work, rows=len(done), rows_per_split=_summary_counts(done),
        train_samples=train_samples, factor=options["factor"], shards=shards,
        bytes=sum(path.stat().st_size for path in shards),
        seconds=time.perf_counter() - started, samples_per_s=0.0, skipped=True,
        excluded_not_carried=excluded, fg_lost=int((done["fg_lost"] == "1").sum()),
        workers=n_workers, options=options)


def _publish(ordered: list[ShardOutcome], manifest: Path, record: StageRecord, shards_dir: Path,
             options: dict) -> dict:
    """The manifest last, then the record that makes a rerun a no-op; returns the result's
    fields that the outputs give."""
    out_rows = [row for outcome in ordered for row in outcome.rows]
    if not out_rows:
        raise SegprepError(f"{manifest}: no sample could be read; nothing written "
                           f"(first failure: {ordered[0].failed[0][1] if ordered[0].failed else '?'})")
    df = pd.DataFrame(out_rows)
    extras = [c for c in CARRIED_COLUMNS if c in df.columns]
    df = df[list(COLUMNS) + extras + list(LINEAGE_COLUMNS)]
    write_manifest(df, record.manifest)
    shard_names = sorted({outcome.name for outcome in ordered if outcome.rows})
    record.write(options=options, shards=shard_names, rows=len(df),
                 written=time.strftime("%Y-%m-%dT%H:%M:%S"))
    remove_stale(shards_dir, _SHARD_NAME, keep=set(shard_names).__contains__)
    binarized = sorted({sid for outcome in ordered for sid in outcome.binarized})
    if binarized:
        log.warning("%d masks had values above 1 (raw grey masks, as ingest stores them); "
                    "binarized at %d. `segprep clean` is the proper step before augment.",
                    len(binarized), BINARIZE_THRESHOLD)
    failed = list(dict.fromkeys(tuple(f) for outcome in ordered for f in outcome.failed))
    for sample_id, reason in failed:
        log.warning("%s: skipped, unreadable: %s", sample_id, reason)
    shards = [shards_dir / name for name in shard_names]
    return dict(manifest=record.manifest, rows=len(df), rows_per_split=_summary_counts(df),
                factor=options["factor"], shards=shards,
                bytes=sum(path.stat().st_size for path in shards), fg_lost=int(df["fg_lost"].sum()),
                binarized=len(binarized), failed=failed, options=options)


def _preview(out_manifest: Path, work: Path, n: int) -> Path:
    from segprep.augment.preview import write_preview
    return write_preview(out_manifest, work / "reports" / "augment" / "preview.png", n=n)
