"""Leakage-safe train/val/test splits: groups first, then a seeded split of whole groups.

Groups
    Each sample starts in the group its layout knows (PH2 case, CVC-ClinicDB video sequence),
    the group a ``--splits`` file gives it, or a group of its own. Near-duplicate images then
    join one group (union-find, closest pairs first), so consecutive video frames never
    straddle two splits: a pair is near-duplicate when its 64-bit perceptual hashes are within
    :data:`NEAR_DUPLICATE_BITS` bits (a layout may lower that) and, where given, its 256-bit
    hashes within :data:`CONFIRM_BITS` (see :mod:`segprep.hashing` for why both).

Chaining guard
    Similar-looking endoscopy frames can link A~B~C~... into a few giant groups that make the
    requested fractions impossible. A merge whose result would exceed :data:`MAX_GROUP_SHARE`
    of the dataset (at least :data:`MIN_GROUP_CAP` samples) happens only when the pair is
    nearly identical (within :data:`TIGHT_BITS`) or each image is the other's nearest
    neighbour. The summary reports the group sizes and the links refused.

Fixed splits
    Official splits (DRIVE folders, nnU-Net imagesTs) and ``--splits`` files fix what a sample
    may become: ``test`` stays test, ``train`` may become train or val (validation is carved
    from it), unless the file lists val rows itself. Groups never merge across fixed splits;
    near duplicates that straddle one are reported as leaks of that split.

Assignment
    Per source, ``round(val * n)`` and ``round(test * n)`` samples are wanted in val and test
    (a fixed split's own count where it has one). Groups are placed largest first (seeded
    order among equal sizes) into a split drawn with probability proportional to how many
    samples that split still wants, among the splits the group fits in. The result depends only
    on the samples, their hashes and the seed: never on file-system order or worker count.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pandas as pd

from segprep.errors import SegprepError
from segprep.hashing import hamming, near_pairs

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
NEAR_DUPLICATE_BITS = 8
CONFIRM_BITS = 40
TIGHT_BITS = 2
# A group may grow to a tenth of the dataset (the default val and test share): a whole
# video sequence still fits into one held-out split, while chains of merely similar frames
# cannot swallow the dataset. Real and synthetic CVC-ClinicDB sequences are 1-7% of it.
MAX_GROUP_SHARE = 0.10
MIN_GROUP_CAP = 8
SIZE_BUCKETS = ((1, 1), (2, 2), (3, 5), (6, 10), (11, 20), (21, 50), (51, None))

# Which splits a sample may end in, as a bit set.
TRAIN, VAL, TEST = 1, 2, 4
ANY = TRAIN | VAL | TEST
_BIT = {"train": TRAIN, "val": VAL, "test": TEST}


def _mask_name(mask: int) -> str:
    return "+".join(split for split in SPLITS if mask & _BIT[split])


# ----------------------------------------------------------------------------- split files

def read_splits_file(path: Path) -> pd.DataFrame:
    """A committed split list: CSV with columns source, stem, split[, group]; ``#`` lines are
    comments (say where the list comes from)."""
    path = Path(path)
    if not path.is_file():
        raise SegprepError(f"{path}: splits file not found")
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False, comment="#",
                            skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise SegprepError(f"{path}: not a readable CSV ({exc})") from None
    missing = [c for c in ("source", "stem", "split") if c not in table.columns]
    if missing:
        raise SegprepError(f"{path}: missing column(s) {', '.join(missing)}; a splits file needs "
                           "source, stem, split and optionally group")
    if "group" not in table.columns:
        table["group"] = ""
    table = table[["source", "stem", "split", "group"]].apply(lambda c: c.str.strip())
    bad = ~table["split"].isin(SPLITS)
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise SegprepError(f"{path}: row {row + 1}: split {table['split'].iloc[row]!r} is not one "
                           f"of {', '.join(SPLITS)}")
    dup = table.duplicated(["source", "stem"])
    if dup.any():
        first = table[dup].iloc[0]
        raise SegprepError(f"{path}: {first['source']}/{first['stem']} is listed more than once")
    return table


def _apply_splits_file(samples: pd.DataFrame, table: pd.DataFrame, path: Path | str
                       ) -> tuple[pd.Series, pd.Series, list[str]]:
    """Allowed-split masks and groups from the file for the sources it covers.

    Policy for a covered source: every ingested stem must be listed (an unlisted stem means
    the file belongs to another version of the data, an error); listed stems that were not
    ingested (unreadable, unpaired) are reported. Sources the file does not name keep their
    official or seeded split.
    """
    notes: list[str] = []
    covered = sorted(set(table["source"]) & set(samples["source"]))
    if not covered:
        raise SegprepError(f"{path}: names source(s) {', '.join(sorted(set(table['source'])))}; "
                           f"this ingest has {', '.join(sorted(set(samples['source'])))}")
    allowed = pd.Series(0, index=samples.index, dtype=np.int64)
    groups = pd.Series("", index=samples.index, dtype=object)
    for source in covered:
        rows = table[table["source"] == source].set_index("stem")
        mine = samples.index[samples["source"] == source]
        stems = samples.loc[mine, "stem"]
        unlisted = stems[~stems.isin(rows.index)]
        if len(unlisted):
            raise SegprepError(
                f"{path}: {len(unlisted)} {source} sample(s) are not listed (e.g. "
                f"{', '.join(unlisted.iloc[:3])}); a splits file must list every stem of the "
                "sources it names")
        absent = sorted(set(rows.index) - set(stems))
        if absent:
            notes.append(f"{source}: {len(absent)} stem(s) of the splits file were not ingested "
                         f"(e.g. {absent[0]}; unreadable or unpaired, see reports)")
        own_val = (rows["split"] == "val").any()
        split_of = rows.loc[stems, "split"].to_numpy()
        masks = np.array([TRAIN if (s == "train" and own_val) else
                          TRAIN | VAL if s == "train" else _BIT[s] for s in split_of])
        allowed.loc[mine] = masks
        groups.loc[mine] = rows.loc[stems, "group"].to_numpy()
    return allowed, groups, notes


# ----------------------------------------------------------------------------- union-find

class _Groups:
    def __init__(self, sizes: list[int], allowed: list[int]):
        self.parent = list(range(len(sizes)))
        self.size = list(sizes)
        self.allowed = list(allowed)

    def find(self, a: int) -> int:
        while self.parent[a] != a:
            self.parent[a] = self.parent[self.parent[a]]
            a = self.parent[a]
        return a

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return
        if ra > rb:  # the lower id stays root: the result does not depend on merge order
            ra, rb = rb, ra
        self.parent[rb] = ra
        self.size[ra] += self.size[rb]
        self.allowed[ra] &= self.allowed[rb]


def _bucket_counts(sizes: list[int]) -> dict[str, int]:
    out = {}
    for lo, hi in SIZE_BUCKETS:
        label = str(lo) if lo == hi else f"{lo}+" if hi is None else f"{lo}-{hi}"
        out[label] = sum(1 for s in sizes if s >= lo and (hi is None or s <= hi))
    return out


def _tiebreak(seed: int, name: str) -> str:
    return hashlib.sha1(f"{seed}\x00{name}".encode()).hexdigest()


# ----------------------------------------------------------------------------- the split

def assign_splits(samples: pd.DataFrame, *, val: float = 0.1, test: float = 0.1, seed: int = 0,
                  splits_table: pd.DataFrame | None = None, splits_path: Path | str = "",
                  near_duplicate_bits: int = NEAR_DUPLICATE_BITS) -> tuple[pd.DataFrame, dict]:
    """Give every sample a group and a split.

    ``samples`` has columns sample_id, source, stem, phash (int), official_split ('' or a
    split name) and layout_group, in the canonical order (sources as given, stems sorted);
    optionally near_bits (per-sample threshold, default ``near_duplicate_bits``) and
    confirm_hash (the 256-bit :func:`segprep.hashing.phash256`, to confirm candidate pairs).
    Returns a frame with columns split and group (same index) and a statistics dict.

    Four steps: the splits each sample may take (official and file splits), base groups
    (layout groups, else one per image), near-duplicate merges of groups, then groups placed
    largest first towards each source's target counts.
    """
    if not (0 <= val < 1 and 0 <= test < 1 and val + test < 1):
        raise SegprepError(f"--val {val} and --test {test} must be fractions in [0, 1) "
                           "that leave some samples for training")
    samples = samples.reset_index(drop=True)
    notes: list[str] = []
    allowed, given_group = _constraints(samples, splits_table, splits_path, notes)
    names, member_group, uf, divided = _base_groups(samples, allowed, given_group, notes)
    bits = (samples["near_bits"].to_numpy(dtype=np.int64) if "near_bits" in samples
            else np.full(len(samples), near_duplicate_bits, np.int64))
    merges = _merge_near_duplicates(samples, bits, member_group, uf, notes)
    roots = [uf.find(g) for g in range(len(names))]
    root_name: dict[int, str] = {}
    for g, root in enumerate(roots):  # names are sorted, so the first seen is the smallest
        root_name.setdefault(root, names[g])
    group_of_sample = [root_name[roots[g]] for g in member_group]
    members: dict[str, list[int]] = defaultdict(list)
    for k, g in enumerate(group_of_sample):
        members[g].append(k)
    group_mask = {root_name[r]: uf.allowed[r] for r in set(roots)}
    target, requested = _targets(samples, allowed, val, test)
    split_of_group, assigned = _place_groups(samples, members, group_mask, target, seed)
    final = pd.DataFrame({"group": group_of_sample, "source": samples["source"]})
    final["split"] = final["group"].map(split_of_group)
    stats = _statistics(samples, members, target, requested, assigned)
    stats.update(merges, near_duplicate_bits=int(bits.max(initial=0)), divided_groups=divided[:20],
                 notes=notes)
    for note in notes:
        log.info(note)
    return final[["split", "group"]], stats


def _constraints(samples: pd.DataFrame, splits_table: pd.DataFrame | None,
                 splits_path: Path | str, notes: list[str]) -> tuple[pd.Series, pd.Series]:
    """Per sample: the bit set of splits it may take (official split, else a splits file, else
    any) and the group a layout or splits file gives it ('' for none)."""
    allowed = samples["official_split"].map(
        {"": ANY, "train": TRAIN | VAL, "val": VAL, "test": TEST}).astype(np.int64)
    given_group = samples["layout_group"].astype(str)
    if splits_table is not None:
        file_allowed, file_groups, file_notes = _apply_splits_file(samples, splits_table, splits_path)
        covered = file_allowed > 0
        allowed = allowed.where(~covered, file_allowed)
        given_group = given_group.where(~(covered & (file_groups != "")), file_groups)
        notes += file_notes
    return allowed, given_group


def _base_groups(samples: pd.DataFrame, allowed: pd.Series, given_group: pd.Series,
                 notes: list[str]) -> tuple[list[str], np.ndarray, _Groups, list[str]]:
    """Base groups (sorted names, each sample's group index, the union-find over them, the
    groups divided). A group that a fixed split cuts in two is divided (and reported),
    because a group may never span two splits."""
    base_name = np.where(given_group != "", samples["source"] + "/" + given_group,
                         samples["source"] + "/" + samples["stem"])
    frame = pd.DataFrame({"base": base_name, "allowed": allowed})
    combined = frame.groupby("base", sort=False)["allowed"].agg(
        lambda s: np.bitwise_and.reduce(s.to_numpy()))
    divided = sorted(combined.index[combined == 0])
    if divided:
        cut = frame["base"].isin(divided)
        frame.loc[cut, "base"] = frame.loc[cut, "base"] + "@" + frame.loc[cut, "allowed"].map(_mask_name)
        notes.append(f"{len(divided)} group(s) are cut by the fixed split and divided per split "
                     f"(e.g. {divided[0]}): their samples may leak between splits")
    names = sorted(frame["base"].unique())
    index_of = {name: k for k, name in enumerate(names)}
    member_group = frame["base"].map(index_of).to_numpy()
    sizes = np.bincount(member_group, minlength=len(names)).tolist()
    group_allowed = [ANY] * len(names)
    for g, a in zip(member_group, frame["allowed"]):
        group_allowed[g] &= int(a)
    return names, member_group, _Groups(sizes, group_allowed), divided


def _merge_near_duplicates(samples: pd.DataFrame, bits: np.ndarray, member_group: np.ndarray,
                           uf: _Groups, notes: list[str]) -> dict:
    """Merge the groups of near-duplicate images, closest pairs first; a merge that would make
    a group larger than the cap is refused unless the pair is very close or mutually nearest.
    Returns the merge statistics."""
    n = len(samples)
    hashes = np.array([int(h) for h in samples["phash"]], dtype=np.uint64)
    ii, jj, dd, nearest = near_pairs(hashes, int(bits.max(initial=0)))
    keep = dd <= np.minimum(bits[ii], bits[jj])
    if "confirm_hash" in samples:
        confirm = [int(h) for h in samples["confirm_hash"]]
        keep &= np.array([hamming(confirm[i], confirm[j]) <= CONFIRM_BITS
                          for i, j in zip(ii, jj)], dtype=bool)
    candidates = len(ii)
    ii, jj, dd = ii[keep], jj[keep], dd[keep]
    cap = max(MIN_GROUP_CAP, math.ceil(MAX_GROUP_SHARE * n))
    merged = refused = 0
    straddling: list[tuple[str, str, int]] = []
    for k in np.lexsort((jj, ii, dd)):
        i, j, d = int(ii[k]), int(jj[k]), int(dd[k])
        ra, rb = uf.find(member_group[i]), uf.find(member_group[j])
        if ra == rb:
            continue
        if uf.allowed[ra] & uf.allowed[rb] == 0:
            straddling.append((samples["sample_id"][i], samples["sample_id"][j], d))
            continue
        mutual = nearest[i] == j and nearest[j] == i
        if uf.size[ra] + uf.size[rb] > cap and not (d <= TIGHT_BITS or mutual):
            refused += 1
            continue
        uf.union(ra, rb)
        merged += 1
    if straddling:
        a, b, d = straddling[0]
        notes.append(f"{len(straddling)} near-duplicate pair(s) straddle a fixed split (e.g. {a} "
                     f"and {b}, {d} bits apart): a leak in that split, kept as given")
    return {"near_duplicate_candidates": int(candidates), "near_duplicate_pairs": int(len(ii)),
            "near_duplicate_merges": merged, "merges_refused_by_cap": refused, "group_cap": cap,
            "straddling_pairs": [[a, b, d] for a, b, d in straddling[:20]],
            "n_straddling_pairs": len(straddling)}


def _targets(samples: pd.DataFrame, allowed: pd.Series, val: float, test: float
             ) -> tuple[dict[str, dict[str, int]], dict[str, dict[str, str]]]:
    """Per source, the sample count each split should get, and what was asked for it (a
    fraction, or "fixed" where official splits decide)."""
    target: dict[str, dict[str, int]] = {}
    requested: dict[str, dict[str, str]] = {}
    for source in dict.fromkeys(samples["source"]):
        a = allowed[samples["source"] == source].to_numpy()
        t: dict[str, int] = {}
        req: dict[str, str] = {}
        for split, fraction in (("val", val), ("test", test)):
            fixed = int((a == _BIT[split]).sum())
            possible = bool((a & _BIT[split]).any())
            if fixed or not possible:
                t[split], req[split] = fixed, "fixed"
            else:
                t[split], req[split] = int(math.floor(fraction * len(a) + 0.5)), f"{fraction:g}"
        t["train"] = len(a) - t["val"] - t["test"]
        target[source], requested[source] = t, req
    return target, requested


def _place_groups(samples: pd.DataFrame, members: dict[str, list[int]], group_mask: dict[str, int],
                  target: dict[str, dict[str, int]], seed: int
                  ) -> tuple[dict[str, str], dict[str, Counter]]:
    """Each group's split, largest groups first: the split with room for the whole group,
    drawn in proportion to the room left (seeded), else the one furthest below target."""
    order = sorted(members, key=lambda g: (-len(members[g]), _tiebreak(seed, g)))
    assigned: dict[str, Counter] = {s: Counter() for s in target}
    rng = np.random.default_rng(seed)
    split_of_group: dict[str, str] = {}
    for g in order:
        options = [s for s in SPLITS if group_mask[g] & _BIT[s]]
        src_counts = Counter(samples["source"][k] for k in members[g])
        deficit = {s: sum(target[src][s] - assigned[src][s] for src in src_counts) for s in options}
        fits = [s for s in options if deficit[s] >= len(members[g])]
        if len(options) == 1:
            choice = options[0]
        elif fits:
            weights = np.array([deficit[s] for s in fits], dtype=float)
            choice = fits[int(rng.choice(len(fits), p=weights / weights.sum()))]
        else:
            choice = max(options, key=lambda s: (deficit[s], -SPLITS.index(s)))
        split_of_group[g] = choice
        for src, count in src_counts.items():
            assigned[src][choice] += count
    return split_of_group, assigned


def _statistics(samples: pd.DataFrame, members: dict[str, list[int]],
                target: dict[str, dict[str, int]], requested: dict[str, dict[str, str]],
                assigned: dict[str, Counter]) -> dict:
    largest = sorted(members, key=lambda g: (-len(members[g]), g))[:3]
    realised = {}
    for source in target:
        n_src = int((samples["source"] == source).sum())
        counts = {s: int(assigned[source][s]) for s in SPLITS}
        realised[source] = {"counts": counts, "target": target[source],
                            "requested": requested[source],
                            "fractions": {s: round(counts[s] / n_src, 4) for s in SPLITS}}
    return {"n_groups": len(members),
            "group_sizes": _bucket_counts([len(m) for m in members.values()]),
            "largest_groups": [[g, len(members[g])] for g in largest], "sources": realised}
