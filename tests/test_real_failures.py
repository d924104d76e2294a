"""The failure classes seen on real datasets (issue 16), each rebuilt here from data made in the
test: colour lost in TIFFs, large lesions called inverted, one mask file per lesion dropped,
near-identical images with other masks in another class, faint grey masks. (Shifted and
swapped masks: tests/test_checks.py, on the measurements themselves.)"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from segprep.checks.options import CleanOptions
from segprep.clean import clean
from segprep.ingest import _data_notes, ingest
from segprep.manifest import read_manifest
from segprep.shards import load_sample


def _write(path: Path, array: np.ndarray, quality: int = 95) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if array.ndim == 3:
        array = cv2.cvtColor(array, cv2.COLOR_RGB2BGR)
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if path.suffix == ".jpg" else []
    assert cv2.imwrite(str(path), array, params)


def _findings(result) -> pd.DataFrame:
    return pd.read_csv(result.findings_path, dtype=str, keep_default_na=False)


def _ultrasound(rng: np.random.Generator, size: int = 96) -> tuple[np.ndarray, list[np.ndarray]]:
    """A grey speckled scan with one or two dark lesions; one 0/255 mask per lesion."""
    image = rng.gamma(4.0, 30.0, (size, size)).clip(0, 255)
    image = cv2.GaussianBlur(image.astype(np.float32), (0, 0), 1.2)
    masks = []
    for _ in range(int(rng.integers(1, 3))):
        mask = np.zeros((size, size), np.uint8)
        cv2.ellipse(mask, (int(rng.integers(20, 76)), int(rng.integers(20, 76))),
                    (int(rng.integers(7, 14)), int(rng.integers(6, 12))), float(rng.integers(0, 180)),
                    0, 360, 255, -1)
        image[mask > 0] *= 0.35
        masks.append(mask)
    return image.clip(0, 255).astype(np.uint8), masks


@pytest.fixture(scope="module")
def busi(tmp_path_factory) -> dict:
    """A BUSI-like dataset: benign/ and malignant/ flat folders (two sources), one mask file per
    lesion (name_mask.png, name_mask_1.png), and one benign scan saved again, re-encoded and
    cropped by 2%, under malignant/ with another lesion's mask."""
    root = tmp_path_factory.mktemp("busi") / "Dataset_BUSI"
    rng = np.random.default_rng(0)
    made: dict = {"several": [], "masks": {}}
    for cls in ("benign", "malignant"):
        for k in range(1, 15):
            image, masks = _ultrasound(rng)
            stem = f"{cls} ({k})"
            _write(root / cls / f"{stem}.png", image)
            for n, mask in enumerate(masks):
                _write(root / cls / (f"{stem}_mask.png" if n == 0 else f"{stem}_mask_{n}.png"), mask)
            made["masks"][f"{cls}/{stem}"] = np.maximum.reduce(masks)
            if len(masks) > 1:
                made["several"].append(f"{cls}/{stem}")
    original = cv2.imread(str(root / "benign" / "benign (3).png"), cv2.IMREAD_GRAYSCALE)
    copy = cv2.resize(original[2:-2, 2:-2], (96, 96), interpolation=cv2.INTER_AREA)
    _write(root / "malignant" / "malignant (15).jpg", copy, quality=90)
    other = np.zeros((96, 96), np.uint8)
    cv2.circle(other, (80, 15), 10, 255, -1)   # a lesion somewhere else entirely
    _write(root / "malignant" / "malignant (15)_mask.png", other)
    work = root.parent / "work"
    ingested = ingest([root], work, workers=1)
    result = clean(ingested.manifest_path, workers=1, progress=False)
    return {**made, "root": root, "work": work, "ingested": ingested, "result": result,
            "findings": _findings(result), "manifest": read_manifest(result.manifest_path)}


def test_every_lesion_mask_is_merged_and_reported(busi) -> None:
    assert busi["several"], "the fixture must make images with two lesions"
    ingested = busi["ingested"]
    assert ingested.unpaired == 0                                   # no mask left behind
    assert any("had several mask files" in note for note in ingested.notes)
    manifest = read_manifest(ingested.manifest_path).set_index("sample_id")
    for sample_id in busi["several"]:
        row = manifest.loc[sample_id]
        assert row["extra_mask_paths"].endswith("_mask_1.png")
        merged = load_sample(ingested.manifest_path.parent, row).mask  # as ingest stored it
        assert np.array_equal(merged, busi["masks"][sample_id])
    merged = busi["findings"][busi["findings"]["code"] == "merged_masks"]
    assert set(merged["sample_id"]) == set(busi["several"])
    assert (merged["severity"] == "info").all() and merged["message"].str.contains("_mask_1.png").all()


def test_near_identical_images_in_two_classes_with_other_masks(busi) -> None:
    findings = busi["findings"]
    conflict = findings[findings["code"] == "near_duplicate_conflict"]
    pair = {"benign/benign (3)", "malignant/malignant (15)"}
    assert set(conflict["sample_id"]) == pair
    assert set(conflict["partner"]) == pair                         # each names the other
    assert (conflict["action"] == "flagged").all()
    html = busi["result"].report_path.read_text(encoding="utf-8")
    assert "partner: malignant/malignant (15)" in html              # shown side by side
    # no other pair or heuristic finding (the pair may also be a leak between splits; two
    # overlapping lesions may enclose a hole), nothing excluded
    flagged = findings[findings["severity"].isin(["error", "warning"])
                       & ~findings["code"].isin(["holes", "speckle"])]
    assert set(flagged["sample_id"]) == pair
    assert busi["result"].n_excluded == 0


