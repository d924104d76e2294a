"""Samples/s of ``segprep clean`` per worker, with every check on, and where its time goes.

Input: ``segprep synth kvasir-seg`` at --size (default 512x512; noisy masks, so repairs and
findings happen as on real data) ingested once, or a real dataset folder (--data). Clean then
runs with 1 worker and with all usable cores, default options (every registered check, the
report with its thumbnails), --repeat times each, interleaved; the median counts.

``--breakdown`` runs clean once more in this process with 1 worker, each step of the
per-sample path and each registered mask check wrapped in a timer: ms per sample of each, and
the stage's own phase timings (per-sample work, manifest-wide checks, report, publish).

    .venv/bin/python benchmarks/clean_throughput.py                       # synthetic, 200 at 512 px
    .venv/bin/python benchmarks/clean_throughput.py --breakdown
    .venv/bin/python benchmarks/clean_throughput.py --data /work/shared/data/Kvasir-SEG --breakdown

Target: >= 100 samples/s per worker at 512 px.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from common import dataset, step_timers, timed
from segprep.clean import clean
from segprep.ingest import ingest
from segprep.shards import close_shards
from segprep.executor import available_cpus


def run_clean(manifest: Path, work: Path, workers: int) -> tuple[float, dict]:
    shutil.rmtree(work, ignore_errors=True)
    started = time.perf_counter()
    result = clean(manifest, work=work, workers=workers, progress=False)
    close_shards()
    return time.perf_counter() - started, result.timings


def breakdown(manifest: Path, work: Path) -> tuple[list[tuple[str, float]], dict, int]:
    """ms per sample of each step of clean's per-sample path (1 worker, this process)."""
    from segprep import clean as clean_module
    from segprep.checks import registry

    steps = [(clean_module, "process_sample", "per-sample path, all of it"),
             (clean_module, "read_image", "read the image (decode a kept JPEG/PNG)"),
             (clean_module, "read_mask", "read the mask"),
             (clean_module, "check_mask", "mask checks and repairs, all of them"),
             (clean_module, "measure", "placement measures (ring, edge, colour)"),
             (clean_module, "grey_thumbnail", "thumbnails for duplicates and the report"),
             (clean_module, "render_panels", "report strips of flagged samples (draw)"),
             (clean_module, "write_strip", "report strips of flagged samples (write)")]
    with step_timers(steps) as spent, contextlib.ExitStack() as undo:
        mask_checks = [c for c in registry.CHECKS.values() if c.scope == "mask" and c.measure]
        for check in mask_checks:
            registry.CHECKS[check.code] = registry.Check(**{
                **check.__dict__, "measure": timed(check.measure, f"  check {check.code}", spent)})
            undo.callback(registry.CHECKS.__setitem__, check.code, check)
        shutil.rmtree(work, ignore_errors=True)
        result = clean(manifest, work=work, workers=1, progress=False)
        close_shards()
    n = result.n_samples
    rows = [(key, spent[key] / n) for _, _, key in steps]
    rows += sorted(((k, v / n) for k, v in spent.items() if k.startswith("  check")),
                   key=lambda kv: -kv[1])
    return rows, result.timings, n


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, help="a dataset folder (any layout); default: synthetic")
    parser.add_argument("--n", type=int, default=200, help="synthetic samples (without --data)")
    parser.add_argument("--size", type=int, default=512, help="synthetic image side (without --data)")
    parser.add_argument("--repeat", type=int, default=3, help="the median of this many runs")
    parser.add_argument("--breakdown", action="store_true", help="also time each step (ms/sample)")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="segprep-clean-bench-"))
    try:
        data = dataset(args.data, tmp, args.n, args.size, noise=0.3)
        if data is None:
            return 0
        ingested = ingest([data], tmp / "work", workers=available_cpus())
        manifest = ingested.manifest_path
        close_shards()
        n = ingested.n_samples
        cores = available_cpus()
        counts = sorted({1, cores})
        walls: dict[int, list[float]] = {w: [] for w in counts}
        phases: dict[int, dict] = {}
        load_before = os.getloadavg()[0]
        for _ in range(args.repeat):
            for w in counts:
                seconds, timings = run_clean(manifest, tmp / f"clean-{w}", w)
                walls[w].append(seconds)
                phases[w] = timings
        print(f"data: {data} ({n} samples); load average {load_before:.2f} before, "
              f"{os.getloadavg()[0]:.2f} after ({os.cpu_count()} cores; median of {args.repeat})")
        for w in counts:
            wall = float(np.median(walls[w]))
            print(f"clean, {w} worker(s): {n / wall:7.1f} samples/s = {n / wall / w:6.1f} per worker "
                  f"(target >= 100); phases (s): {phases[w]}")
        if args.breakdown:
            rows, timings, n = breakdown(manifest, tmp / "clean-breakdown")
            print(f"\nper-sample CPU path, 1 worker in this process ({n} samples); phases (s): {timings}")
            print("| step | ms per sample |")
            print("|---|---:|")
            for key, seconds in rows:
                print(f"| {key} | {seconds * 1e3:.3f} |")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
