"""`segprep clean`: find noisy masks, repair what can be repaired, exclude what is certainly
unusable, flag the rest, show why.

Reads a manifest (ingest.csv or any later one) and writes, under WORK:

* ``shards/clean-*.h5``: every sample's mask as class indices (uint8 0/1), masks only; the
  images stay in the shards the input names;
* ``reports/clean/findings.csv``: one row per finding (sample_id, code, severity, value,
  action, message, partner);
* ``reports/clean/index.html`` and ``thumbs/``: every flagged sample, for a person to judge;
* ``manifests/clean.csv``: the input's rows with new mask_shard/mask_index/mask_sha1,
  fg_fraction, status and issues, written last. Excluded rows stay, with their codes.

Exclusion policy (docs/CLEAN.md): only what is certain is excluded (unreadable, missing, size
mismatch, exact duplicate, empty where the source has no empty images); whatever a heuristic
threshold decides is flagged, and repaired only where the repair is certain; ``--strict``
also excludes the flagged heuristics.

The work happens in two passes. Per sample (in parallel, in manifest order): binarize, the
mask checks and repairs (:func:`segprep.checks.mask.check_mask`), the appearance
measurements (:func:`segprep.checks.alignment.measure`), thumbnails for the pair checks, and
the report strip of a sample with a finding. Over the manifest: the source checks
(:mod:`segprep.checks.source`: inverted, misaligned, area_outlier, negatives), duplicates,
near-duplicate conflicts and leakage. Codes and options: docs/CLEAN.md.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from segprep.progress import progress as progress_bar

from segprep.checks import CODES, code_order
from segprep.checks.alignment import measure
from segprep.checks.duplicates import (Table, candidate_pairs, confirmed_pairs, find_duplicates,
                                       find_leakage, find_near_duplicate_conflicts,
                                       grey_thumbnail, image_thumbnail, mask_thumbnail,
                                       neighbours, tiny_thumbnail, verified_pairs)
from segprep.checks.findings import FINDING_COLUMNS, Finding
from segprep.checks.ingested import carried, decoder_warning, ingest_report_findings, merged_masks
from segprep.checks.mask import border_share, check_mask, is_thin
from segprep.checks.options import CleanOptions
from segprep.checks.repairs import binarize
from segprep.checks.source import (SourceSample, find_area_outliers, find_inverted,
                                   find_misaligned, has_negatives)
from segprep.errors import SegprepError
from segprep.hashing import array_sha1, image_hashes
from segprep.manifest import read_manifest, work_root, write_manifest
from segprep.report import render_panels, write_report, write_strip
from segprep.executor import Pool, available_cpus
from segprep.shards import (ShardSequence, close_shards, read_image, read_mask, read_roi,
                            shard_length, shard_problem)
from segprep.work import WorkLock, atomic_write_json, read_json

log = logging.getLogger(__name__)

STAGE = "clean"
MANIFEST_NAME = "clean.csv"
SHARD_PREFIX = "clean"
# Codes clean measures itself; any other code on an input row (size_mismatch from ingest,
# a code a user added) is carried over as it is.
MEASURED = ("nonbinary", "inverted", "speckle", "holes", "empty", "outside_roi", "misaligned",
            "area_outlier", "duplicate", "conflict", "near_duplicate_conflict", "leakage",
            "merged_masks", "decoder_warning")


@dataclass
class CleanResult:
    """What a clean run wrote, and its summary."""

    work: Path
    manifest_path: Path
    findings_path: Path
    report_path: Path
    n_samples: int = 0
    n_ok: int = 0
    n_repaired: int = 0
    n_excluded: int = 0
    counts: pd.DataFrame = field(default_factory=pd.DataFrame)  # code, severity, found, repaired, excluded, flagged
    by_source: list[dict] = field(default_factory=list)  # source, action -> {code: samples}
    notes: list[str] = field(default_factory=list)
    leakage: list[tuple[str, str, str, str, int]] = field(default_factory=list)
    shards: list[Path] = field(default_factory=list)
    seconds: float = 0.0
    timings: dict = field(default_factory=dict)  # seconds per phase: samples, manifest, report, publish
    skipped: bool = False   # a finished run with the same input and options: nothing done
    rebuilt: bool = False   # ... whose outputs were damaged: run again

    def summary(self, max_pairs: int = 20) -> str:
        """The printed summary: per code found/repaired/excluded/flagged, what was done per
        source, the status counts, leakage as an error with its pairs, where the outputs went
        and the time."""
        lines = []
        if self.skipped:
            lines.append(f"clean: nothing changed since the last run (use --force to redo); "
                         f"{self.manifest_path}")
        if self.rebuilt:
            lines.append("clean: the finished run's outputs were damaged; cleaned again")
        lines.append(f"{'code':<26}{'severity':>9}{'found':>7}{'repaired':>10}{'excluded':>10}{'flagged':>9}")
        for row in self.counts.to_dict("records"):
            lines.append(f"{row['code']:<26}{row['severity']:>9}{row['found']:>7}{row['repaired']:>10}"
                         f"{row['excluded']:>10}{row['flagged']:>9}")
        if self.counts.empty:
            lines.append("(no findings)")
        for entry in self.by_source:
            parts = []
            for action in ("excluded", "repaired", "flagged"):
                codes = entry.get(action, {})
                total = entry.get(f"n_{action}", 0)
                detail = ", ".join(f"{code} {n}" for code, n in codes.items())
                parts.append(f"{action} {total}" + (f" ({detail})" if detail else ""))
            lines.append(f"{entry['source']}: " + "; ".join(parts))
        lines.extend(self.notes)
        lines.append(f"{self.n_samples} samples: {self.n_ok} ok, {self.n_repaired} repaired, "
                     f"{self.n_excluded} excluded")
        if self.leakage:
            lines.append(f"ERROR leakage: {len(self.leakage)} pair(s) of near-identical images in "
                         f"different splits (test scores would be measured on what training saw):")
            for a, split_a, b, split_b, distance in self.leakage[:max_pairs]:
                lines.append(f"  {a} ({split_a})  <->  {b} ({split_b})  phash distance {distance}")
            if len(self.leakage) > max_pairs:
                lines.append(f"  ... and {len(self.leakage) - max_pairs} more (code leakage in findings.csv)")
        lines.append(f"manifest: {self.manifest_path}")
        lines.append(f"masks:    {len(self.shards)} shard(s) in {self.work / 'shards'} (clean-*.h5)")
        lines.append(f"findings: {self.findings_path}")
        lines.append(f"report:   {self.report_path}")
        lines.append(f"time:     {self.seconds:.1f} s")
        return "\n".join(lines)

    def to_json(self) -> dict:
        return {"n_samples": self.n_samples, "n_ok": self.n_ok, "n_repaired": self.n_repaired,
                "n_excluded": self.n_excluded, "counts": self.counts.to_dict("records"),
                "by_source": self.by_source, "notes": self.notes,
                "leakage": [list(pair) for pair in self.leakage],
                "shards": [p.name for p in self.shards],
                "shard_records": [{"name": p.name, "size": p.stat().st_size,
                                   "n": shard_length(p)} for p in self.shards],
                "seconds": round(self.seconds, 3)}


@dataclass
class SampleResult:
    """One sample after the per-sample pass (sent back from a worker)."""

    position: int
    mask: np.ndarray
    findings: list[Finding]
    source: SourceSample
    mask_sha1: str
    image_sha1: str
    phash: int | None
    phash256: int | None
    comparable: bool   # the mask can be compared with others (read, right size)
    mask_thumb: np.ndarray | None = None   # for duplicate / near-duplicate comparisons
    detail: np.ndarray | None = None       # image fine detail, to verify near-duplicates
    tiny: np.ndarray | None = None         # 16x16 grey, to propose near-duplicate candidates
    strip: dict | None = None              # report strip already written (flagged samples)

    @property
    def fg_fraction(self) -> float:
        return self.source.fg_fraction


# ----------------------------------------------------------------------------- per sample

def _mask_format(row: dict) -> str:
    """The mask file's format as ingest recorded it, else as its name says."""
    recorded = str(row.get("mask_format", "") or "")
    if recorded:
        return recorded
    suffix = Path(str(row.get("mask_path", ""))).suffix.lower().lstrip(".")
    return {"jpg": "jpeg", "tif": "tiff"}.get(suffix, suffix)


