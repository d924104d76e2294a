"""``make_dataset``: paint clean samples, inject the planned defects, write layout and truth."""

from __future__ import annotations

import logging
import shutil
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from segprep.errors import SegprepError
from segprep.progress import progress
from segprep.synth.defects import COPY_DEFECTS, INJECT, Context, Item
from segprep.synth.layouts import LAYOUT_SPECS, OWN_ENTRIES, Layout, write_item
from segprep.synth.painters import PAINTERS, Painted, finish_endoscope, paint_polyp_scene

log = logging.getLogger(__name__)

LAYOUTS: tuple[str, ...] = tuple(LAYOUT_SPECS)
# The codes each layout can carry (drive: no `holes`).
LAYOUT_DEFECTS: dict[str, tuple[str, ...]] = {name: s.defects for name, s in LAYOUT_SPECS.items()}
TRUTH_FILE = "synth_truth.csv"
GROUPS_FILE = "synth_groups.csv"
MIN_SIDE, MAX_SIDE = 48, 4096  # below 48 px, specks and holes no longer fit


@dataclass
class SynthResult:
    """What ``make_dataset`` wrote. ``truth`` has one row per defective sample."""

    root: Path
    layout: str
    n: int
    truth: pd.DataFrame   # stem, defect, details
    groups: pd.DataFrame  # stem, group (every sample)
    seconds: float = 0.0
    defect_counts: dict[str, int] = field(default_factory=dict)

    @property
    def truth_path(self) -> Path:
        return self.root / TRUTH_FILE

    @property
    def groups_path(self) -> Path:
        return self.root / GROUPS_FILE


def get_layout(name: str) -> Layout:
    if name not in LAYOUT_SPECS:
        raise SegprepError(f"unknown layout {name!r}; valid layouts: {', '.join(LAYOUTS)}")
    return LAYOUT_SPECS[name]


def _check_arguments(n: int, size: tuple[int, int], noise: float) -> None:
    if n < 1:
        raise SegprepError(f"--n must be at least 1, got {n}")
    if len(size) != 2 or not all(MIN_SIDE <= side <= MAX_SIDE for side in size):
        raise SegprepError(f"--size must be HxW with sides from {MIN_SIDE} to {MAX_SIDE}, "
                           f"got {size[0]}x{size[1]}")
    if not 0.0 <= noise <= 1.0:
        raise SegprepError(f"--noise is a fraction of samples from 0 to 1, got {noise}")


def prepare_output(out: Path, force: bool) -> None:
    """Refuse a non-empty OUT; with ``force``, replace only an earlier synth run's own output."""
    if out.exists() and not out.is_dir():
        raise SegprepError(f"{out} exists and is not a folder")
    if not out.exists() or not any(out.iterdir()):
        out.mkdir(parents=True, exist_ok=True)
        return
    if not force:
        raise SegprepError(f"{out} already holds files; choose a new or empty folder, "
                           "or pass --force to replace an earlier `segprep synth` output there")
    if not (out / TRUTH_FILE).exists():
        raise SegprepError(f"{out} holds files that `segprep synth` did not write (no "
                           f"{TRUTH_FILE}); refusing to replace them even with --force: "
                           "choose a new or empty folder")
    for name in OWN_ENTRIES:
        path = out / name
        if path.is_dir():
            log.warning("--force: removing earlier synth output %s", path)
            shutil.rmtree(path)
        elif path.exists():
            log.warning("--force: removing earlier synth output %s", path)
            path.unlink()


# ---------------------------------------------------------------------------------------
# planning


@dataclass
class Plan:
    codes: list[str | None]   # per sample: the injected defect, or None
    sources: dict[int, int]   # copy sample -> the sample it copies


def plan_defects(n: int, noise: float, codes: tuple[str, ...], rng: np.random.Generator) -> Plan:
    """round(noise * n) samples (halves up) get one defect each, cycling a shuffle of ``codes``.

    A copy (duplicate, near duplicate) needs a source that is itself no copy and keeps a
    readable image; clean samples are used first so the pair is unambiguous, and no sample
    is the source of two copies.
    """
    count = int(np.floor(noise * n + 0.5))
    order = [int(i) for i in rng.permutation(n)]
    chosen, untouched = order[:count], order[count:]
    cycle = [str(code) for code in rng.permutation(list(codes))]
    planned = [None] * n
    for j, index in enumerate(chosen):
        planned[index] = cycle[j % len(cycle)]

    sources: dict[int, int] = {}
    fallback = [i for i in chosen if planned[i] not in COPY_DEFECTS + ("corrupt_image",)]
    candidates = untouched + fallback
    for index in chosen:
        if planned[index] not in COPY_DEFECTS:
            continue
        free = [c for c in candidates if c != index and c not in sources.values()]
        if free:
            sources[index] = free[0]
        else:  # too few samples for a copy: give this one a defect of its own instead
            planned[index] = next(c for c in cycle if c not in COPY_DEFECTS)
    return Plan(planned, sources)


# ---------------------------------------------------------------------------------------
# painting


