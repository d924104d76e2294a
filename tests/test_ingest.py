"""`segprep ingest`: every layout into shards + manifest, reports, splits, determinism, resume."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from PIL import Image

from segprep import ingest as ingest_module
from segprep.cli import main
from segprep.errors import SegprepError
from segprep.hashing import array_sha1, hamming, near_pairs, phash
from segprep.ingest import ingest
from segprep.manifest import COLUMNS, read_manifest
from segprep.shards import close_shards, load_sample
from segprep.splits import assign_splits, read_splits_file


def _reports(work: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    folder = work / "reports" / "ingest"
    read = lambda name: pd.read_csv(folder / name, dtype=str, keep_default_na=False)
    return read("unpaired.csv"), read("unreadable.csv")


def _assert_groups_within_one_split(df: pd.DataFrame) -> None:
    spans = df.groupby("group")["split"].nunique()
    assert (spans == 1).all(), spans[spans > 1]


# ----------------------------------------------------------------------------- hashing

def test_phash_is_stable_under_small_changes_and_far_for_other_images() -> None:
    rng = np.random.default_rng(0)
    low = rng.uniform(0, 255, (8, 8, 3)).astype(np.float32)
    image = cv2.resize(low, (96, 80), interpolation=cv2.INTER_CUBIC).astype(np.uint8)
    other = cv2.resize(rng.uniform(0, 255, (8, 8, 3)).astype(np.float32), (96, 80),
                       interpolation=cv2.INTER_CUBIC).astype(np.uint8)
    ok, jpeg = cv2.imencode(".jpg", np.roll(image, 1, axis=1), [cv2.IMWRITE_JPEG_QUALITY, 80])
    similar = cv2.imdecode(jpeg, cv2.IMREAD_UNCHANGED)
    h = phash(image)
    assert 0 <= h < 2**64 and phash(image.copy()) == h
    assert hamming(h, phash(similar)) <= 6 < hamming(h, phash(other))
    assert phash(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)) == h
    i, j, d, nearest = near_pairs(np.array([h, phash(similar), phash(other)], np.uint64), 6)
    assert list(zip(i, j)) == [(0, 1)] and list(nearest[:2]) == [1, 0]


# ----------------------------------------------------------------------------- every layout

@pytest.mark.parametrize("layout", ["kvasir-seg", "cvc-clinicdb", "drive", "ph2", "folder"])
def test_ingest_clean_synth_of_every_layout(synth, tmp_path: Path, layout: str) -> None:
    data = synth(layout, n=12, seed=1)
    result = ingest([data.root], tmp_path / "work", workers=1)
    assert result.n_samples == 12 and result.unpaired == 0 and result.unreadable == 0
    manifest = result.manifest_path
    assert manifest == tmp_path / "work" / "manifests" / "ingest.csv"
    df = read_manifest(manifest)
    assert tuple(df.columns[:len(COLUMNS)]) == COLUMNS
    source = df["source"].iloc[0]
    assert (df["sample_id"] == source + "/" + df["stem"]).all()
    assert (df["status"] == "ok").all() and (df["issues"] == "").all()
    assert df["image_shard"].str.fullmatch(r"\.\./shards/ingest-\d{5}\.h5").all()
    assert df["phash"].str.fullmatch(r"[0-9a-f]{16}").all()
    _assert_groups_within_one_split(df)
    for _, row in df.iterrows():
        assert (manifest.parent / row["image_path"]).is_file()
        assert (manifest.parent / row["mask_path"]).is_file()
        sample = load_sample(manifest.parent, row)
        assert sample.image.shape == (row["height"], row["width"], 3) and sample.image.dtype == np.uint8
        assert array_sha1(sample.image) == row["image_sha1"]
        assert array_sha1(sample.mask) == row["mask_sha1"]
        assert int(row["mask_values"]) == len(np.unique(sample.mask))
        assert f"{phash(sample.image):016x}" == row["phash"]
        if layout == "drive":  # the field of view travels with the image, shaped like it
            assert row["has_roi"] == "1" and sample.roi is not None
            assert sample.roi.shape == sample.image.shape[:2]
            inside = sample.roi > 0
            assert row["fg_fraction"] == pytest.approx((sample.mask[inside] > 127).mean(), abs=1e-5)
        else:
            assert row["has_roi"] == "0" and sample.roi is None
            assert row["fg_fraction"] == pytest.approx((sample.mask > 127).mean(), abs=1e-5)
    if layout == "drive":  # the official split: test stays test, val carved from training
        assert (df.loc[df["stem"].str.endswith("_test"), "split"] == "test").all()
        assert (df["group"] == df["sample_id"]).all()  # fundus images alike, but distinct
        assert set(df.loc[df["stem"].str.endswith("_training"), "split"]) == {"train", "val"}
    else:
        assert df["split"].value_counts().to_dict() == {"train": 10, "val": 1, "test": 1}
    close_shards()


@pytest.mark.parametrize("layout", ["kvasir-seg", "cvc-clinicdb", "drive", "ph2", "folder"])
def test_ingest_keeps_jpeg_and_png_files_as_they_are(synth, tmp_path: Path, layout: str) -> None:
    """The shard keeps an 8-bit JPEG's or PNG's own bytes, and the pixels otherwise (TIFF, BMP,
    GIF); either way reading gives the pixels the manifest's checksums describe."""
    import h5py

    from segprep.imageio import decode_image, decode_mask, keepable

    data = synth(layout, n=6, seed=3)
    work = tmp_path / "work"
    result = ingest([data.root], work, workers=1)
    df = read_manifest(result.manifest_path)
    close_shards()
    kept = 0
    for _, row in df.iterrows():
        with h5py.File(result.manifest_path.parent / row["image_shard"], "r") as f:
            for name, column, decode in (("images", "image_path", decode_image),
                                         ("masks", "mask_path", decode_mask)):
                source = result.manifest_path.parent / row[column]
                decoded = decode(source)
                stored = f[name][f"{int(row['image_index']):07d}"]
                if keepable(decoded):
                    kept += 1
                    assert stored.ndim == 1 and stored[()].tobytes() == source.read_bytes()
                else:
                    np.testing.assert_array_equal(stored[()], decoded.array)
    # Kvasir-SEG ships JPEGs and a folder PNGs: kept; CVC and DRIVE TIFFs (+ GIF), PH2 BMPs: pixels
    assert (kept > 0) == (layout in ("kvasir-seg", "folder")), kept
    for _, row in df.iterrows():
        sample = load_sample(result.manifest_path.parent, row)
        assert array_sha1(sample.image) == row["image_sha1"]
        assert array_sha1(sample.mask) == row["mask_sha1"]
    close_shards()
    sources = sum(p.stat().st_size for p in data.root.rglob("*") if p.is_file())
    shards = sum(p.stat().st_size for p in (work / "shards").glob("*.h5"))
    if layout == "kvasir-seg":  # JPEG images and masks: the shards are the files, plus HDF5's index
        assert shards - sources < 4096 * len(df), (shards, sources)