def process_sample(root: Path, row: dict, opts: CleanOptions, input_name: str = "input",
                   thumbs: Path | None = None, invert: bool = False) -> SampleResult:
    """Read one manifest row's sample, check and repair its mask, and measure what the
    manifest-level checks need. ``root`` is the input manifest's folder. With ``thumbs``,
    a sample with a finding gets its report strip drawn there now, while it is in memory.
    ``invert``: the mask was found inverted and is to be repaired (a second pass)."""
    image_shard = root / row["image_shard"]
    image = read_image(image_shard, int(row["image_index"]))
    raw = read_mask(root / row["mask_shard"], int(row["mask_index"]))
    # Ingest says which samples carry a field of view; asking the shard costs a lookup.
    has_roi = str(row.get("has_roi", "")) not in ("0", "False", "false")
    roi = read_roi(image_shard, int(row["image_index"])) if has_roi else None
    result = _check_sample(row, image, raw, roi, opts, input_name, invert)
    if thumbs is not None and any(f.severity != "info" for f in result.findings):
        strip, panels = render_panels(image, raw, result.mask, roi, opts.threshold)
        result.strip = write_strip(thumbs, row.get("_position", 0), strip, panels)
    return result


def _hashes(row: dict, image: np.ndarray) -> tuple[int, int | None]:
    """The image's 64- and 256-bit perceptual hashes, from the row where ingest recorded them."""
    h64, h256 = row.get("phash", ""), row.get("phash256", "")
    if h64 and h256:
        return int(h64, 16), int(h256, 16)
    computed = image_hashes(image)
    return (int(h64, 16) if h64 else computed[0]), computed[1]