class SamplePainter:
    """Paints sample i from its own seed, any number of times, always the same.

    Video layouts cut consecutive frames from one larger scene per sequence, with a camera
    that drifts a pixel or two per frame, so neighbouring frames are near-duplicates.
    """

    def __init__(self, layout: Layout, size: tuple[int, int], n: int,
                 sample_seeds: list[np.random.SeedSequence],
                 scene_seed: np.random.SeedSequence) -> None:
        self.layout, self.size, self.n = layout, size, n
        self.sample_seeds = sample_seeds
        self.margin = max(2, round(0.025 * min(size)))
        self.sequence_of: list[int] = []
        self.offsets: list[tuple[int, int]] = []
        self.scene_seeds: list[np.random.SeedSequence] = []
        self._scenes: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        if layout.video:
            self._plan_sequences(scene_seed)

    def _plan_sequences(self, scene_seed: np.random.SeedSequence) -> None:
        """Sequences of 4-12 frames; each frame's crop offset is a small random walk."""
        rng = np.random.default_rng(scene_seed)
        m = self.margin
        while len(self.sequence_of) < self.n:
            sequence = len(self.scene_seeds)
            position = np.array([m, m])
            for _ in range(int(rng.integers(4, 13))):
                position = np.clip(position + rng.integers(-1, 2, size=2), 0, 2 * m)
                self.sequence_of.append(sequence)
                self.offsets.append((int(position[0]), int(position[1])))
            self.scene_seeds.append(scene_seed.spawn(1)[0])
        del self.sequence_of[self.n:], self.offsets[self.n:]

    def group(self, index: int, stem: str) -> str:
        return f"seq{self.sequence_of[index] + 1:02d}" if self.layout.video else stem

    def paint(self, index: int) -> Painted:
        rng = np.random.default_rng(self.sample_seeds[index])
        if not self.layout.video:
            return PAINTERS[self.layout.domain](rng, self.size)
        scene, scene_mask = self._scene_for(self.sequence_of[index])
        (y, x), (h, w) = self.offsets[index], self.size
        frame = finish_endoscope(scene[y:y + h, x:x + w], rng)
        return Painted(frame, scene_mask[y:y + h, x:x + w].copy())

    def _scene_for(self, sequence: int) -> tuple[np.ndarray, np.ndarray]:
        if sequence not in self._scenes:
            if len(self._scenes) >= 2:  # the current sequence and a copy's source are enough
                del self._scenes[next(iter(self._scenes))]
            h, w = self.size
            rng = np.random.default_rng(self.scene_seeds[sequence])
            m = self.margin
            self._scenes[sequence] = paint_polyp_scene(rng, (h + 2 * m, w + 2 * m))
        return self._scenes[sequence]

    def paint_unrelated(self, seed: np.random.SeedSequence) -> Painted:
        """A sample from no sequence at all (the other mask of a near-duplicate conflict)."""
        return PAINTERS[self.layout.domain](np.random.default_rng(seed), self.size)


# ---------------------------------------------------------------------------------------
# the whole dataset


def make_dataset(out: Path, layout: str, n: int = 20, size: tuple[int, int] = (128, 128),
                 noise: float = 0.0, seed: int = 0, force: bool = False) -> SynthResult:
    """Write a synthetic dataset in ``layout``'s real on-disk form, plus its truth files.

    ``OUT/synth_truth.csv`` (stem, defect, details) lists each injected defect;
    ``OUT/synth_groups.csv`` (stem, group) gives every sample's true leakage group (video
    sequence for cvc-clinicdb, else the sample itself; copies join their source's group).
    drive never gets ``holes`` (see ``Layout.defects``). The same arguments give the same bytes.
    """
    spec = get_layout(layout)
    size = (int(size[0]), int(size[1]))
    _check_arguments(n, size, noise)
    out = Path(out)
    prepare_output(out, force)
    started = time.perf_counter()

    root_seed = np.random.SeedSequence(seed)
    plan_seed, names_seed, scene_seed = root_seed.spawn(3)
    # Painting and defects draw from separate streams, so a sample's clean pixels do not
    # depend on --noise.
    per_sample = [s.spawn(3) for s in root_seed.spawn(n)]
    stems = spec.stems(n, np.random.default_rng(names_seed))
    painter = SamplePainter(spec, size, n, [p[0] for p in per_sample], scene_seed)
    plan = plan_defects(n, noise, spec.defects, np.random.default_rng(plan_seed))

    truth_rows, group_rows = [], []
    for index in progress(range(n), desc=f"synth {layout}", unit="sample"):
        item = Item.from_painted(painter.paint(index))
        group = painter.group(index, stems[index])
        code = plan.codes[index]
        if code is not None:
            source = plan.sources.get(index)
            other_seeds = per_sample[index][2].spawn(12)
            ctx = Context(
                rng=np.random.default_rng(per_sample[index][1]),
                thin=spec.domain == "fundus",
                source=None if source is None else painter.paint(source),
                source_stem="" if source is None else stems[source],
                paint_other=lambda k, seeds=other_seeds: painter.paint_unrelated(seeds[k]),
            )
            item, details = INJECT[code](item, ctx)
            if source is not None:
                group = painter.group(source, stems[source])
            truth_rows.append({"stem": stems[index], "defect": code, "details": details})
        write_item(out, spec, stems[index], item)
        group_rows.append({"stem": stems[index], "group": group})

    truth = pd.DataFrame(truth_rows, columns=["stem", "defect", "details"], dtype=str)
    groups = pd.DataFrame(group_rows, columns=["stem", "group"], dtype=str)
    truth.to_csv(out / TRUTH_FILE, index=False)
    groups.to_csv(out / GROUPS_FILE, index=False)
    counts = dict(sorted(Counter(truth["defect"]).items()))
    seconds = time.perf_counter() - started
    log.info("synth %s: %d samples, %d defective %s, in %.1f s -> %s",
             layout, n, len(truth), counts, seconds, out)
    return SynthResult(out, layout, n, truth, groups, seconds, counts)
