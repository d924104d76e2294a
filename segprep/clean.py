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

from segprep.checks import CHECKS, checks, code_order
from segprep.checks.alignment import measure
from segprep.checks.duplicates import (Table, candidate_pairs, confirmed_pairs, leak_pairs,
                                       grey_thumbnail, image_thumbnail, mask_thumbnail,
                                       neighbours, tiny_thumbnail, verified_pairs)
from segprep.checks.findings import FINDING_COLUMNS, Finding
from segprep.checks.model import read_model_findings
from segprep.checks.ingested import carried, ingest_report_findings
from segprep.checks.mask import border_share, check_mask, is_thin
from segprep.checks.options import CleanOptions
from segprep.checks.repairs import binarize
from segprep.checks.source import SourceSample, has_negatives
from segprep.decisions import REVIEW_CODES, Decision, default_path, read_decisions
from segprep.errors import SegprepError
from segprep.hashing import array_sha1, image_hashes
from segprep.manifest import read_manifest, work_root, write_manifest
from segprep.report import render_panels, write_report, write_strip
from segprep.executor import available_cpus, executor_settings, make_executor
from segprep.shards import (ShardSequence, close_shards, read_image, read_mask, read_roi,
                            shard_length, shard_problem)
from segprep.stage import StageRecord, publish, rebase, remove_stale
from segprep.work import WorkLock

log = logging.getLogger(__name__)

STAGE = "clean"
MANIFEST_NAME = "clean.csv"
SHARD_PREFIX = "clean"
_SHARD_FILE = re.compile(rf"^{SHARD_PREFIX}-\d{{5}}\.h5(\.tmp)?$")

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
    measured = tuple(code for code, check in CHECKS.items() if check.scope != "ingest")
    findings = carried(row, input_name, measured,
                       {code: check.severity for code, check in CHECKS.items()})
    findings += [f for f in (check.measure(row) for check in checks("row")) if f is not None]
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
        judged = index[~excluded[index]]
        for check in checks("source"):
            found = check.measure(samples, judged, source, near, opts)
            for i, finding in found:
                findings[i].append(finding)
            if check.explains_others:  # e.g. an inverted mask's area and placement say nothing
                judged = np.setdiff1d(judged, [i for i, _ in found])
    leaks: list[tuple[str, Finding]] = []
    for check in checks("pairs"):
        if check.measure is None:
            continue
        # samples excluded so far (empty, duplicate copies...) take no part in what follows
        for sid, finding in check.measure(table, pairs, ~excluded_now(), opts):
            findings[position[sid]].append(finding)
            leaks += [(sid, finding)] if finding.code == "leakage" else []
    return findings, leak_pairs(leaks, table), notes


# ----------------------------------------------------------------------------- the stage

def _fingerprint(manifest: Path, opts: CleanOptions, decisions: Path | None = None,
                 qc: Path | None = None) -> dict:
    out = {"input": str(manifest.resolve()),
           "input_sha1": hashlib.sha1(manifest.read_bytes()).hexdigest(),
           "options": opts.as_dict()}
    # only where given: a run from before these inputs existed stays the same run
    if decisions is not None:
        out["decisions_sha1"] = hashlib.sha1(decisions.read_bytes()).hexdigest()
    if qc is not None:
        out["qc_sha1"] = hashlib.sha1(qc.read_bytes()).hexdigest()
    return out


# Codes that make a sample unusable whatever a person says: no pixels, or no mask that fits.
_UNUSABLE = {"size_mismatch"}