def _check_sample(row: dict, image: np.ndarray, raw: np.ndarray, roi: np.ndarray | None,
                  opts: CleanOptions, input_name: str, invert: bool = False) -> SampleResult:
    findings = carried(row, input_name, MEASURED,
                       {code: info.severity for code, info in CODES.items()})
    findings += [f for f in (merged_masks(row), decoder_warning(row)) if f is not None]
    codes = {f.code for f in findings}

    image_sha1 = row.get("image_sha1") or array_sha1(image)
    hash64, hash256 = _hashes(row, image)
    small = grey_thumbnail(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY))
    position = row.get("_position", 0)
    if raw.shape != image.shape[:2]:
        binary = binarize(raw, opts.threshold)
        if "size_mismatch" not in codes:
            findings.append(Finding("size_mismatch", "error", 0.0,
                                    f"mask {raw.shape[0]}x{raw.shape[1]}, image "
                                    f"{image.shape[0]}x{image.shape[1]}", action="excluded"))
        fg = float(row["fg_fraction"])
        source = SourceSample(fg, 0.0, float("nan"), float("nan"), None, None, not binary.any())
        return SampleResult(position, binary, findings, source, array_sha1(binary), image_sha1,
                            hash64, hash256, comparable=False, detail=image_thumbnail(small, roi),
                            tiny=tiny_thumbnail(small))

    binary, mask_findings = check_mask(raw, roi, opts, mask_format=_mask_format(row), invert=invert)
    findings += mask_findings
    if roi is not None and roi.shape == binary.shape and roi.any():
        fg = float(binary[roi > 0].mean())
    else:
        fg = float(binary.mean())
    look = measure(image, binary, roi, thin=is_thin(binary, opts))
    source = SourceSample(fg, border_share(binary), look.ring, look.edge, look.colour_in,
                          look.colour_out, empty=not binary.any(), thin_edge=look.thin_edge)
    return SampleResult(
        position, binary, findings, source, array_sha1(binary), image_sha1, hash64, hash256,
        comparable=True, mask_thumb=mask_thumbnail(binary), detail=image_thumbnail(small, roi),
        tiny=tiny_thumbnail(small))


# Worker state, set once per process by the pool initializer.
_WORKER: dict = {}


def _init_worker(root: Path, opts: CleanOptions, input_name: str, thumbs: Path) -> None:
    _WORKER.update(root=root, opts=opts, input_name=input_name, thumbs=thumbs)