@pytest.mark.parametrize("layout,n", [("kvasir-seg", 11), ("cvc-clinicdb", 11), ("drive", 10),
                                      ("ph2", 11), ("folder", 11)])
def test_injected_defects_land_in_reports_and_exclusions(synth, tmp_path: Path, layout: str, n: int) -> None:
    data = synth(layout, n=n, noise=1.0, seed=2)  # every defect code exactly once
    truth = data.truth.set_index("defect")["stem"]
    result = ingest([data.root], tmp_path / "work", workers=1)
    df = read_manifest(result.manifest_path)
    unpaired, unreadable = _reports(tmp_path / "work")

    assert list(unreadable["stem"]) == [truth["corrupt_image"]]
    assert "truncated" in unreadable["reason"].iloc[0] or "corrupt" in unreadable["reason"].iloc[0]
    assert Path(unreadable["path"].iloc[0]).is_file()
    assert list(unpaired["stem"]) == [truth["missing_mask"]]
    assert unpaired["reason"].iloc[0].startswith("image without mask")
    assert result.n_samples == n - 2 and len(df) == n - 2

    excluded = df[df["status"] == "excluded"]
    assert list(excluded["stem"]) == [truth["size_mismatch"]]
    assert list(excluded["issues"]) == ["size_mismatch"]
    row = excluded.iloc[0]
    sample = load_sample(result.manifest_path.parent, row)  # both arrays kept at native size
    assert sample.image.shape[:2] == (row["height"], row["width"]) != sample.mask.shape

    nonbinary = df[df["stem"] == truth["nonbinary"]].iloc[0]
    assert int(nonbinary["mask_values"]) > 10
    # An exact duplicate always shares its source's group, so they can never straddle splits.
    source = re.search(r"copy of (\S+)", data.truth.set_index("defect")["details"]["duplicate"])[1]
    by_stem = df.set_index("stem")
    assert by_stem.loc[truth["duplicate"], "group"] == by_stem.loc[source, "group"]
    _assert_groups_within_one_split(df)
    assert result.counts[df["source"].iloc[0]]["unreadable"] == 1
    close_shards()


