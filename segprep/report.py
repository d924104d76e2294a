"""The clean report: ``index.html`` plus small JPEG thumbnails in ``thumbs/``.

For every flagged sample (a finding of severity error or warning) it shows the image, the
raw mask as stored by ingest (grey values visible), the raw mask's outline on the image, and
the cleaned mask's outline with what the repair removed (magenta) or added (cyan) circled,
plus the partner image for pair findings (duplicates, near-duplicates, leakage). Sections
follow the registry's code order, with counts at the top. Thumbnails are referenced by
relative paths, so the report folder can be moved or zipped.
"""

from __future__ import annotations

import html
import logging
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from segprep.checks import CODES, code_order
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
    h, w = shape
    scale = min(1.0, THUMB_SIDE / max(h, w))
    return max(1, round(w * scale)), max(1, round(h * scale))


def _small(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    return cv2.resize(array, size, interpolation=cv2.INTER_AREA)


def _small_mask(binary: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A 0/1 mask at thumbnail size; any pixel of a thin structure survives the shrink."""
    small = cv2.resize(binary.astype(np.float32), size, interpolation=cv2.INTER_AREA)
    return (small > 0.2).astype(np.uint8)


def _outline(canvas: np.ndarray, binary_small: np.ndarray, colour: tuple[int, int, int],
             fill_alpha: float = 0.22) -> None:
    """A light fill plus a strong outline, drawn in place."""
    if binary_small.any():
        tint = canvas.astype(np.float32)
        tint[binary_small > 0] = (1 - fill_alpha) * tint[binary_small > 0] + fill_alpha * np.array(colour)
        canvas[:] = tint.astype(np.uint8)
        contours, _ = cv2.findContours(binary_small, cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(canvas, contours, -1, colour, 1, cv2.LINE_8)


def _circle_changes(canvas: np.ndarray, changed: np.ndarray, colour: tuple[int, int, int],
                    scale: float) -> None:
    """Paint changed pixels and ring each changed region, so a 1 px speck is visible."""
    if not changed.any():
        return
    count, labels, stats, centroids = cv2.connectedComponentsWithStats(changed.astype(np.uint8), 8)
    small = _small_mask(changed, (canvas.shape[1], canvas.shape[0]))
    canvas[small > 0] = colour
    for label in range(1, min(count, 200)):
        x, y = centroids[label]
        w, h = stats[label, cv2.CC_STAT_WIDTH], stats[label, cv2.CC_STAT_HEIGHT]
        radius = int(max(5, 0.5 * max(w, h) * scale + 3))
        cv2.circle(canvas, (int(round(x * scale)), int(round(y * scale))), radius, colour, 1, cv2.LINE_AA)


def _write(path: Path, rgb: np.ndarray) -> None:
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                            [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if ok:
        path.write_bytes(data.tobytes())


def render_sample(task: dict) -> dict[str, str]:
    """Thumbnails of one sample; returns panel name -> file name (relative to thumbs/)."""
    out_dir = Path(task["out_dir"])
    stem = f"{task['position']:06d}"
    image = read_image(Path(task["image_shard"]), task["image_index"])
    raw = read_mask(Path(task["raw_shard"]), task["raw_index"])
    clean = read_mask(Path(task["clean_shard"]), task["clean_index"])
    roi = read_roi(Path(task["image_shard"]), task["image_index"])
    h, w = image.shape[:2]
    size = _fit((h, w))
    scale = size[0] / w
    files: dict[str, str] = {}

    base = _small(image, size)
    panel = base.copy()
    if roi is not None and roi.shape == (h, w):
        contours, _ = cv2.findContours(_small_mask(roi > 0, size), cv2.RETR_EXTERNAL,
                                       cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(panel, contours, -1, (255, 255, 255), 1, cv2.LINE_AA)
    _write(out_dir / f"{stem}-image.jpg", panel)
    files["image"] = f"{stem}-image.jpg"

    # The raw mask as stored, grey values stretched to the mask's nominal scale.
    raw_view = (raw.astype(np.float32) * (255.0 / mask_scale(raw))).clip(0, 255).astype(np.uint8)
    _write(out_dir / f"{stem}-raw.jpg", cv2.cvtColor(_small(raw_view, _fit(raw.shape)), cv2.COLOR_GRAY2RGB))
    files["raw"] = f"{stem}-raw.jpg"

    same_size = raw.shape == (h, w) and clean.shape == (h, w)
    raw_binary = binarize(raw, task["threshold"])
    if same_size:
        overlay = base.copy()
        _outline(overlay, _small_mask(raw_binary, size), RAW_COLOUR)
        _write(out_dir / f"{stem}-raw-overlay.jpg", overlay)
        files["raw-overlay"] = f"{stem}-raw-overlay.jpg"
        fixed = base.copy()
        _outline(fixed, _small_mask(clean, size), CLEAN_COLOUR)
        _circle_changes(fixed, (raw_binary > 0) & (clean == 0), REMOVED_COLOUR, scale)
        _circle_changes(fixed, (raw_binary == 0) & (clean > 0), ADDED_COLOUR, scale)
        _write(out_dir / f"{stem}-clean.jpg", fixed)
        files["clean"] = f"{stem}-clean.jpg"

    partner = task.get("partner")
    if partner:
        p_image = read_image(Path(partner["image_shard"]), partner["image_index"])
        p_clean = read_mask(Path(partner["clean_shard"]), partner["clean_index"])
        p_size = _fit(p_image.shape[:2])
        p_panel = _small(p_image, p_size)
        if p_clean.shape == p_image.shape[:2]:
            _outline(p_panel, _small_mask(p_clean, p_size), CLEAN_COLOUR)
        _write(out_dir / f"{stem}-partner.jpg", p_panel)
        files["partner"] = f"{stem}-partner.jpg"
    return files


# ----------------------------------------------------------------------------- HTML

_CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222;background:#fafafa}
h1{margin-bottom:.2em} h2{margin-top:1.6em;border-bottom:2px solid #ccc;padding-bottom:.2em}
table.counts{border-collapse:collapse} table.counts td,table.counts th{border:1px solid #ccc;padding:3px 8px;text-align:right}
table.counts td:first-child,table.counts th:first-child,table.counts td.desc{text-align:left}
.error{color:#b00020;font-weight:600} .warning{color:#a15c00} .info{color:#555}
.leak{background:#fde7ea;border:1px solid #b00020;padding:.6em 1em;margin:1em 0}
.card{background:#fff;border:1px solid #ddd;border-radius:6px;padding:.6em;margin:.6em 0}
.card .id{font-family:monospace;font-weight:600;font-size:1.05em}
.panels{display:flex;flex-wrap:wrap;gap:6px;margin-top:.4em}
.panels figure{margin:0} .panels figcaption{font-size:.8em;color:#555;text-align:center}
.panels img{display:block;max-height:256px;border:1px solid #999;image-rendering:auto}
ul.codes{margin:.3em 0 0 1.2em;padding:0;font-size:.92em}
.legend span{display:inline-block;width:1em;height:1em;vertical-align:middle;margin:0 .3em 0 1em;border:1px solid #666}
table.plain{border-collapse:collapse;font-size:.92em} table.plain td,table.plain th{border:1px solid #ddd;padding:2px 6px;text-align:left}
"""

_CAPTIONS = {"image": "image", "raw": "raw mask (as stored)", "raw-overlay": "raw mask outline",
             "clean": "cleaned mask", "partner": "partner"}


def _esc(text: object) -> str:
    return html.escape(str(text))


def _rgb(colour: tuple[int, int, int]) -> str:
    return "#%02x%02x%02x" % colour


def write_report(out_dir: Path, df: pd.DataFrame, input_folder: Path,
                 clean_masks: list[tuple[Path, int]], findings: list[list[Finding]],
                 statuses: list[str], extra: list[tuple[str, str, Finding]], counts: pd.DataFrame,
                 leakage: list[tuple], *, threshold: str | float = "mid", pool=None) -> Path:
    """Write ``out_dir/index.html`` and ``out_dir/thumbs/``. ``findings[i]`` and
    ``statuses[i]`` belong to row i of ``df``; ``extra`` are findings without a manifest row
    (ingest's unreadable/unpaired files)."""
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

    tasks = []
    for i in flagged:
        row = df.iloc[i]
        task = {"out_dir": str(thumbs), "position": i, "threshold": threshold,
                "raw_shard": str(input_folder / row["mask_shard"]),
                "raw_index": int(row["mask_index"]), **locate(i)}
        partners = [f.partner for f in findings[i] if f.partner and f.partner in position]
        if partners:
            task["partner"] = locate(position[partners[0]])
        tasks.append(task)
    rendered = pool.map(render_sample, tasks, chunksize=4) if pool is not None and tasks \
        else [render_sample(t) for t in tasks]
    files = dict(zip(flagged, rendered))

    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>segprep clean report</title>"
             f"<style>{_CSS}</style></head><body>",
             "<h1>segprep clean report</h1>"]
    status = pd.Series(statuses, dtype=str)
    parts.append(f"<p>{len(df)} samples: {int((status == 'ok').sum())} ok, "
                 f"{int((status == 'repaired').sum())} repaired, {int((status == 'excluded').sum())} "
                 f"excluded; {len(flagged)} flagged below"
                 f"{f', {len(extra)} files ingest could not use' if extra else ''}.</p>")
    parts.append("<p class='legend'>Outlines:<span style='background:" + _rgb(RAW_COLOUR) +
                 "'></span>raw mask<span style='background:" + _rgb(CLEAN_COLOUR) +
                 "'></span>cleaned mask<span style='background:" + _rgb(REMOVED_COLOUR) +
                 "'></span>removed by the repair<span style='background:" + _rgb(ADDED_COLOUR) +
                 "'></span>added by the repair<span style='background:#fff'></span>field of view</p>")
    if leakage:
        parts.append(f"<div class='leak'><b class='error'>leakage: {len(leakage)} near-identical "
                     f"pair(s) in different splits</b><ul>")
        parts += [f"<li><code>{_esc(a)}</code> ({_esc(sa)}) &harr; <code>{_esc(b)}</code> "
                  f"({_esc(sb)}), phash distance {d}</li>" for a, sa, b, sb, d in leakage]
        parts.append("</ul></div>")

    parts.append("<table class='counts'><tr><th>code</th><th>severity</th><th>found</th>"
                 "<th>repaired</th><th>excluded</th><th>flagged</th><th>what it means</th></tr>")
    for row in counts.to_dict("records"):
        code = row["code"]
        description = CODES[code].description if code in CODES else ""
        parts.append(f"<tr><td><a href='#{_esc(code)}'>{_esc(code)}</a></td>"
                     f"<td class='{_esc(row['severity'])}'>{_esc(row['severity'])}</td>"
                     f"<td>{row['found']}</td><td>{row['repaired']}</td><td>{row['excluded']}</td>"
                     f"<td>{row['flagged']}</td><td class='desc'>{_esc(description)}</td></tr>")
    parts.append("</table>")

    by_code: dict[str, list[int]] = {}
    for i, fs in enumerate(findings):
        for f in fs:
            members = by_code.setdefault(f.code, [])
            if not members or members[-1] != i:
                members.append(i)
    extra_by_code: dict[str, list[tuple[str, str, Finding]]] = {}
    for item in extra:
        extra_by_code.setdefault(item[2].code, []).append(item)

    for code in sorted(set(by_code) | set(extra_by_code), key=code_order):
        members = by_code.get(code, [])
        loose = extra_by_code.get(code, [])
        info = CODES.get(code)
        parts.append(f"<h2 id='{_esc(code)}'>{_esc(code)} ({len(members) + len(loose)})</h2>")
        if info:
            parts.append(f"<p class='{info.severity}'>{_esc(info.description)}. "
                         f"Value: {_esc(info.value)}.</p>")
        if loose:
            parts.append("<table class='plain'><tr><th>sample</th><th>reason</th></tr>")
            parts += [f"<tr><td><code>{_esc(sid)}</code></td><td>{_esc(f.message)}</td></tr>"
                      for sid, _, f in loose]
            parts.append("</table>")
        shown = [i for i in members if i in files]
        plain = [i for i in members if i not in files]
        for i in shown:
            parts.append(_card(df.iloc[i], status.iloc[i], findings[i], files[i]))
        if plain:
            parts.append("<table class='plain'><tr><th>sample</th><th>value</th><th>message</th></tr>")
            for i in plain:
                for f in findings[i]:
                    if f.code == code:
                        parts.append(f"<tr><td><code>{_esc(ids[i])}</code></td><td>{f.value:g}</td>"
                                     f"<td>{_esc(f.message)}</td></tr>")
            parts.append("</table>")
    parts.append("</body></html>")
    path = out_dir / "index.html"
    path.write_text("\n".join(parts), encoding="utf-8")
    log.info("wrote %s (%d flagged samples)", path, len(flagged))
    return path


def _card(row: pd.Series, status: str, findings: list[Finding], files: dict[str, str]) -> str:
    items = []
    for f in sorted(findings, key=lambda f: code_order(f.code)):
        items.append(f"<li><b class='{f.severity}'>{_esc(f.code)}</b> = {f.value:g} "
                     f"[{_esc(f.action)}] {_esc(f.message)}</li>")
    partner = next((f.partner for f in findings if f.partner), "")
    panels = []
    for key in ("image", "raw", "raw-overlay", "clean", "partner"):
        if key in files:
            caption = _CAPTIONS[key] + (f": {partner}" if key == "partner" else "")
            panels.append(f"<figure><img loading='lazy' src='thumbs/{_esc(files[key])}' "
                          f"alt='{_esc(key)}'><figcaption>{_esc(caption)}</figcaption></figure>")
    return (f"<div class='card'><span class='id'>{_esc(row['sample_id'])}</span> "
            f"&middot; split {_esc(row['split'])} &middot; {row['height']}x{row['width']} "
            f"&middot; status <b>{_esc(status)}</b><ul class='codes'>{''.join(items)}</ul>"
            f"<div class='panels'>{''.join(panels)}</div></div>")