def _work(row: dict) -> SampleResult:
    return process_sample(_WORKER["root"], row, _WORKER["opts"], _WORKER["input_name"],
                          _WORKER["thumbs"])


# ----------------------------------------------------------------------------- whole manifest

def _source_detail(df: pd.DataFrame, results: list[SampleResult]) -> dict[int, np.ndarray]:
    """Each sample's fine-detail thumbnail minus the mean of its source's: what every image
    of a source shares (black corners, burned-in text, the field-of-view rim) says nothing
    about whether two images show the same scene."""
    out: dict[int, np.ndarray] = {}
    for _, index in df.groupby("source", sort=False).indices.items():
        have = [i for i in index if results[i].detail is not None]
        if not have:
            continue
        mean = np.mean([results[i].detail.astype(np.float32) for i in have], axis=0)
        for i in have:
            out[int(i)] = (results[i].detail.astype(np.float32) - mean).astype(np.float16)
    return out


def _severity_rank(findings: list[Finding]) -> tuple[int, int]:
    return (sum(f.severity == "error" for f in findings),
            sum(f.severity == "warning" for f in findings))


def _keep_negatives(df: pd.DataFrame, samples: list[SourceSample], findings: list[list[Finding]],
                    opts: CleanOptions) -> list[str]:
    """Empty masks of a source that has negative images (many empty masks) are kept, not
    excluded: the task has empty images. Returns a note per such source."""
    notes = []
    if opts.allow_empty:
        return notes
    for source, index in df.groupby("source", sort=True).indices.items():
        if not has_negatives(samples, index):
            continue
        kept = 0
        for i in index:
            for k, f in enumerate(findings[i]):
                if f.code == "empty" and f.action == "excluded":
                    findings[i][k] = Finding("empty", "info", f.value,
                                             "no foreground: a negative image (kept: its source "
                                             "has many)", action="kept")
                    kept += 1
        notes.append(f"{source}: {kept} empty masks ({kept / len(index):.0%} of the source) kept as "
                     f"negative images; --allow-empty says so for every source")
    return notes


def manifest_findings(df: pd.DataFrame, results: list[SampleResult],
                      per_sample: list[list[Finding]], input_excluded: np.ndarray,
                      opts: CleanOptions) -> tuple[list[list[Finding]], list[tuple], list[str]]:
    """Add the manifest-level findings to ``per_sample`` (a new list); returns it, the
    leakage pairs and notes for the summary."""
    findings = [list(f) for f in per_sample]
    samples = [r.source for r in results]
    notes = _keep_negatives(df, samples, findings, opts)

    def excluded_now() -> np.ndarray:
        return np.array([input_excluded[i] or any(f.action == "excluded" for f in findings[i])
                         for i in range(len(findings))], bool)

    ids = df["sample_id"].tolist()
    position = {sid: i for i, sid in enumerate(ids)}
    excluded = excluded_now()
    table = Table(
        ids=ids, splits=df["split"].tolist(),
        image_sha1=[r.image_sha1 for r in results],
        phash=np.array([r.phash or 0 for r in results], np.uint64),
        has_phash=np.array([r.phash is not None for r in results], bool),
        masks={i: r.mask_thumb for i, r in enumerate(results) if r.mask_thumb is not None},
        details=_source_detail(df, results),
        comparable=np.array([r.comparable and r.mask_thumb is not None for r in results], bool),
        rank=[(bool(excluded[i]),) + _severity_rank(findings[i]) + (i,) for i in range(len(ids))],
        groups=df["group"].tolist(),
        phash256=[r.phash256 for r in results],
    )
    tiny = np.stack([r.tiny for r in results]) if results else np.zeros((0, 1), np.float32)
    candidates = candidate_pairs(table, tiny, opts.phash_distance)
    pairs = verified_pairs(table, candidates, opts, confirmed=confirmed_pairs(table, candidates))
    near = neighbours(pairs, ~excluded)

    for source, index in df.groupby("source", sort=True).indices.items():
        usable = index[~excluded[index]]
        inverted = find_inverted(samples, usable, source, opts)
        # an inverted mask's area and placement are explained by the inversion
        upright = np.setdiff1d(usable, [i for i, _ in inverted])
        for i, finding in (inverted + find_misaligned(samples, upright, source, near, opts)
                           + find_area_outliers(samples, upright, source, opts)):
            findings[i].append(finding)
    for sid, finding in find_duplicates(table, opts):
        findings[position[sid]].append(finding)
    # Samples excluded so far (empty, duplicate copies...) take no part below.
    for sid, finding in find_near_duplicate_conflicts(table, pairs, ~excluded_now(), opts):
        findings[position[sid]].append(finding)
    leak_findings, leak_pairs = find_leakage(table, pairs, ~excluded_now())
    for sid, finding in leak_findings:
        findings[position[sid]].append(finding)
    return findings, leak_pairs, notes