# ----------------------------------------------------------------------------- splits

def test_same_inputs_and_seed_give_identical_manifest_bytes(synth, tmp_path: Path) -> None:
    sources = [synth("kvasir-seg", n=12, noise=0.5, seed=3).root, synth("drive", n=8, seed=3).root]
    a = ingest(sources, tmp_path / "a", workers=1)
    b = ingest(sources, tmp_path / "b", workers=2)  # the worker count must not matter
    assert a.manifest_path.read_bytes() == b.manifest_path.read_bytes()
    c = ingest(sources, tmp_path / "c", workers=1, split_seed=7)
    _assert_groups_within_one_split(read_manifest(c.manifest_path))
    close_shards()


def _samples(n: int, hashes: list[int], source: str = "s", official: str = "", groups=None) -> pd.DataFrame:
    return pd.DataFrame({
        "sample_id": [f"{source}/{k:04d}" for k in range(n)], "source": source,
        "stem": [f"{k:04d}" for k in range(n)], "phash": hashes, "official_split": official,
        "layout_group": groups if groups is not None else "",
    })


def test_chaining_guard_keeps_a_chain_of_similar_frames_from_becoming_one_group() -> None:
    # Each hash differs from the next by 4 bits: a chain 0~1~2~... that union-find alone
    # would make into one group holding every sample.
    n, bits = 200, 0
    hashes = []
    rng = np.random.default_rng(0)
    for k in range(n):
        hashes.append(bits)
        flip = rng.choice(64, 4, replace=False)
        for b in flip:
            bits ^= 1 << int(b)
    out, stats = assign_splits(_samples(n, hashes), val=0.1, test=0.1, seed=0)
    sizes = out["group"].value_counts()
    assert sizes.max() <= stats["group_cap"] + 2  # a mutual-nearest link may add a little
    assert stats["merges_refused_by_cap"] > 0
    realised = out["split"].value_counts(normalize=True)
    assert abs(realised["val"] - 0.1) <= 0.04 and abs(realised["test"] - 0.1) <= 0.04
    _assert_groups_within_one_split(out)


def test_synthetic_video_sequences_never_straddle_splits(synth, tmp_path: Path) -> None:
    # No sequence table matches synthetic frame numbers, so the groups come from near-duplicate
    # detection alone; synth_groups.csv holds each frame's true sequence.
    data = synth("cvc-clinicdb", n=120, noise=0.0, seed=0, size=(128, 128))
    result = ingest([data.root], tmp_path / "work", workers=1)
    df = read_manifest(result.manifest_path).merge(data.groups, on="stem", suffixes=("", "_true"))
    spans = df.groupby("group_true")["split"].nunique()
    assert (spans == 1).all(), spans[spans > 1]
    assert set(df["split"]) == {"train", "val", "test"}


def test_near_duplicate_candidates_need_the_confirming_hash_and_the_layout_threshold() -> None:
    # Four samples with one 64-bit hash: a framed image (endoscopy, fundus) can look like
    # that. Only the pair whose 256-bit hashes agree is a near duplicate.
    samples = _samples(4, [0x00FF00FF00FF00FF] * 4)
    samples["confirm_hash"] = [0, 1, 2**256 - 1, 2**256 - 2]
    out, stats = assign_splits(samples, val=0.0, test=0.0)
    assert stats["near_duplicate_candidates"] == 6 and stats["near_duplicate_pairs"] == 2
    assert out["group"].nunique() == 2
    samples["near_bits"] = 0  # a layout that groups exact copies only still does
    assert assign_splits(samples, val=0.0, test=0.0)[1]["near_duplicate_pairs"] == 2
    samples["phash"] = [0, 1, 2, 3]
    assert assign_splits(samples, val=0.0, test=0.0)[1]["near_duplicate_pairs"] == 0


