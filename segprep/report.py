"""The clean report: ``index.html`` plus small JPEG thumbnails in ``thumbs/``.

For every flagged sample (a finding of severity error or warning) it shows the image, the
raw mask as stored by ingest (grey values visible), the raw mask's outline on the image, and
the cleaned mask's outline with what the repair removed (magenta) or added (cyan) circled,
plus the partner image for pair findings (duplicates, near-duplicates, leakage). Sections
follow the registry's code order, with counts at the top. Thumbnails are referenced by
relative paths, so the report folder can be moved or zipped.
"""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from segprep.checks import CHECKS, code_order
from segprep.checks.findings import Finding
from segprep.checks.repairs import binarize, mask_scale
from segprep.shards import read_image, read_mask, read_roi

log = logging.getLogger(__name__)

THUMB_SIDE = 256
JPEG_QUALITY = 88
# RGB colours chosen to stand out on pink mucosa, orange fundus and brown skin.
RAW_COLOUR = (255, 230, 0)       # yellow: the raw mask's outline
CLEAN_COLOUR = (0, 255, 60)      # green: the cleaned mask's outline
REMOVED_COLOUR = (255, 0, 255)   # magenta: pixels the repair removed
ADDED_COLOUR = (0, 230, 255)     # cyan: pixels the repair added
PARTNER_CODES = ("duplicate", "conflict", "near_duplicate_conflict", "leakage")


def _fit(shape: tuple[int, int]) -> tuple[int, int]:
    """Thumbnail (width, height): the longest side THUMB_SIDE (small images are enlarged
    too, so a 128 px frame is as easy to judge as a 1920 px one)."""
    h, w = shape
    scale = THUMB_SIDE / max(h, w)
    return max(1, round(w * scale)), max(1, round(h * scale))