# ----------------------------------------------------------------------------- the stage

def _fingerprint(manifest: Path, opts: CleanOptions) -> dict:
    return {"input": str(manifest.resolve()),
            "input_sha1": hashlib.sha1(manifest.read_bytes()).hexdigest(),
            "options": opts.as_dict()}


def _summary_counts(findings: pd.DataFrame) -> pd.DataFrame:
    """Per code: samples found, repaired, excluded and flagged (by the finding's action)."""
    columns = ["code", "severity", "found", "repaired", "excluded", "flagged"]
    if findings.empty:
        return pd.DataFrame(columns=columns)
    rows = []
    for code, group in findings.groupby("code", sort=False):
        rows.append({"code": code, "severity": group["severity"].iloc[0],
                     "found": group["sample_id"].nunique(),
                     "repaired": group.loc[group["action"] == "repaired", "sample_id"].nunique(),
                     "excluded": group.loc[group["action"] == "excluded", "sample_id"].nunique(),
                     "flagged": group.loc[group["action"] == "flagged", "sample_id"].nunique()})
    counts = pd.DataFrame(rows, columns=columns)
    return counts.sort_values("code", key=lambda s: s.map(code_order), kind="stable").reset_index(drop=True)


def _by_source(findings: pd.DataFrame) -> list[dict]:
    """Per source: how many samples were excluded, repaired and flagged, and by which codes."""
    out = []
    if findings.empty:
        return out
    source = findings["sample_id"].str.split("/", n=1).str[0]
    for name, group in findings.groupby(source, sort=True):
        entry: dict = {"source": name}
        for action in ("excluded", "repaired", "flagged"):
            chosen = group[group["action"] == action]
            entry[f"n_{action}"] = int(chosen["sample_id"].nunique())
            per_code = chosen.groupby("code")["sample_id"].nunique()
            entry[action] = {code: int(per_code[code]) for code in
                             sorted(per_code.index, key=code_order)}
        out.append(entry)
    return out


def _repair_inverted(findings: list[list[Finding]], results: list[SampleResult],
                     placements: list[tuple[str, int]], sequence: ShardSequence, root: Path,
                     tasks: list[dict], opts: CleanOptions, input_name: str) -> None:
    """Second pass over the masks the source checks found inverted with --repair-inverted: each
    is checked and repaired again with its classes swapped, and stored anew (few samples)."""
    for i, found in enumerate(findings):
        if not any(f.code == "inverted" and f.action == "repaired" for f in found):
            continue
        first_pass = results[i].findings
        again = process_sample(root, tasks[i], opts, input_name, invert=True)
        findings[i] = again.findings + [f for f in found if not any(f is g for g in first_pass)]
        placements[i] = sequence.add(sample_id=tasks[i]["sample_id"], mask=again.mask)
        again.mask = None
        results[i] = again


def _rebase(value: str, old_folder: Path, new_folder: Path) -> str:
    """A path relative to the input manifest's folder, made relative to the output's."""
    if not value:
        return value
    absolute = (old_folder / value).resolve()
    return Path(os.path.relpath(absolute, new_folder.resolve())).as_posix()


