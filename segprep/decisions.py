"""A person's review decisions about samples: ``WORK/reviews/decisions.csv``.

Written by the review page of ``segkit app`` (one row per sample, the latest decision), read by
``segprep clean`` (``--decisions FILE``, or the file in its WORK when there is one), which applies
them over its own verdicts and records in the manifest's ``issues`` that a person decided:

* ``keep``: the sample is fine; it stays in (an exclusion or flag of a heuristic is overruled)
  with the mask clean gives it. Samples that cannot be used at all (unreadable, a mask of
  another size) stay excluded, with a note.
* ``exclude``: the sample leaves training (status ``excluded``).
* ``accept_repair``: clean's repaired mask is right (a repaired sample stays ``repaired``; on a
  sample clean did not repair it only records the review).

Every write takes a lock on the file and replaces it atomically, so two writers (two browser
tabs, two app processes) never corrupt it; a file edited by hand into something unreadable is
a clear error naming the line, and is never overwritten by the app.
"""

from __future__ import annotations

import csv
import fcntl
import io
import time
from dataclasses import dataclass
from pathlib import Path

from segprep.checks.registry import register
from segprep.errors import SegprepError
from segprep.work import atomic_path

DECISIONS = ("keep", "exclude", "accept_repair")
COLUMNS = ("sample_id", "decision", "who", "when", "note")
#: the code a decision adds to the manifest's issues
REVIEW_CODES = {"keep": "reviewed_keep", "exclude": "reviewed_exclude",
                "accept_repair": "reviewed_repair"}
MAX_NOTE = 500

register("reviewed_keep", "review", "info", "noted", "-",
         "A person reviewed the sample and kept it (segkit app, decisions.csv).")(None)
register("reviewed_exclude", "review", "info", "excluded", "-",
         "A person reviewed the sample and excluded it (segkit app, decisions.csv).")(None)
register("reviewed_repair", "review", "info", "noted", "-",
         "A person reviewed clean's repaired mask and accepted it (segkit app, decisions.csv).")(None)


@dataclass(frozen=True)
class Decision:
    sample_id: str
    decision: str
    who: str = ""
    when: str = ""
    note: str = ""


def default_path(work: Path) -> Path:
    return Path(work) / "reviews" / "decisions.csv"


def read_decisions(path: Path) -> dict[str, Decision]:
    """The decisions in ``path`` by sample id (the last row of a sample wins); {} when the file
    does not exist. A malformed file is a SegprepError naming the line and the valid choices."""
    path = Path(path)
    if not path.exists():
        return {}
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SegprepError(f"{path}: cannot read the decisions ({exc})") from None
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in ("sample_id", "decision") if c not in (reader.fieldnames or [])]
    if missing:
        raise SegprepError(f"{path}: not a decisions file: missing column(s) {', '.join(missing)} "
                           f"(expected {','.join(COLUMNS)})")
    out: dict[str, Decision] = {}
    for line, row in enumerate(reader, start=2):
        sample_id, decision = (row.get("sample_id") or "").strip(), (row.get("decision") or "").strip()
        if not sample_id:
            raise SegprepError(f"{path} line {line}: empty sample_id")
        if decision not in DECISIONS:
            raise SegprepError(f"{path} line {line}: unknown decision {decision!r}; valid: "
                               f"{', '.join(DECISIONS)}")
        out[sample_id] = Decision(sample_id, decision, (row.get("who") or "").strip(),
                                  (row.get("when") or "").strip(), (row.get("note") or "").strip())
    return out


def _write(path: Path, decisions: dict[str, Decision]) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(COLUMNS)
            for d in sorted(decisions.values(), key=lambda d: d.sample_id):
                writer.writerow([d.sample_id, d.decision, d.who, d.when, d.note])


def record_decision(path: Path, sample_id: str, decision: str, *, who: str = "",
                    note: str = "", clear: bool = False) -> dict[str, Decision]:
    """Set (or with ``clear`` remove) one sample's decision, under a lock, atomically; returns
    all decisions. The caller checks that ``sample_id`` names a sample."""
    if not clear and decision not in DECISIONS:
        raise SegprepError(f"unknown decision {decision!r}; valid: {', '.join(DECISIONS)}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # the next writer waits: read-modify-write is whole
        try:
            decisions = read_decisions(path)
            if clear:
                decisions.pop(sample_id, None)
            else:
                decisions[sample_id] = Decision(
                    sample_id, decision, who.strip()[:100],
                    time.strftime("%Y-%m-%dT%H:%M:%S%z"), " ".join(note.split())[:MAX_NOTE])
            _write(path, decisions)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return decisions