def _small(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    shrink = size[0] < array.shape[1]
    return cv2.resize(array, size, interpolation=cv2.INTER_AREA if shrink else cv2.INTER_NEAREST)


def _small_mask(binary: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A 0/1 mask at thumbnail size; any pixel of a thin structure survives the shrink."""
    small = cv2.resize(binary.astype(np.float32), size, interpolation=cv2.INTER_AREA)
    return (small > 0.2).astype(np.uint8)


def _outline(canvas: np.ndarray, binary_small: np.ndarray, colour: tuple[int, int, int],
             fill_alpha: float = 0.22) -> None:
    """A light fill plus a strong outline, drawn in place."""
    if binary_small.any():
        solid = canvas.copy()
        solid[binary_small > 0] = colour
        cv2.addWeighted(solid, fill_alpha, canvas, 1 - fill_alpha, 0, dst=canvas)
        contours, _ = cv2.findContours(binary_small, cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(canvas, contours, -1, colour, 1, cv2.LINE_8)


def _mark_changes(canvases: list[np.ndarray], changed: np.ndarray, colour: tuple[int, int, int],
                  scale: float, paint: bool) -> None:
    """Frame each changed region with a square on every canvas (and paint its pixels when
    ``paint``), so that a 1 px speck in a 1920 px frame, even in a corner, is seen at a glance."""
    changed = changed.astype(np.uint8)
    left, top, width, height = cv2.boundingRect(changed)
    if width == 0 or height == 0:
        return
    count, _, stats, _ = cv2.connectedComponentsWithStats(
        changed[top:top + height, left:left + width], connectivity=8)
    stats = stats.copy()
    stats[:, cv2.CC_STAT_LEFT] += left  # crop -> frame coordinates
    stats[:, cv2.CC_STAT_TOP] += top
    for canvas in canvases:
        h, w = canvas.shape[:2]
        if paint:
            small = _small_mask(changed, (w, h))
            canvas[small > 0] = colour
        for label in range(1, min(count, 200)):
            x, y, bw, bh = (int(v) for v in stats[label, :4])
            margin = 5
            x0 = min(max(0, int(x * scale) - margin), w - 2 * margin)
            y0 = min(max(0, int(y * scale) - margin), h - 2 * margin)
            x1 = max(min(w - 1, int((x + bw) * scale) + margin), x0 + 2 * margin)
            y1 = max(min(h - 1, int((y + bh) * scale) + margin), y0 + 2 * margin)
            cv2.rectangle(canvas, (x0, y0), (x1, y1), colour, 2, cv2.LINE_8)


def _write(path: Path, rgb: np.ndarray) -> None:
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                            [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if ok:
        path.write_bytes(data.tobytes())


GAP = 4  # px of white between the panels of a strip


def _to_height(panel: np.ndarray, height: int) -> np.ndarray:
    if panel.shape[0] == height:
        return panel
    width = max(1, round(panel.shape[1] * height / panel.shape[0]))
    return cv2.resize(panel, (width, height), interpolation=cv2.INTER_AREA)


def render_panels(image: np.ndarray, raw: np.ndarray, clean: np.ndarray, roi: np.ndarray | None,
                  threshold: str | float = "mid",
                  partner: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, list]:
    """The panels of one sample side by side in one RGB strip: image (with the field of
    view), raw mask as stored, raw outline, cleaned outline with the repair's changes
    framed, and the partner image with its mask for pair findings.
    Returns (strip, [(panel name, width px), ...])."""
    h, w = image.shape[:2]
    size = _fit((h, w))
    scale = size[0] / w
    panels: list[tuple[str, np.ndarray]] = []

    base = _small(image, size)
    panel = base.copy()
    if roi is not None and roi.shape == (h, w):
        contours, _ = cv2.findContours(_small_mask(roi > 0, size), cv2.RETR_EXTERNAL,
                                       cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(panel, contours, -1, (255, 255, 255), 1, cv2.LINE_AA)
    panels.append(("image", panel))

    # The raw mask as stored, grey values stretched to the mask's nominal scale.
    raw_view = (raw.astype(np.float32) * (255.0 / mask_scale(raw))).clip(0, 255).astype(np.uint8)
    panels.append(("raw", cv2.cvtColor(_small(raw_view, _fit(raw.shape)), cv2.COLOR_GRAY2RGB)))

    if raw.shape == (h, w) and clean.shape == (h, w):
        raw_binary = binarize(raw, threshold)
        overlay = base.copy()
        _outline(overlay, _small_mask(raw_binary, size), RAW_COLOUR)
        fixed = base.copy()
        _outline(fixed, _small_mask(clean, size), CLEAN_COLOUR)
        removed, added = (raw_binary > 0) & (clean == 0), (raw_binary == 0) & (clean > 0)
        if removed.sum() + added.sum() < 0.25 * removed.size:  # not for an inverted mask
            _mark_changes([fixed], removed, REMOVED_COLOUR, scale, paint=True)
            _mark_changes([fixed], added, ADDED_COLOUR, scale, paint=True)
            _mark_changes([overlay], removed, REMOVED_COLOUR, scale, paint=False)
            _mark_changes([overlay], added, ADDED_COLOUR, scale, paint=False)
        panels += [("raw-overlay", overlay), ("clean", fixed)]

    if partner is not None:
        p_image, p_clean = partner
        p_size = _fit(p_image.shape[:2])
        p_panel = _small(p_image, p_size)
        if p_clean.shape == p_image.shape[:2]:
            _outline(p_panel, _small_mask(p_clean, p_size), CLEAN_COLOUR)
        panels.append(("partner", p_panel))

    height = size[1]
    scaled = [(name, _to_height(panel, height)) for name, panel in panels]
    strip = np.full((height, sum(p.shape[1] for _, p in scaled) + GAP * (len(scaled) - 1), 3),
                    255, np.uint8)
    x = 0
    for _, panel in scaled:
        strip[:, x:x + panel.shape[1]] = panel
        x += panel.shape[1] + GAP
    return strip, [(key, panel.shape[1]) for key, panel in scaled]


def strip_name(position: int) -> str:
    return f"{position:06d}.jpg"


def write_strip(out_dir: Path, position: int, strip: np.ndarray, panels: list) -> dict:
    """Write one sample's strip to ``out_dir`` (the report's thumbs/ folder)."""
    _write(Path(out_dir) / strip_name(position), strip)
    return {"file": strip_name(position), "panels": panels}


def render_sample(task: dict) -> dict:
    """Read one sample (and its partner) from the shards and write its strip: one small
    file per sample keeps a report of thousands of flags quick to write.
    Returns {"file": name relative to thumbs/, "panels": [(panel, width px), ...]}."""
    image = read_image(Path(task["image_shard"]), task["image_index"])
    raw = read_mask(Path(task["raw_shard"]), task["raw_index"])
    clean = read_mask(Path(task["clean_shard"]), task["clean_index"])
    roi = read_roi(Path(task["image_shard"]), task["image_index"])
    partner = None
    if task.get("partner"):
        p = task["partner"]
        partner = (read_image(Path(p["image_shard"]), p["image_index"]),
                   read_mask(Path(p["clean_shard"]), p["clean_index"]))
    strip, panels = render_panels(image, raw, clean, roi, task["threshold"], partner)
    return write_strip(Path(task["out_dir"]), task["position"], strip, panels)


# ----------------------------------------------------------------------------- HTML

_CAPTIONS = {"image": "image", "raw": "raw mask (as stored)", "raw-overlay": "raw mask outline",
             "clean": "cleaned mask (as stored)", "partner": "partner"}
_TEMPLATE = "clean_report.html.j2"


def _rgb(colour: tuple[int, int, int]) -> str:
    return "#%02x%02x%02x" % colour


def _strength(finding: Finding) -> float:
    """How strong a finding is by its code's measure, larger first (see Code.worst)."""
    worst = CHECKS[finding.code].worst if finding.code in CHECKS else "high"
    value = float(finding.value)
    return -value if worst == "low" else abs(value) if worst == "abs" else value


def _sections(df: pd.DataFrame, findings: list[list[Finding]], statuses: list[str],
              extra: list[tuple[str, str, Finding]], files: dict[int, dict]) -> list[dict]:
    """One section per code: decisions first (codes that excluded, then codes that flagged),
    then notes, then routine repairs (collapsed); the strongest findings of a code on top."""
    by_code: dict[str, list[tuple[int, Finding]]] = {}
    for i, found in enumerate(findings):
        for f in found:
            by_code.setdefault(f.code, []).append((i, f))
    extra_by_code: dict[str, list[tuple[str, str, Finding]]] = {}
    for item in extra:
        extra_by_code.setdefault(item[2].code, []).append(item)
    sections = []
    for code in set(by_code) | set(extra_by_code):
        info = CHECKS.get(code)
        members = sorted(by_code.get(code, []), key=lambda m: (-_strength(m[1]), m[0]))
        actions = {f.action for _, f in members} | {f.action for _, _, f in extra_by_code.get(code, [])}
        routine = bool(info and info.routine) and actions <= {"repaired"}
        group = (0 if "excluded" in actions else 1 if "flagged" in actions else
                 3 if routine else 2)
        shown = [i for i, _ in members if i in files]
        cards = []
        for i in dict.fromkeys(shown):
            row = df.iloc[i]
            partner = next((f.partner for f in findings[i] if f.partner), "")
            cards.append({
                "sample_id": row["sample_id"], "split": row["split"], "height": row["height"],
                "width": row["width"], "status": statuses[i],
                "findings": sorted(findings[i], key=lambda f: code_order(f.code)),
                "strip": files[i],
                "captions": [(_CAPTIONS[key] + (f": {partner}" if key == "partner" else ""), width)
                             for key, width in files[i]["panels"]]})
        values = [float(f.value) for _, f in members]
        sections.append({
            "group": group, "order": code_order(code), "code": code,
            "count": len({i for i, _ in members}) + len(extra_by_code.get(code, [])),
            "severity": info.severity if info else "warning",
            "description": info.description if info else "", "value": info.value if info else "",
            "loose": [(sid, f.message) for sid, _, f in extra_by_code.get(code, [])],
            "cards": cards,
            "plain": [(df.iloc[i]["sample_id"], f"{f.value:g}", f.message) for i, f in members
                      if i not in files],
            "routine": (f"all repaired ({info.value}: {min(values):g} to {max(values):g})"
                        if routine and values else ""),
        })
    return sorted(sections, key=lambda s: (s["group"], s["order"]))


def write_report(out_dir: Path, df: pd.DataFrame, input_folder: Path,
                 clean_masks: list[tuple[Path, int]], findings: list[list[Finding]],
                 statuses: list[str], extra: list[tuple[str, str, Finding]], counts: pd.DataFrame,
                 leakage: list[tuple], *, threshold: str | float = "mid", pool=None,
                 rendered: dict[int, dict] | None = None) -> Path:
    """Write ``out_dir/index.html`` (from templates/clean_report.html.j2) and ``out_dir/thumbs/``.
    ``findings[i]`` and ``statuses[i]`` belong to row i of ``df``; ``extra`` are findings without
    a manifest row (ingest's unreadable/unpaired files). ``rendered`` maps row positions to strips
    already written to ``out_dir/thumbs`` (by the workers, while they had the sample in memory);
    samples with a partner are drawn again, with it."""
    from jinja2 import Environment, PackageLoader, select_autoescape

    out_dir = Path(out_dir)
    thumbs = out_dir / "thumbs"
    thumbs.mkdir(parents=True, exist_ok=True)
    ids = df["sample_id"].tolist()
    position = {sid: i for i, sid in enumerate(ids)}
    flagged = [i for i, fs in enumerate(findings) if any(f.severity != "info" for f in fs)]

    def locate(i: int) -> dict:
        row = df.iloc[i]
        return {"image_shard": str(input_folder / row["image_shard"]),
                "image_index": int(row["image_index"]),
                "clean_shard": str(clean_masks[i][0]), "clean_index": int(clean_masks[i][1])}

    rendered = rendered or {}
    tasks = []
    done: dict[int, dict] = {}
    for i in flagged:
        row = df.iloc[i]
        partners = [f.partner for f in findings[i] if f.partner and f.partner in position]
        if i in rendered and not partners:
            done[i] = rendered[i]
            continue
        task = {"out_dir": str(thumbs), "position": i, "threshold": threshold,
                "raw_shard": str(input_folder / row["mask_shard"]),
                "raw_index": int(row["mask_index"]), **locate(i)}
        if partners:
            task["partner"] = locate(position[partners[0]])
        tasks.append(task)
    drawn = pool.map(render_sample, tasks, chunksize=4) if pool is not None and tasks \
        else [render_sample(t) for t in tasks]
    files = {**done, **{t["position"]: d for t, d in zip(tasks, drawn)}}

    status = pd.Series(statuses, dtype=str)
    environment = Environment(loader=PackageLoader("segprep", "templates"),
                              autoescape=select_autoescape(["html", "j2"]))
    html = environment.get_template(_TEMPLATE).render(
        n_samples=len(df), n_ok=int((status == "ok").sum()),
        n_repaired=int((status == "repaired").sum()), n_excluded=int((status == "excluded").sum()),
        n_flagged=len(flagged), n_extra=len(extra), leakage=leakage,
        colours={"raw": _rgb(RAW_COLOUR), "clean": _rgb(CLEAN_COLOUR),
                 "removed": _rgb(REMOVED_COLOUR), "added": _rgb(ADDED_COLOUR)},
        counts=[{**row, "description": CHECKS[row["code"]].description if row["code"] in CHECKS else ""}
                for row in counts.to_dict("records")],
        sections=_sections(df, findings, statuses, extra, files))
    path = out_dir / "index.html"
    path.write_text(html, encoding="utf-8")
    log.info("wrote %s (%d flagged samples)", path, len(flagged))
    return path