def _place_image_shards(df: pd.DataFrame, input_folder: Path, work: Path) -> dict[str, str]:
    """Image shard paths for the output manifest. Shards outside WORK (clean -o elsewhere)
    are hard-linked (or copied) into WORK/shards so the new manifest stays inside WORK."""
    mapping = {}
    manifests = work / "manifests"
    for shard in df["image_shard"].unique():
        source = (input_folder / shard).resolve()
        if source.is_relative_to(work.resolve()):
            mapping[shard] = Path(os.path.relpath(source, manifests.resolve())).as_posix()
            continue
        target = work / "shards" / source.name
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(source, target)
            except OSError:
                shutil.copy2(source, target)
        elif target.stat().st_size != source.stat().st_size:
            raise SegprepError(f"{target}: exists and differs from the input's image shard "
                               f"{source}; choose another -o WORK")
        mapping[shard] = f"../shards/{source.name}"
    return mapping


def clean(manifest: Path, work: Path | None = None, options: CleanOptions | None = None, *,
          workers: int | None = None, force: bool = False, verify: bool = False,
          progress: bool = True) -> CleanResult:
    """Run the clean stage on ``manifest``; see the module docstring for what it writes.

    ``work`` defaults to the manifest's WORK folder (the parent of its ``manifests/``).
    A finished run with the same input and options is a no-op while its outputs are intact
    (``verify``: down to every mask's checksum); otherwise it runs again. Other options or
    another input over a finished run are an error unless ``force``.
    """
    started = time.perf_counter()
    opts = (options or CleanOptions()).validate()
    manifest = Path(manifest)
    df = read_manifest(manifest)   # ManifestError names the file and the line
    work = Path(work) if work is not None else work_root(manifest)
    out_manifest = work / "manifests" / MANIFEST_NAME
    report_dir = work / "reports" / "clean"
    result = CleanResult(work, out_manifest, report_dir / "findings.csv", report_dir / "index.html")
    if out_manifest.resolve() == manifest.resolve():
        raise SegprepError(f"{manifest}: clean would overwrite its own input; copy it elsewhere "
                           f"or pass -o with another WORK folder")
    fingerprint = _fingerprint(manifest, opts)
    with WorkLock(work, "segprep clean"):
        previous = read_json(report_dir / "run.json") if out_manifest.exists() else None
        if isinstance(previous, dict) and not force:
            if previous.get("fingerprint") != fingerprint:
                raise SegprepError(f"{out_manifest} exists from a run with "
                                   f"{_differences(previous.get('fingerprint') or {}, fingerprint)}; "
                                   f"pass --force to replace it")
            problem = _outputs_problem(previous, out_manifest, verify)
            if problem is None:
                log.info("%s is up to date; nothing to do (--force to redo)", out_manifest)
                return _skipped(result, previous, started)
            log.warning("%s: %s; cleaning again", out_manifest, problem)
            result.rebuilt = True
        staging = work / "shards" / f".clean-staging-{os.getpid()}"
        report_staging = work / "reports" / f".clean-staging-{os.getpid()}"
        try:
            return _run(df, manifest, work, opts, workers, progress, staging, report_staging,
                        result, fingerprint, started)
        finally:
            close_shards()
            shutil.rmtree(staging, ignore_errors=True)
            shutil.rmtree(report_staging, ignore_errors=True)


def _differences(old: dict, new: dict) -> str:
    if old.get("input") != new.get("input") or old.get("input_sha1") != new.get("input_sha1"):
        return f"another input ({old.get('input')}{' as it was then' if old.get('input') == new.get('input') else ''})"
    old_options, new_options = old.get("options") or {}, new.get("options") or {}
    changed = [f"--{key.replace('_', '-')} {old_options.get(key)!r} -> {value!r}"
               for key, value in new_options.items() if old_options.get(key) != value]
    return "other options (" + ", ".join(changed) + ")" if changed else "other options"


def _outputs_problem(previous: dict, out_manifest: Path, verify: bool) -> str | None:
    """Why the outputs of the finished run recorded in ``previous`` are not intact, or None."""
    if previous.get("manifest_sha1") != _sha1_or_none(out_manifest):
        return "the manifest differs from the one written"
    shards = previous.get("summary", {}).get("shard_records", [])
    if not shards:
        return "no record of its shards"
    checksums: dict[str, list] = {}
    if verify:
        written = read_manifest(out_manifest, check_shards=False)
        for row in written.itertuples():
            checksums.setdefault(Path(row.mask_shard).name, []).append(
                (int(row.mask_index), "", row.mask_sha1))
    folder = out_manifest.parent.parent / "shards"
    for shard in shards:
        problem = shard_problem(folder / shard["name"], size=shard["size"], n=shard["n"],
                                checksums=checksums.get(shard["name"]) if verify else None)
        if problem is not None:
            return f"{shard['name']}: {problem}"
    return None