def test_groups_never_span_splits_and_official_test_stays_test() -> None:
    n = 60
    hashes = [(k // 3) * (2**40 + 12345) for k in range(n)]  # triples of identical hashes
    official = ["test" if k >= 50 else "train" for k in range(n)]
    groups = [f"case{k // 2}" for k in range(n)]
    out, stats = assign_splits(_samples(n, hashes, official=official, groups=groups),
                               val=0.2, test=0.1, seed=4)
    _assert_groups_within_one_split(out)
    assert (out["split"].iloc[50:] == "test").all()
    assert set(out["split"].iloc[:48]) == {"train", "val"}
    assert stats["sources"]["s"]["requested"]["test"] == "fixed"
    # samples 48..50 share a hash across the fixed train/test line: reported, not merged
    assert stats["n_straddling_pairs"] >= 1


def test_splits_file_overrides_with_val_carved_from_train_by_group(tmp_path: Path) -> None:
    n = 40
    far_apart = [int(h) for h in np.random.default_rng(1).integers(0, 2**63, n)]
    samples = _samples(n, far_apart, source="kvasir-seg")
    table = tmp_path / "s.csv"
    rows = ["# where this list comes from", "source,stem,split,group"]
    rows += [f"kvasir-seg,{k:04d},{'test' if k < 8 else 'train'},{'g' + str(k // 4) if k < 20 else ''}"
             for k in range(n)]
    table.write_text("\n".join(rows) + "\n")
    out, stats = assign_splits(samples, val=0.1, test=0.5, seed=0, splits_table=read_splits_file(table))
    assert (out["split"].iloc[:8] == "test").all()
    assert (out["split"].iloc[8:] != "test").all() and (out["split"] == "val").sum() == 4
    assert out["group"].iloc[4] == "kvasir-seg/g1" and out["group"].iloc[30] == "kvasir-seg/0030"
    _assert_groups_within_one_split(out)

    # A group the file itself puts in two splits (PraNet's CVC list) is divided, with a note.
    rows[2 + 8] = rows[2 + 8].replace(",g2", ",g1")  # a train row joins test group g1
    table.write_text("\n".join(rows) + "\n")
    out, stats = assign_splits(samples, splits_table=read_splits_file(table))
    assert any("divided" in note for note in stats["notes"])
    _assert_groups_within_one_split(out)

    missing = tmp_path / "missing.csv"
    missing.write_text("source,stem,split\nkvasir-seg,0000,test\n")
    with pytest.raises(SegprepError, match="not listed"):
        assign_splits(samples, splits_table=read_splits_file(missing), splits_path=missing)
    other = tmp_path / "other.csv"
    other.write_text("source,stem,split\ndrive,01_test,test\n")
    with pytest.raises(SegprepError, match="names source"):
        assign_splits(samples, splits_table=read_splits_file(other), splits_path=other)
    bad = tmp_path / "bad.csv"
    bad.write_text("source,stem,split\nkvasir-seg,0000,holdout\n")
    with pytest.raises(SegprepError, match="holdout"):
        read_splits_file(bad)


def test_committed_split_lists_parse_and_carry_their_origin() -> None:
    folder = Path(__file__).resolve().parents[1] / "manifests"
    expected = {"kvasir-seg_medico2020.csv": {"train": 880, "test": 120},
                "kvasir-seg_pranet.csv": {"train": 900, "test": 100},
                "cvc-clinicdb_pranet.csv": {"train": 550, "test": 62}}
    for name, counts in expected.items():
        assert (folder / name).read_text().startswith("# ")
        assert read_splits_file(folder / name)["split"].value_counts().to_dict() == counts
    assert (folder / "cvc-clinicdb_sequences.csv").read_text().startswith("# ")
    assert (folder / "README.md").is_file()


# ----------------------------------------------------------------------------- robustness

def test_resume_after_a_kill_gives_the_uninterrupted_manifest(synth, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(ingest_module, "BLOCK", 4)
    source = synth("cvc-clinicdb", n=14, noise=0.3, seed=5).root
    clean = ingest([source], tmp_path / "clean", workers=1)

    real_load, calls = ingest_module.load_pair, {"n": 0}

    def dying(task):
        calls["n"] += 1
        if calls["n"] > 9:
            raise KeyboardInterrupt("killed")
        return real_load(task)

    monkeypatch.setattr(ingest_module, "load_pair", dying)
    with pytest.raises(KeyboardInterrupt):
        ingest([source], tmp_path / "work", workers=1)
    work = tmp_path / "work"
    assert not (work / "manifests" / "ingest.csv").exists()
    assert not list((work / "shards").glob("*.tmp"))  # the half-written shard was removed
    monkeypatch.setattr(ingest_module, "load_pair", real_load)
    resumed = ingest([source], work, workers=1)
    assert resumed.blocks_reused == 2 and resumed.blocks == 4
    assert resumed.manifest_path.read_bytes() == clean.manifest_path.read_bytes()


def test_rerun_is_a_no_op_unless_forced_or_inputs_change(synth, tmp_path: Path) -> None:
    source = tmp_path / "data"
    shutil.copytree(synth("folder", n=12, seed=6).root, source)
    work = tmp_path / "work"
    first = ingest([source], work, workers=1)
    stamp = first.manifest_path.stat().st_mtime_ns
    again = ingest([source], work, workers=1)
    assert again.skipped and again.n_samples == first.n_samples
    assert first.manifest_path.stat().st_mtime_ns == stamp
    forced = ingest([source], work, workers=1, force=True)
    assert not forced.skipped and forced.blocks_reused == 0
    assert forced.manifest_path.read_bytes() == first.manifest_path.read_bytes()
    # other options never replace a finished ingest silently (an official split would become
    # a random one): refused, naming what differs, unless --force
    with pytest.raises(SegprepError, match=r"other options \(--seed 0 -> 1\); pass --force"):
        ingest([source], work, workers=1, split_seed=1)
    assert first.manifest_path.read_bytes() == forced.manifest_path.read_bytes()
    other_seed = ingest([source], work, workers=1, split_seed=1, force=True)
    assert not other_seed.skipped
    (source / "masks" / "case_0001.png").unlink()  # an input changed: an update, blocks reused
    changed = ingest([source], work, workers=1, split_seed=1)
    assert not changed.skipped and changed.unpaired == 1 and changed.n_samples == 11
    close_shards()


def _write_image(path: Path, array: np.ndarray, mode: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode).save(path) if mode else cv2.imwrite(str(path), array)


def test_bad_inputs_are_reported_and_every_image_kind_is_read(tmp_path: Path) -> None:
    root = tmp_path / "my data ñ"  # spaces and non-ASCII in every path
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
    mask = np.zeros((24, 32), np.uint8)
    mask[5:15, 6:20] = 255
    images, masks = root / "images", root / "masks"
    _write_image(images / "rgb ok.png", rgb)
    _write_image(images / "grey.png", rgb[..., 0])
    _write_image(images / "rgba.png", np.dstack([rgb, np.full((24, 32), 9, np.uint8)]), "RGBA")
    _write_image(images / "deep.tif", rgb[..., 0].astype(np.uint16) * 257)
    Image.fromarray(rgb[..., 0]).convert("P").save(images / "palette.gif")
    _write_image(images / "Bild_ü.jpg", rgb)
    for stem in ("rgb ok", "grey", "rgba", "deep", "palette", "Bild_ü"):
        _write_image(masks / f"{stem}_mask.png", mask)
    _write_image(masks / "deep_mask.png", mask.astype(np.uint16) * 257)  # 16-bit mask
    (images / "zero.png").write_bytes(b"")
    _write_image(images / "cut.png", rgb)
    data = (images / "cut.png").read_bytes()
    (images / "cut.png").write_bytes(data[: len(data) // 2])
    (images / "text.jpg").write_text("this is not an image")
    _write_image(images / "big.png", rng.integers(0, 256, (30, 40, 3), dtype=np.uint8))
    for stem in ("zero", "cut", "text", "big"):
        _write_image(masks / f"{stem}.png", mask)
    _write_image(masks / "zero.png", mask)
    (masks / "broken_mask.png").write_bytes(b"\x89PNG\r\n\x1a\nrubbish")
    _write_image(images / "broken.png", rgb)
    _write_image(images / "no mask.png", rgb)
    _write_image(masks / "no image.png", mask)
    _write_image(images / "rgb ok.jpg", rgb)  # a second file with the same stem

    result = ingest([root], tmp_path / "work", layout="folder", workers=1)
    df = read_manifest(result.manifest_path)
    unpaired, unreadable = _reports(tmp_path / "work")
    assert sorted(df["stem"]) == sorted(["rgb ok", "grey", "rgba", "deep", "palette", "Bild_ü", "big"])
    assert df.set_index("stem").loc["big", "status"] == "excluded"
    assert set(df.loc[df["status"] == "ok", "source"]) == {"my data ñ"}
    reasons = dict(zip(unreadable["stem"], unreadable["reason"]))
    assert reasons == {"zero": "zero-byte file", "cut": "truncated PNG (no IEND chunk)",
                       "text": reasons["text"], "broken": reasons["broken"]}
    assert "not an image file" in reasons["text"]
    assert unreadable.set_index("stem").loc["broken", "path"].endswith("broken_mask.png")
    assert sorted(zip(unpaired["stem"], unpaired["reason"])) == [
        ("no image", "mask without image"), ("no mask", "image without mask"),
        ("rgb ok", "duplicate image stem (kept rgb ok.jpg)")]
    for _, row in df.iterrows():  # every image kind became RGB uint8
        sample = load_sample(result.manifest_path.parent, row)
        assert sample.image.ndim == 3 and sample.image.shape[2] == 3 and sample.image.dtype == np.uint8
        assert set(np.unique(sample.mask)) <= {0, 255}
    close_shards()


def test_nothing_ingested_is_an_error_but_reports_are_written(tmp_path: Path) -> None:
    root = tmp_path / "broken"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    (root / "images" / "a.png").write_bytes(b"")
    _write_image(root / "masks" / "a.png", np.zeros((8, 8), np.uint8))
    with pytest.raises(SegprepError, match="nothing could be ingested"):
        ingest([root], tmp_path / "work", workers=1)
    _, unreadable = _reports(tmp_path / "work")
    assert list(unreadable["stem"]) == ["a"]
    result = CliRunner().invoke(main, ["ingest", str(root), "-o", str(tmp_path / "work")])
    assert result.exit_code == 1 and "nothing could be ingested" in result.output


def test_option_errors(synth, tmp_path: Path) -> None:
    root = synth("kvasir-seg", n=6).root
    with pytest.raises(SegprepError, match="--val"):
        ingest([root], tmp_path / "w", val=0.6, test=0.5)
    with pytest.raises(SegprepError, match="--workers"):
        ingest([root], tmp_path / "w", workers=0)


# ----------------------------------------------------------------------------- CLI

def test_cli_ingest_prints_summary_and_lists_layouts_for_unknown_ones(synth, tmp_path: Path) -> None:
    runner = CliRunner()
    root = synth("ph2", n=12, noise=0.25, seed=8).root
    result = runner.invoke(main, ["ingest", str(root), "-o", str(tmp_path / "w"), "--workers", "1",
                                  "--val", "0.2", "--test", "0.2", "--split-seed", "3"])
    assert result.exit_code == 0, result.output
    assert "source ph2: layout ph2" in result.output
    assert re.search(r"^ph2 +\d+ +\d+ +\d+", result.output, re.MULTILINE)
    assert "groups:" in result.output and "requested 0.200" in result.output
    assert "manifest:" in result.output
    again = runner.invoke(main, ["ingest", str(root), "-o", str(tmp_path / "w"), "--workers", "1",
                                 "--val", "0.2", "--test", "0.2", "--seed", "3"])
    assert again.exit_code == 0 and "nothing changed" in again.output
    bad = runner.invoke(main, ["ingest", str(root), "-o", str(tmp_path / "w"), "--layout", "isic"])
    assert bad.exit_code == 1
    for name in ("kvasir-seg", "cvc-clinicdb", "cvc-colondb", "etis-larib", "drive", "ph2", "folder",
                 "nnunet"):
        assert name in bad.output
    (tmp_path / "empty").mkdir()
    empty = runner.invoke(main, ["ingest", str(tmp_path / "empty"), "-o", str(tmp_path / "w")])
    assert empty.exit_code == 1 and "empty folder" in empty.output


def test_nnunet_labels_count_as_foreground_and_imagests_stays_test(tmp_path: Path) -> None:
    import json
    root = tmp_path / "Dataset001_Blobs"
    (root / "labelsTr").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for k in range(6):
        _write_image(root / "imagesTr" / f"case{k}_0000.png", rng.integers(0, 256, (16, 16, 3), np.uint8))
        label = np.zeros((16, 16), np.uint8)
        label[:4, :8] = 1  # class indices, not 0/255
        cv2.imwrite(str(root / "labelsTr" / f"case{k}.png"), label)
    _write_image(root / "imagesTs" / "new_0000.png", rng.integers(0, 256, (16, 16, 3), np.uint8))
    (root / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "blob": 1}}))
    result = ingest([root], tmp_path / "work", workers=1)
    df = read_manifest(result.manifest_path)
    assert set(df["source"]) == {"Dataset001_Blobs"} and set(df["split"]) <= {"train", "val"}
    assert np.allclose(df["fg_fraction"], 32 / 256)
    unpaired, _ = _reports(tmp_path / "work")
    assert list(unpaired["stem"]) == ["new"] and "labelsTs" in unpaired["reason"].iloc[0]
    close_shards()