def test_rgb_tiffs_tagged_min_is_black_are_stored_in_colour(tmp_path: Path) -> None:
    import tifffile

    rng = np.random.default_rng(3)
    for k in range(6):
        image = np.empty((48, 64, 3), np.uint8)
        image[:] = (180, 70, 60)
        image = np.clip(image + rng.normal(0, 10, image.shape), 0, 255).astype(np.uint8)
        (tmp_path / "endo" / "images").mkdir(parents=True, exist_ok=True)
        tifffile.imwrite(tmp_path / "endo" / "images" / f"{k}.tif", image,
                         photometric="minisblack", planarconfig="contig")
        mask = np.zeros((48, 64), np.uint8)
        cv2.circle(mask, (30, 24), 10, 255, -1)
        _write(tmp_path / "endo" / "masks" / f"{k}.png", mask)
    result = ingest([tmp_path / "endo"], tmp_path / "work", workers=1)
    df = read_manifest(result.manifest_path)
    assert set(df["image_decoder"]) == {"tifffile"}
    image = load_sample(result.manifest_path.parent, df.iloc[0]).image
    assert not (image[..., 0] == image[..., 1]).all()               # colour kept, not 3 x grey
    assert any("tifffile" in note for note in result.notes)


def test_images_decoded_grey_while_declaring_colour_are_a_warning() -> None:
    table = pd.DataFrame({"source": ["a"] * 3 + ["b"] * 2, "declared_colour": [1, 1, 1, 0, 0],
                          "grey": [1, 1, 1, 1, 1], "image_decoder": ["opencv"] * 5,
                          "extra_mask_paths": [[]] * 5, "decode_warnings": [""] * 5})
    notes = _data_notes(table)
    assert len(notes) == 1 and notes[0].startswith("WARNING a: all 3 images decoded grey")


def _dermoscopy(rng: np.random.Generator, k: int, size: int = 96) -> tuple[np.ndarray, np.ndarray]:
    image = np.empty((size, size, 3), np.float32)
    image[:] = (215, 170, 150)
    mask = np.zeros((size, size), np.uint8)
    if k % 3 == 0:   # a lesion filling 65-98% of the frame, touching three sides
        cv2.ellipse(mask, (size // 2, size // 2 + 8), (size // 2 + int(rng.integers(6, 30)), size // 2),
                    0, 0, 360, 255, -1)
    else:
        radius = int(rng.integers(12, 34))
        cv2.circle(mask, (int(rng.integers(radius, size - radius)), int(rng.integers(radius, size - radius))),
                   radius, 255, -1)
    image[mask > 0] = (120, 75, 55)
    image += rng.normal(0, 9, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8), mask


def test_large_lesions_filling_the_frame_are_not_inverted(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    large = []
    for k in range(30):
        image, mask = _dermoscopy(rng, k)
        if k % 3 == 0:
            assert mask.mean() / 255 > 0.65
            large.append(f"lesions/{k:02d}")
        if k == 7:
            mask = 255 - mask   # one truly inverted mask
        _write(tmp_path / "lesions" / "images" / f"{k:02d}.png", image)
        _write(tmp_path / "lesions" / "masks" / f"{k:02d}_segmentation.png", mask)
    ingested = ingest([tmp_path / "lesions"], tmp_path / "work", workers=1)
    result = clean(ingested.manifest_path, workers=1, progress=False)
    findings = _findings(result)
    assert set(findings.loc[findings["code"] == "inverted", "sample_id"]) == {"lesions/07"}
    assert not set(findings["sample_id"]) & set(large)              # no finding at all on them
    assert result.n_excluded == 0                                    # heuristics never exclude
    strict = clean(ingested.manifest_path, tmp_path / "strict", CleanOptions(strict=True),
                   workers=1, progress=False)
    assert strict.n_excluded == 1


def test_faint_grey_masks_are_counted(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    grey = []
    for k in range(10):
        image, masks = _ultrasound(rng)
        mask = masks[0]
        if k % 2:   # anti-aliased outline: a handful of grey pixels on the edge
            edge = mask - cv2.erode(mask, np.ones((3, 3), np.uint8))
            ys, xs = np.nonzero(edge)
            mask[ys[::4], xs[::4]] = 100
            grey.append(f"scans/s{k}")
        _write(tmp_path / "scans" / "images" / f"s{k}.png", image)
        _write(tmp_path / "scans" / "masks" / f"s{k}.png", mask)
    ingested = ingest([tmp_path / "scans"], tmp_path / "work", workers=1)
    result = clean(ingested.manifest_path, workers=1, progress=False)
    nonbinary = _findings(result).query("code == 'nonbinary'")
    assert sorted(nonbinary["sample_id"]) == sorted(grey)
    assert (nonbinary["action"] == "repaired").all() and (nonbinary["severity"] == "info").all()
    assert "nonbinary" in result.summary()


def test_a_source_with_many_empty_masks_keeps_them_as_negatives(tmp_path: Path) -> None:
    rng = np.random.default_rng(6)
    for cls, n_empty in (("normal", 6), ("lesion", 1)):
        for k in range(12):
            image, masks = _ultrasound(rng)
            mask = np.zeros_like(masks[0]) if k < n_empty else masks[0]
            _write(tmp_path / "scans" / cls / "images" / f"{k}.png", image)
            _write(tmp_path / "scans" / cls / "masks" / f"{k}.png", mask)
    ingested = ingest([tmp_path / "scans"], tmp_path / "work", workers=1)
    result = clean(ingested.manifest_path, workers=1, progress=False)
    out = read_manifest(result.manifest_path)
    status = out.groupby("source")["status"].apply(lambda s: (s == "excluded").sum()).to_dict()
    assert status == {"normal": 0, "lesion": 1}                       # a lone empty mask: excluded
    assert any(note.startswith("normal: 6 empty masks") for note in result.notes)