def _sha1_or_none(path: Path) -> str | None:
    try:
        return hashlib.sha1(path.read_bytes()).hexdigest()
    except OSError:
        return None


def _skipped(result: CleanResult, previous: dict, started: float) -> CleanResult:
    summary = previous.get("summary", {})
    result.skipped = True
    result.n_samples = summary.get("n_samples", 0)
    result.n_ok, result.n_repaired = summary.get("n_ok", 0), summary.get("n_repaired", 0)
    result.n_excluded = summary.get("n_excluded", 0)
    result.counts = pd.DataFrame(summary.get("counts", []))
    result.by_source, result.notes = summary.get("by_source", []), summary.get("notes", [])
    result.leakage = [tuple(p) for p in summary.get("leakage", [])]
    result.shards = [result.work / "shards" / name for name in summary.get("shards", [])]
    result.seconds = time.perf_counter() - started
    return result


def _run(df: pd.DataFrame, manifest: Path, work: Path, opts: CleanOptions, workers: int | None,
         progress: bool, staging: Path, report_staging: Path, result: CleanResult,
         fingerprint: dict, started: float) -> CleanResult:

    input_folder = manifest.parent
    input_excluded = (df["status"] == "excluded").to_numpy()
    rows = df.to_dict("records")
    for position, row in enumerate(rows):
        row["_position"] = position
    # Workers need only these columns; the rest stays in the main process.
    wanted = ("sample_id", "image_shard", "image_index", "mask_shard", "mask_index", "status",
              "issues", "fg_fraction", "image_sha1", "phash", "phash256", "has_roi", "mask_path",
              "mask_format", "extra_mask_paths", "decode_warnings", "_position")
    tasks = [{k: row.get(k, "") for k in wanted} for row in rows]
    workers = max(1, workers or available_cpus())
    workers = min(workers, max(1, len(tasks)))

    thumbs = report_staging / "thumbs"
    thumbs.mkdir(parents=True, exist_ok=True)
    close_shards()  # handles opened while validating must not cross a fork
    clock = time.perf_counter()
    timings: dict[str, float] = {}
    results: list[SampleResult] = []
    placements: list[tuple[str, int]] = []
    pool = Pool(workers, _init_worker, (input_folder, opts, manifest.name, thumbs),
                preload=[__name__])
    try:
        with ShardSequence(staging, SHARD_PREFIX, STAGE) as sequence:
            iterator = pool.imap(_work, tasks, chunksize=max(1, min(16, len(tasks) // (4 * workers))))
            for sample in progress_bar(iterator, total=len(tasks), desc="clean", unit="sample",
                                       enabled=progress):
                placements.append(sequence.add(sample_id=rows[sample.position]["sample_id"],
                                               mask=sample.mask))
                sample.mask = None  # the shard has it; keep memory flat
                results.append(sample)
            timings["samples"], clock = time.perf_counter() - clock, time.perf_counter()
            per_sample = [r.findings for r in results]
            findings, leak_pairs, result.notes = manifest_findings(df, results, per_sample,
                                                                   input_excluded, opts)
            _repair_inverted(findings, results, placements, sequence, input_folder, tasks, opts,
                             manifest.name)
        timings["manifest"], clock = time.perf_counter() - clock, time.perf_counter()

        # ---- the new manifest's rows
        new_shards = sequence.written
        image_shards = _place_image_shards(df, input_folder, work)
        out = df.copy()
        manifests = work / "manifests"
        statuses, issues = [], []
        for i, row in enumerate(rows):
            codes = []
            for f in sorted(findings[i], key=lambda f: code_order(f.code)):
                if f.action != "noted" and f.code not in codes:
                    codes.append(f.code)
            if input_excluded[i] or any(f.action == "excluded" for f in findings[i]):
                status = "excluded"
            elif any(f.action == "repaired" for f in findings[i]):
                status = "repaired"
            else:
                status = "ok"
            statuses.append(status)
            issues.append(";".join(codes))
        out["status"] = statuses
        out["issues"] = issues
        out["mask_shard"] = [f"../shards/{name}" for name, _ in placements]
        out["mask_index"] = [index for _, index in placements]
        out["mask_sha1"] = [r.mask_sha1 for r in results]
        out["fg_fraction"] = [round(r.fg_fraction, 6) for r in results]
        out["image_shard"] = [image_shards[s] for s in df["image_shard"]]
        if input_folder.resolve() != manifests.resolve():
            for column in ("image_path", "mask_path", "roi_path"):
                if column in out.columns:
                    out[column] = [_rebase(v, input_folder, manifests) for v in df[column]]
        if "image_sha1" in out.columns or any(r.image_sha1 for r in results):
            out["image_sha1"] = [r.image_sha1 for r in results]

        # ---- findings table (manifest rows in order, then the samples ingest could not read)
        finding_rows = []
        for i, row in enumerate(rows):
            for f in findings[i]:
                finding_rows.append(f.row(row["sample_id"]))
        extra = ingest_report_findings(work_root(manifest))
        for sid, _, f in extra:
            finding_rows.append(f.row(sid))
        findings_df = pd.DataFrame(finding_rows, columns=list(FINDING_COLUMNS))

        # ---- report (reads the input's raw masks and the staged clean masks)
        report_staging.mkdir(parents=True, exist_ok=True)
        findings_df.to_csv(report_staging / "findings.csv", index=False, lineterminator="\n")
        staged = {Path(p).name: Path(p) for p in new_shards}
        clean_masks = [(staged[name], index) for name, index in placements]
        counts = _summary_counts(findings_df)
        result.by_source = _by_source(findings_df)
        write_report(report_staging, df, input_folder, clean_masks, findings, statuses, extra,
                     counts, leak_pairs, threshold=opts.threshold, pool=pool if workers > 1 else None,
                     rendered={i: r.strip for i, r in enumerate(results) if r.strip})
        timings["report"], clock = time.perf_counter() - clock, time.perf_counter()
    finally:
        pool.close()

    # ---- publish: shards, then report, then the manifest last
    close_shards()
    shard_dir = work / "shards"
    final_shards = []
    for path in new_shards:
        target = shard_dir / Path(path).name
        os.replace(path, target)
        final_shards.append(target)
    report_dir = work / "reports" / "clean"
    if report_dir.exists():
        shutil.rmtree(report_dir)
    report_dir.parent.mkdir(parents=True, exist_ok=True)
    os.replace(report_staging, report_dir)

    result.n_samples = len(out)
    result.n_ok = int((out["status"] == "ok").sum())
    result.n_repaired = int((out["status"] == "repaired").sum())
    result.n_excluded = int((out["status"] == "excluded").sum())
    result.counts = counts
    result.leakage = leak_pairs
    result.shards = final_shards
    timings["publish"] = time.perf_counter() - clock
    result.timings = {k: round(v, 3) for k, v in timings.items()}
    result.seconds = time.perf_counter() - started
    write_manifest(out, result.manifest_path)
    # the record of a finished run, last: a rerun is a no-op only when it is there
    atomic_write_json(report_dir / "run.json", {
        "fingerprint": fingerprint, "manifest_sha1": _sha1_or_none(result.manifest_path),
        "summary": result.to_json()})
    # Shards of an earlier, longer run that the new manifest no longer names.
    named = {p.name for p in final_shards}
    for stale in shard_dir.glob(f"{SHARD_PREFIX}-*.h5"):
        if re.fullmatch(rf"{SHARD_PREFIX}-\d{{5}}\.h5", stale.name) and stale.name not in named:
            stale.unlink()
    log.info("clean: %d samples (%d ok, %d repaired, %d excluded) in %.1f s -> %s",
             result.n_samples, result.n_ok, result.n_repaired, result.n_excluded,
             result.seconds, result.manifest_path)
    return result