def _apply_decisions(out: pd.DataFrame, findings: list[list[Finding]],
                     decisions: dict[str, Decision]) -> list[str]:
    """A person's decisions over clean's verdicts (see :mod:`segprep.decisions`); returns notes."""
    notes: list[str] = []
    unusable = _UNUSABLE | {code for code, check in CHECKS.items() if check.scope == "ingest"}
    position = {sample_id: i for i, sample_id in enumerate(out["sample_id"])}
    unknown = [sid for sid in decisions if sid not in position]
    statuses, issues = list(out["status"]), list(out["issues"])
    refused = []
    for sample_id, decision in decisions.items():
        i = position.get(sample_id)
        if i is None:
            continue
        codes = [c for c in issues[i].split(";") if c]
        if decision.decision == "exclude":
            statuses[i] = "excluded"
        elif decision.decision == "keep" and statuses[i] == "excluded":
            if any(code in unusable for code in codes) or any(
                    f.action == "excluded" and f.code in unusable for f in findings[i]):
                refused.append(sample_id)
                continue
            statuses[i] = "repaired" if any(f.action == "repaired" for f in findings[i]) else "ok"
        issues[i] = ";".join(codes + [REVIEW_CODES[decision.decision]])
    out["status"], out["issues"] = statuses, issues
    applied = len(decisions) - len(unknown) - len(refused)
    notes.append(f"{applied} review decision(s) applied")
    if refused:
        notes.append(f"{len(refused)} 'keep' decision(s) refused: the sample cannot be used "
                     f"(e.g. {refused[0]}: unreadable or its mask does not fit the image)")
    if unknown:
        notes.append(f"{len(unknown)} decision(s) name samples not in the manifest (e.g. "
                     f"{unknown[0]}); ignored")
    return notes


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
          progress: bool = True, executor: str = "local", scheduler: str | None = None,
          decisions: Path | None = None, qc: Path | None = None) -> CleanResult:
    """Run the clean stage on ``manifest``; see the module docstring for what it writes.

    ``work`` defaults to the manifest's WORK folder (the parent of its ``manifests/``).
    A finished run with the same input and options is a no-op while its outputs are intact
    (``verify``: down to every mask's checksum); otherwise it runs again. Other options or
    another input over a finished run are an error unless ``force``. ``decisions``: a
    person's review decisions (:mod:`segprep.decisions`), applied over clean's verdicts; default
    ``WORK/reviews/decisions.csv`` when it exists. ``qc``: ``segtrain qc``'s findings.csv, whose
    findings are added to the rows (flagged, never excluding). ``executor`` ``dask``
    (``scheduler``: a Dask scheduler's address, None for a LocalCluster) checks the samples on a
    Dask cluster, with the same output.
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
    if decisions is None and default_path(work).exists():
        decisions = default_path(work)
    if decisions is not None and not Path(decisions).is_file():
        raise SegprepError(f"{decisions}: decisions file not found")
    reviewed = read_decisions(Path(decisions)) if decisions is not None else {}
    model_findings = read_model_findings(Path(qc)) if qc is not None else {}
    fingerprint = _fingerprint(manifest, opts, Path(decisions) if decisions is not None else None,
                               Path(qc) if qc is not None else None)
    record = StageRecord(report_dir / "run.json", out_manifest)
    with WorkLock(work, "segprep clean"), executor_settings(executor, scheduler, shared_dir=work):
        previous = record.read()
        if previous is not None and not force:
            _refuse_other_run(record, previous, fingerprint)
            problem = _outputs_problem(record, previous, verify)
            changed = _changed_reviews(previous.get("fingerprint") or {}, fingerprint)
            if problem is None and changed is None:
                log.info("%s is up to date; nothing to do (--force to redo)", out_manifest)
                return _skipped(result, previous, started)
            log.warning("%s: %s; cleaning again", out_manifest, problem or changed)
            result.rebuilt = problem is not None
        staging = work / "shards" / f".clean-staging-{os.getpid()}"
        report_staging = work / "reports" / f".clean-staging-{os.getpid()}"
        try:
            return _run(df, manifest, work, opts, workers, progress, staging, report_staging,
                        result, record, fingerprint, started, reviewed, model_findings)
        finally:
            close_shards()
            shutil.rmtree(staging, ignore_errors=True)
            shutil.rmtree(report_staging, ignore_errors=True)


def _changed_reviews(old: dict, new: dict) -> str | None:
    """What changed among the judgements clean applies over its own (a person's decisions, a
    model's findings) since the finished run; None when nothing did. Not another run: the same
    input and options, to be applied again."""
    for key, what in (("decisions_sha1", "the review decisions"), ("qc_sha1", "the QC findings")):
        if old.get(key) != new.get(key):
            return f"{what} changed"
    return None


def _refuse_other_run(record: StageRecord, previous: dict, fingerprint: dict) -> None:
    old = previous.get("fingerprint") or {}
    if (old.get("input"), old.get("input_sha1")) != (fingerprint["input"], fingerprint["input_sha1"]):
        then = " as it was then" if old.get("input") == fingerprint["input"] else ""
        raise SegprepError(f"{record.manifest} exists from a run on another input "
                           f"({old.get('input')}{then}); pass --force to replace it")
    record.refuse_other(old, "options", fingerprint["options"], force=False)


def _outputs_problem(record: StageRecord, previous: dict, verify: bool) -> str | None:
    """Why the outputs of the finished run recorded in ``previous`` are not intact, or None."""
    if not record.intact(previous):
        return "the manifest differs from the one written"
    shards = previous.get("summary", {}).get("shard_records", [])
    if not shards:
        return "no record of its shards"
    checksums: dict[str, list] = {}
    if verify:
        written = read_manifest(record.manifest, check_shards=False)
        for row in written.itertuples():
            checksums.setdefault(Path(row.mask_shard).name, []).append(
                (int(row.mask_index), "", row.mask_sha1))
    folder = record.manifest.parent.parent / "shards"
    for shard in shards:
        problem = shard_problem(folder / shard["name"], size=shard["size"], n=shard["n"],
                                checksums=checksums.get(shard["name"]) if verify else None)
        if problem is not None:
            return f"{shard['name']}: {problem}"
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


#: what a worker needs of a manifest row; the rest stays in the main process
WORKER_COLUMNS = ("sample_id", "image_shard", "image_index", "mask_shard", "mask_index", "status",
                  "issues", "fg_fraction", "image_sha1", "phash", "phash256", "has_roi",
                  "mask_path", "mask_format", "extra_mask_paths", "decode_warnings")


def _run(df: pd.DataFrame, manifest: Path, work: Path, opts: CleanOptions, workers: int | None,
         progress: bool, staging: Path, report_staging: Path, result: CleanResult,
         record: StageRecord, fingerprint: dict, started: float,
         reviewed: dict[str, Decision] | None = None,
         model_findings: dict[str, list[Finding]] | None = None) -> CleanResult:
    """plan (tasks) -> work (per-sample checks on the executor, then the manifest checks) ->
    the new rows, findings and report, staged -> publish."""
    input_folder = manifest.parent
    input_excluded = (df["status"] == "excluded").to_numpy()
    tasks = [{**{k: row.get(k, "") for k in WORKER_COLUMNS}, "_position": position}
             for position, row in enumerate(df.to_dict("records"))]
    workers = min(max(1, workers or available_cpus()), max(1, len(tasks)))
    thumbs = report_staging / "thumbs"
    thumbs.mkdir(parents=True, exist_ok=True)
    close_shards()  # handles opened while validating must not cross into the workers
    timings: dict[str, float] = {}
    clock = time.perf_counter()
    with make_executor(workers, _init_worker, (input_folder, opts, manifest.name, thumbs),
                       preload=[__name__]) as pool:
        with ShardSequence(staging, SHARD_PREFIX, STAGE) as sequence:
            results, placements = _check_samples(pool, tasks, sequence, progress)
            timings["samples"], clock = time.perf_counter() - clock, time.perf_counter()
            findings, leak_pairs, result.notes = manifest_findings(
                df, results, [r.findings for r in results], input_excluded, opts)
            _repair_inverted(findings, results, placements, sequence, input_folder, tasks, opts,
                             manifest.name)
            if model_findings:
                for i, sample_id in enumerate(df["sample_id"]):
                    findings[i] += model_findings.get(sample_id, [])
                result.notes.append(f"{sum(map(len, model_findings.values()))} model finding(s) "
                                    f"added (flagged) from the QC findings")
        timings["manifest"], clock = time.perf_counter() - clock, time.perf_counter()
        out = _output_rows(df, findings, results, placements, input_excluded, input_folder, work)
        if reviewed:
            result.notes += _apply_decisions(out, findings, reviewed)
        findings_df, extra = _findings_table(df, findings, work_root(manifest))
        report_staging.mkdir(parents=True, exist_ok=True)
        findings_df.to_csv(report_staging / "findings.csv", index=False, lineterminator="\n")
        staged = {Path(p).name: Path(p) for p in sequence.written}
        result.counts, result.by_source = _summary_counts(findings_df), _by_source(findings_df)
        write_report(report_staging, df, input_folder, [(staged[n], i) for n, i in placements],
                     findings, list(out["status"]), extra, result.counts, leak_pairs,
                     threshold=opts.threshold, pool=pool if workers > 1 else None,
                     rendered={i: r.strip for i, r in enumerate(results) if r.strip})
        timings["report"], clock = time.perf_counter() - clock, time.perf_counter()
    result.leakage = leak_pairs
    _publish(out, sequence.written, report_staging, result, record, fingerprint)
    timings["publish"] = time.perf_counter() - clock
    result.timings = {k: round(v, 3) for k, v in timings.items()}
    result.seconds = time.perf_counter() - started
    # the summary in run.json keeps its timings: rewrite the record with them
    record.write(fingerprint=fingerprint, summary=result.to_json())
    log.info("clean: %d samples (%d ok, %d repaired, %d excluded) in %.1f s -> %s",
             result.n_samples, result.n_ok, result.n_repaired, result.n_excluded,
             result.seconds, result.manifest_path)
    return result


def _check_samples(pool, tasks: list[dict], sequence: ShardSequence, progress: bool
                   ) -> tuple[list[SampleResult], list[tuple[str, int]]]:
    """Every sample's mask checks on the executor, in manifest order; each clean mask goes
    into the staged shards as it arrives (memory stays flat)."""
    results: list[SampleResult] = []
    placements: list[tuple[str, int]] = []
    chunksize = max(1, min(16, len(tasks) // (4 * getattr(pool, "workers", 1))))
    for sample in progress_bar(pool.imap(_work, tasks, chunksize=chunksize), total=len(tasks),
                               desc="clean", unit="sample", enabled=progress):
        placements.append(sequence.add(sample_id=tasks[sample.position]["sample_id"],
                                       mask=sample.mask))
        sample.mask = None
        results.append(sample)
    return results, placements


def _status(input_excluded: bool, found: list[Finding]) -> tuple[str, str]:
    """A row's status and issues (its codes in check order; notes are not issues)."""
    codes = list(dict.fromkeys(f.code for f in sorted(found, key=lambda f: code_order(f.code))
                               if f.action != "noted"))
    if input_excluded or any(f.action == "excluded" for f in found):
        status = "excluded"
    elif any(f.action == "repaired" for f in found):
        status = "repaired"
    else:
        status = "ok"
    return status, ";".join(codes)


def _output_rows(df: pd.DataFrame, findings: list[list[Finding]], results: list[SampleResult],
                 placements: list[tuple[str, int]], input_excluded: np.ndarray,
                 input_folder: Path, work: Path) -> pd.DataFrame:
    """The input's rows with the clean masks, statuses and issues, paths relative to
    WORK/manifests."""
    out = df.copy()
    manifests = work / "manifests"
    out["status"], out["issues"] = zip(*[_status(bool(input_excluded[i]), findings[i])
                                         for i in range(len(df))]) if len(df) else ([], [])
    out["mask_shard"] = [f"../shards/{name}" for name, _ in placements]
    out["mask_index"] = [index for _, index in placements]
    out["mask_sha1"] = [r.mask_sha1 for r in results]
    out["fg_fraction"] = [round(r.fg_fraction, 6) for r in results]
    image_shards = _place_image_shards(df, input_folder, work)
    out["image_shard"] = [image_shards[s] for s in df["image_shard"]]
    for column in ("image_path", "mask_path", "roi_path"):
        if column in out.columns:
            out[column] = [rebase(v, input_folder, manifests) for v in df[column]]
    if "image_sha1" in out.columns or any(r.image_sha1 for r in results):
        out["image_sha1"] = [r.image_sha1 for r in results]
    return out


def _findings_table(df: pd.DataFrame, findings: list[list[Finding]], work: Path
                    ) -> tuple[pd.DataFrame, list]:
    """One row per finding: the manifest's rows in order, then the samples ingest could not
    read (``extra``, also returned for the report)."""
    rows = [f.row(sid) for sid, found in zip(df["sample_id"], findings) for f in found]
    extra = ingest_report_findings(work)
    rows += [f.row(sid) for sid, _, f in extra]
    return pd.DataFrame(rows, columns=list(FINDING_COLUMNS)), extra


def _publish(out: pd.DataFrame, staged: list[str], report_staging: Path, result: CleanResult,
             record: StageRecord, fingerprint: dict) -> None:
    """Shards, then the report, then the manifest, then the record, last; then the shards of an
    earlier run that nothing names any more."""
    record.withdraw()
    close_shards()
    shard_dir = result.work / "shards"
    result.shards = publish(staged, shard_dir)
    report_dir = result.work / "reports" / "clean"
    if report_dir.exists():
        shutil.rmtree(report_dir)
    report_dir.parent.mkdir(parents=True, exist_ok=True)
    os.replace(report_staging, report_dir)
    result.n_samples = len(out)
    for status in ("ok", "repaired", "excluded"):
        setattr(result, f"n_{status}", int((out["status"] == status).sum()))
    write_manifest(out, result.manifest_path)
    named = {p.name for p in result.shards}
    remove_stale(shard_dir, _SHARD_FILE, keep=named.__contains__)
