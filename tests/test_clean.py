"""`segprep clean` end to end: hand-made manifests with known defects, and synth -> ingest -> clean."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from segprep.checks.options import CleanOptions
from segprep.clean import clean
from segprep.errors import ManifestError, SegprepError
from segprep.hashing import array_sha1, phash, phash_hex
from segprep.manifest import read_manifest, write_manifest
from segprep.shards import ShardSequence, close_shards, load_sample, read_mask

SIZE = 96


# ----------------------------------------------------------------------------- a hand-made WORK

def _scene(rng: np.random.Generator, radius: int, center: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """A textured image with a brighter disc, and its 0/255 mask with JPEG-like noise."""
    # Tissue-like texture: smooth random fields at a few scales, so no two scenes match.
    base = np.full((SIZE, SIZE), 110.0)
    for cells, amplitude in ((3, 15.0), (8, 8.0), (24, 5.0)):
        field = rng.normal(0, 1, (cells, cells)).astype(np.float32)
        base += amplitude * cv2.resize(field, (SIZE, SIZE), interpolation=cv2.INTER_CUBIC)
    image = base[..., None] + rng.normal(0, 3, (SIZE, SIZE, 3))
    mask = np.zeros((SIZE, SIZE), np.uint8)
    cv2.circle(mask, center[::-1], radius, 255, -1)
    image[mask > 0] += 55
    noise = rng.integers(0, 9, mask.shape).astype(np.uint8)
    noisy = np.where(mask > 0, 255 - noise, noise).astype(np.uint8)
    return np.clip(image, 0, 255).astype(np.uint8), noisy


def _defect(name: str, mask: np.ndarray) -> np.ndarray:
    out = mask.copy()
    if name == "speckle":
        for y, x in ((4, 4), (6, 90), (90, 6)):
            cv2.circle(out, (x, y), 2, 255, -1)
    elif name == "holes":
        ys, xs = np.nonzero(mask > 127)
        cy, cx = int(ys.mean()), int(xs.mean())
        cv2.circle(out, (cx - 5, cy), 2, 0, -1)
        cv2.circle(out, (cx + 5, cy), 2, 0, -1)
    elif name == "nonbinary":
        out = cv2.GaussianBlur(mask, (0, 0), 3)
    elif name == "empty":
        out = np.zeros_like(mask)
    elif name == "inverted":
        out = 255 - mask
    elif name == "misaligned":                    # moved off its object, towards the centre
        ys, xs = np.nonzero(mask > 127)
        dy, dx = (26 if ys.mean() < SIZE / 2 else -26), (26 if xs.mean() < SIZE / 2 else -26)
        out = cv2.warpAffine(mask, np.float32([[1, 0, dx], [0, 1, dy]]), (SIZE, SIZE),
                             flags=cv2.INTER_NEAREST)
    return out


DEFECTS = ("speckle", "holes", "nonbinary", "empty", "inverted", "misaligned")


def make_work(root: Path, n_clean: int = 12, seed: int = 0) -> dict:
    """WORK/shards/ingest-00000.h5 + WORK/manifests/ingest.csv as ingest writes them, with
    one sample per defect, an exact duplicate, an excluded size mismatch, and ingest reports
    of one unpaired and one unreadable file. Returns what was made."""
    rng = np.random.default_rng(seed)
    samples = []
    for i in range(n_clean):
        radius = int(rng.integers(14, 20))
        center = (int(rng.integers(25, 71)), int(rng.integers(25, 71)))
        image, mask = _scene(rng, radius, center)
        samples.append((f"clean{i:02d}", image, mask, "", mask))
    for name in DEFECTS:
        image, mask = _scene(rng, int(rng.integers(14, 20)), (int(rng.integers(30, 66)), int(rng.integers(30, 66))))
        samples.append((name, image, _defect(name, mask), name, mask))
    samples.append(("copy", samples[0][1].copy(), samples[0][2].copy(), "duplicate", samples[0][2]))
    image, mask = _scene(rng, 16, (30, 60))
    samples.append(("sized", image, cv2.resize(mask, (70, 70), interpolation=cv2.INTER_NEAREST),
                    "size_mismatch", mask))
    rows = []
    with ShardSequence(root / "shards", "ingest", "ingest") as shards:
        for k, (stem, image, mask, _, _) in enumerate(samples):
            name, index = shards.add(sample_id=f"src/{stem}", image=image, mask=mask)
            sized = mask.shape != image.shape[:2]
            rows.append(dict(
                sample_id=f"src/{stem}", source="src", split=("train", "val", "test")[k % 3],
                group=f"src/{stem}", image_shard=f"../shards/{name}", image_index=index,
                mask_shard=f"../shards/{name}", mask_index=index, height=SIZE, width=SIZE,
                fg_fraction=0.0 if sized else float((mask > 127).mean()),
                status="excluded" if sized else "ok", issues="size_mismatch" if sized else "",
                parent_id="", image_path=f"../raw/images/{stem}.png",
                mask_path=f"../raw/masks/{stem}.png", stem=stem, phash=phash_hex(phash(image)),
                image_sha1=array_sha1(image), mask_sha1=array_sha1(mask),
                mask_values=len(np.unique(mask)), has_roi=0, roi_path=""))
    rows[-2]["split"] = rows[0]["split"]  # the copy sits in its original's split (no leakage)
    manifest = write_manifest(pd.DataFrame(rows), root / "manifests" / "ingest.csv")
    reports = root / "reports" / "ingest"
    reports.mkdir(parents=True)
    pd.DataFrame([dict(source="src", stem="lonely", path="/raw/images/lonely.png",
                       reason="image without mask")]).to_csv(reports / "unpaired.csv", index=False)
    pd.DataFrame([dict(source="src", stem="broken", path="/raw/images/broken.png",
                       reason="truncated PNG (no IEND chunk)")]).to_csv(reports / "unreadable.csv", index=False)
    # stem -> (image, stored mask, code, mask before the defect)
    return {"manifest": manifest, "samples": {s[0]: s[1:] for s in samples}}


@pytest.fixture(scope="module")
def cleaned(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("work")
    made = make_work(root)
    result = clean(made["manifest"], workers=1, progress=False)
    return {**made, "root": root, "result": result,
            "findings": pd.read_csv(result.findings_path, dtype=str, keep_default_na=False),
            "out": read_manifest(result.manifest_path)}


def _codes(findings: pd.DataFrame, sample_id: str, severities=("error", "warning", "info")) -> set[str]:
    rows = findings[(findings["sample_id"] == sample_id) & findings["severity"].isin(severities)]
    return set(rows["code"])


# ----------------------------------------------------------------------------- behaviour

def test_each_known_defect_gives_exactly_its_code(cleaned) -> None:
    findings = cleaned["findings"]
    for name in DEFECTS + ("size_mismatch",):
        stem = "sized" if name == "size_mismatch" else name
        assert _codes(findings, f"src/{stem}") == {name}, stem
    # The duplicate pair: the copy is excluded, the original kept, nothing else.
    assert _codes(findings, "src/copy") == {"duplicate"}
    assert _codes(findings, "src/clean00") == set()
    for i in range(1, 12):
        assert _codes(findings, f"src/clean{i:02d}") == set(), i
    # Ingest's reports become findings without a manifest row.
    assert _codes(findings, "src/lonely") == {"missing_mask"}
    assert _codes(findings, "src/broken") == {"unreadable"}


def test_statuses_issues_and_repaired_masks(cleaned) -> None:
    out = cleaned["out"].set_index("sample_id")
    status = out["status"].to_dict()
    assert {status[f"src/{s}"] for s in ("speckle", "holes", "nonbinary")} == {"repaired"}
    # Only what is certain is excluded; heuristics (inverted, misaligned) are flagged.
    assert {status[f"src/{s}"] for s in ("empty", "sized", "copy")} == {"excluded"}
    for heuristic in ("inverted", "misaligned"):
        assert status[f"src/{heuristic}"] == "ok" and out.loc[f"src/{heuristic}", "issues"] == heuristic
    assert out.loc["src/sized", "issues"] == "size_mismatch"
    assert len(out) == len(cleaned["samples"])          # nothing is lost
    folder = cleaned["result"].manifest_path.parent
    samples = cleaned["samples"]
    for stem in ("speckle", "holes"):                     # specks removed, holes filled
        got = load_sample(folder, out.loc[f"src/{stem}"]).mask
        assert np.array_equal(got, (samples[stem][3] > 127).astype(np.uint8)), stem
    got = load_sample(folder, out.loc["src/nonbinary"]).mask  # binarized at mid grey
    assert np.array_equal(got, (samples["nonbinary"][1] > 127.5).astype(np.uint8))
    # Images stay in the ingest shards; masks point at the clean shards with their checksum.
    assert set(out["image_shard"]) == {"../shards/ingest-00000.h5"}
    assert set(out["mask_shard"]) == {"../shards/clean-00000.h5"}
    for sid, row in out.iterrows():
        mask = read_mask(folder / row["mask_shard"], int(row["mask_index"]))
        assert mask.dtype == np.uint8 and mask.max() <= 1 and array_sha1(mask) == row["mask_sha1"]


def test_report_names_every_flagged_sample_with_relative_thumbnails(cleaned) -> None:
    result = cleaned["result"]
    html = result.report_path.read_text(encoding="utf-8")
    findings = cleaned["findings"]
    flagged = set(findings.loc[findings["severity"] != "info", "sample_id"])
    assert len(flagged) >= 9  # nonbinary is info: listed in a table, not drawn
    for sample_id in flagged:
        assert sample_id in html, sample_id
    sources = re.findall(r"src=[\"']([^\"']+)[\"']", html)
    assert sources and all(not s.startswith("/") and s.startswith("thumbs/") for s in sources)
    assert all((result.report_path.parent / s).is_file() for s in sources)
    # Counts at the top, one section per code.
    positions = {}
    for code in ("speckle", "holes", "nonbinary", "empty", "inverted", "misaligned", "duplicate"):
        match = re.search(rf"id=[\"']{code}[\"']", html)
        assert match, code
        positions[code] = match.start()
    # decisions first (excluded, then flagged), routine repairs last and collapsed
    assert positions["empty"] < positions["duplicate"] < positions["inverted"] < positions["speckle"]
    assert max(positions["empty"], positions["misaligned"]) < min(positions["speckle"], positions["holes"])
    assert html.index("<details>", positions["speckle"]) < html.index("src/speckle", positions["speckle"])


def test_summary_and_rerun_is_a_no_op(cleaned, tmp_path: Path) -> None:
    text = cleaned["result"].summary()
    assert "speckle" in text and "clean.csv" in text and "index.html" in text
    again = clean(cleaned["manifest"], workers=1, progress=False)
    assert again.skipped and again.n_samples == cleaned["result"].n_samples
    with pytest.raises(SegprepError, match="--force"):
        clean(cleaned["manifest"], options=CleanOptions(strict=True), workers=1, progress=False)


def test_strict_and_output_elsewhere(tmp_path: Path) -> None:
    made = make_work(tmp_path / "work", n_clean=9, seed=1)
    other = tmp_path / "elsewhere"
    result = clean(made["manifest"], other, CleanOptions(strict=True), workers=1, progress=False)
    out = read_manifest(result.manifest_path)          # valid: image shards linked into WORK
    row = out.set_index("sample_id").loc["src/misaligned"]
    assert row["status"] == "excluded" and "misaligned" in row["issues"]
    assert (other / "shards" / "ingest-00000.h5").is_file()
    sample = load_sample(result.manifest_path.parent, out.iloc[0])
    assert sample.image.shape == (SIZE, SIZE, 3)


def test_same_output_for_any_worker_count(tmp_path: Path) -> None:
    outputs = []
    for workers in (1, 2):
        root = tmp_path / f"w{workers}"
        made = make_work(root, n_clean=10, seed=2)
        result = clean(made["manifest"], workers=workers, progress=False)
        masks = [read_mask(result.manifest_path.parent / r["mask_shard"], int(r["mask_index"]))
                 for r in read_manifest(result.manifest_path).to_dict("records")]
        outputs.append((result.manifest_path.read_text(), result.findings_path.read_text(), masks))
    assert outputs[0][0] == outputs[1][0] and outputs[0][1] == outputs[1][1]
    assert all(np.array_equal(a, b) for a, b in zip(outputs[0][2], outputs[1][2]))


def test_truncated_shard_or_broken_row_is_a_clear_error_and_writes_nothing(tmp_path: Path) -> None:
    made = make_work(tmp_path / "a")
    manifest = made["manifest"]
    table = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    table.loc[3, "mask_index"] = "x7"
    table.to_csv(manifest, index=False)
    with pytest.raises(ManifestError, match=r"ingest\.csv: line 5: column mask_index"):
        clean(manifest, workers=1, progress=False)

    made = make_work(tmp_path / "b")
    close_shards()
    shard = tmp_path / "b" / "shards" / "ingest-00000.h5"
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 3])
    with pytest.raises(ManifestError, match="ingest-00000.h5.*(truncated|corrupt)"):
        clean(made["manifest"], workers=1, progress=False)
    for root in (tmp_path / "a", tmp_path / "b"):
        assert not (root / "manifests" / "clean.csv").exists()
        assert not list((root / "shards").glob("clean-*")) and not list((root / "shards").glob(".clean*"))
        assert not (root / "reports" / "clean").exists()


def test_cli_prints_the_summary_and_one_line_errors(tmp_path: Path) -> None:
    from segprep.cli import main

    made = make_work(tmp_path / "work", n_clean=9, seed=3)
    runner = CliRunner()
    result = runner.invoke(main, ["clean", str(made["manifest"]), "--workers", "1"])
    assert result.exit_code == 0, result.output
    assert re.search(r"speckle\s+warning\s+1\s+1\s+0\s+0", result.output)
    assert "report:" in result.output and "manifest:" in result.output
    bad = runner.invoke(main, ["clean", str(made["manifest"]), "--threshold", "bright", "--force"])
    assert bad.exit_code == 1 and "mid, otsu or a grey value" in bad.output
    missing = runner.invoke(main, ["clean", str(tmp_path / "nope.csv")])
    assert missing.exit_code == 1 and "manifest not found" in missing.output
    assert "--min-area" in runner.invoke(main, ["clean", "--help"]).output


# ----------------------------------------------------------------------------- synth -> ingest -> clean

def _ingest(synth_result, tmp_path: Path) -> Path:
    from segprep.ingest import ingest

    return ingest([synth_result.root], tmp_path / "work", workers=1).manifest_path


def test_clean_data_changes_nothing_but_0_255_to_0_1(synth, tmp_path: Path) -> None:
    for layout in ("kvasir-seg", "drive"):   # JPEG masks; thin vessels (no pixel may be lost)
        manifest = _ingest(synth(layout, n=10, noise=0.0), tmp_path / layout)
        result = clean(manifest, workers=1, progress=False)
        findings = pd.read_csv(result.findings_path, dtype=str, keep_default_na=False)
        assert set(findings["severity"]) <= {"info"}, findings.to_string()
        before = read_manifest(manifest)
        after = read_manifest(result.manifest_path)
        assert (after["status"] == "ok").all() and (after["issues"] == "").all()
        for raw_row, row in zip(before.to_dict("records"), after.to_dict("records")):
            raw = load_sample(manifest.parent, raw_row).mask
            mask = load_sample(result.manifest_path.parent, row).mask
            assert np.array_equal(mask, (raw > 127).astype(np.uint8)), row["sample_id"]
            assert row["image_shard"] == raw_row["image_shard"]


def test_synth_defects_are_found(synth, tmp_path: Path) -> None:
    made = synth("ph2", n=30, noise=0.4, seed=1)
    manifest = _ingest(made, tmp_path)
    result = clean(manifest, workers=1, progress=False)
    findings = pd.read_csv(result.findings_path, dtype=str, keep_default_na=False)
    findings["stem"] = findings["sample_id"].str.split("/", n=1).str[1]
    for row in made.truth.itertuples():
        code = {"corrupt_image": "unreadable"}.get(row.defect, row.defect)
        members = {row.stem}
        source = re.search(r"copy of (\S+)", row.details)
        if source:
            members.add(source.group(1))
        hit = findings[findings["stem"].isin(members) & (findings["code"] == code)]
        assert len(hit), (row.stem, code)
    shutil.rmtree(tmp_path / "work")
