"""segprep augment: presets, backends, the stage (determinism, splits, lineage, resume) and CLI.

Inputs are built here directly with ShardWriter + write_manifest in the shape clean.csv has:
images (and a ROI) in a variable-layout ingest shard, class-index masks in a clean shard at other
indices, splits train/val/test, one excluded row.
"""

from __future__ import annotations

import json
import logging
import os
import random
import subprocess
import sys
from pathlib import Path

import segprep.augment  # noqa: F401  (first: it turns off albumentations' update check)
import albumentations as A
import cv2
import h5py
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from segprep.augment import PRESET_NAMES
from segprep.augment.backends import AugmentorBackend, BackendSpec, fit, make_backend
from segprep.augment.stage import _Worker, augment, parse_size, variant_seed
from segprep.cli import main
from segprep.errors import ManifestError, SegprepError, ShardError
from segprep.hashing import array_sha1
from segprep.manifest import COLUMNS, read_manifest, write_manifest
from segprep.shards import ShardWriter, close_shards, load_sample

SIZE = 40
# (stem, split, status, native (H, W), has ROI)
SAMPLES = [
    ("a", "train", "ok", (60, 80), False),
    ("b", "train", "repaired", (72, 56), True),
    ("c", "train", "ok", (50, 50), False),
    ("d", "train", "excluded", (64, 64), False),
    ("e", "val", "ok", (66, 90), False),
    ("f", "test", "ok", (45, 70), False),
]


def _image_and_mask(h: int, w: int, seed: int, raw: bool) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
    image = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)  # smooth, textured
    mask = np.zeros((h, w), np.uint8)
    cv2.ellipse(mask, (w // 2 + seed % 5, h // 2), (w // 5, h // 6), 15 * seed, 0, 360, 1, -1)
    return image, mask * (255 if raw else 1)


def make_manifest(root: Path, *, raw_masks: bool = False, only_excluded: bool = False) -> Path:
    """WORK/manifests/clean.csv over WORK/shards/{ingest,clean}-00000.h5, as clean writes it."""
    shards = root / "shards"
    rows = []
    arrays = [_image_and_mask(*native, seed=i, raw=raw_masks)
              for i, (_, _, _, native, _) in enumerate(SAMPLES)]
    with ShardWriter(shards / "ingest-00000.h5", "ingest") as images:
        for i, (stem, *_rest) in enumerate(SAMPLES):
            h, w = SAMPLES[i][3]
            roi = None
            if SAMPLES[i][4]:
                roi = np.zeros((h, w), np.uint8)
                cv2.circle(roi, (w // 2, h // 2), min(h, w) // 2 - 1, 255, -1)
            images.add(sample_id=f"synth/{stem}", image=arrays[i][0], roi=roi)
    # masks in reverse order: image_index and mask_index differ, as after clean
    with ShardWriter(shards / "clean-00000.h5", "ingest" if raw_masks else "clean") as masks:
        mask_index = {}
        for i in reversed(range(len(SAMPLES))):
            mask_index[i] = masks.add(sample_id=f"synth/{SAMPLES[i][0]}", mask=arrays[i][1])
    for i, (stem, split, status, (h, w), has_roi) in enumerate(SAMPLES):
        if only_excluded:
            status = "excluded"
        rows.append({
            "sample_id": f"synth/{stem}", "source": "synth", "split": split, "group": stem,
            "image_shard": "../shards/ingest-00000.h5", "image_index": i,
            "mask_shard": "../shards/clean-00000.h5", "mask_index": mask_index[i],
            "height": h, "width": w, "fg_fraction": 0.1, "status": status,
            "issues": "speck" if status != "ok" else "", "parent_id": "",
            "image_path": f"raw/images/{stem}.png", "mask_path": f"raw/masks/{stem}.png",
            "stem": stem, "phash": "0123456789abcdef", "has_roi": int(has_roi),
        })
    return write_manifest(pd.DataFrame(rows), root / "manifests" / "clean.csv")


@pytest.fixture
def manifest(tmp_path: Path) -> Path:
    return make_manifest(tmp_path / "work")


def run(manifest: Path, work: Path | None = None, **kwargs):
    options = dict(factor=4, size=SIZE, workers=1, shard_size=5, progress=False)
    options.update(kwargs)
    return augment(manifest, work=work, **options)


def shard_arrays(result) -> dict[str, dict[str, np.ndarray]]:
    close_shards()
    out = {}
    for path in result.shards:
        with h5py.File(path, "r") as f:
            out[path.name] = {name: f[name][()] for name in ("images", "masks", "roi", "ids") if name in f}
    return out


def rows_of(result) -> pd.DataFrame:
    return read_manifest(result.manifest)


# ----------------------------------------------------------------------------- the stage

def test_factor_arithmetic_and_split_handling(manifest: Path) -> None:
    result = run(manifest)
    df = rows_of(result)
    # 3 active train x 4 + val + test; the excluded row is not carried
    assert len(df) == 3 * 4 + 1 + 1 == result.rows
    assert result.rows_per_split == {"train": 12, "val": 1, "test": 1}
    assert result.excluded_not_carried == 1 and "synth/d" not in set(df["parent_id"])
    assert result.manifest == manifest.parent / "augment.csv"
    assert all(p.parent == manifest.parent.parent / "shards" for p in result.shards)
    assert (df["height"] == SIZE).all() and (df["width"] == SIZE).all()
    evaluation = df[df["split"] != "train"]
    assert list(evaluation["variant"]) == ["0", "0"] and (evaluation["aug_params"] == "[]").all()
    # val/test are the resized originals, not augmented
    source = read_manifest(manifest).set_index("sample_id")
    for row in evaluation.to_dict("records"):
        original = load_sample(manifest.parent, source.loc[row["parent_id"]].to_dict())
        want_image, want_mask, _ = fit(original.image, original.mask, None, (SIZE, SIZE))
        got = load_sample(result.manifest.parent, row)
        np.testing.assert_array_equal(got.image, want_image)
        np.testing.assert_array_equal(got.mask, want_mask)
    with h5py.File(result.shards[0], "r") as f:
        assert f.attrs["stage"] == "augment" and f.attrs["layout"] == "fixed"
        assert tuple(f.attrs["size"]) == (SIZE, SIZE)
        assert f["images"].chunks == (1, SIZE, SIZE, 3) and f["masks"].chunks == (1, SIZE, SIZE)
    assert set(df["status"]) <= {"ok", "repaired"}
    assert df.loc[df["parent_id"] == "synth/b", "issues"].eq("speck").all()


def test_raw_file_paths_stay_right_in_another_work(manifest: Path, tmp_path: Path) -> None:
    same = rows_of(run(manifest))
    assert set(same["image_path"]) >= {"raw/images/a.png"}  # same folder: unchanged
    elsewhere = run(manifest, tmp_path / "elsewhere" / "deeper")
    row = rows_of(elsewhere).iloc[0]
    # relative to each manifest's own folder, both name the same raw file
    assert (elsewhere.manifest.parent / row["image_path"]).resolve() == \
        (manifest.parent / f"raw/images/{row['stem']}.png").resolve()


def test_output_identical_for_one_and_two_workers(manifest: Path, tmp_path: Path) -> None:
    one = run(manifest, tmp_path / "w1", workers=1)
    two = run(manifest, tmp_path / "w2", workers=2)
    assert one.manifest.read_text() == two.manifest.read_text()
    a, b = shard_arrays(one), shard_arrays(two)
    assert a.keys() == b.keys() and len(a) == 3  # 14 rows in shards of 5
    for name in a:
        for key in a[name]:
            np.testing.assert_array_equal(a[name][key], b[name][key])


@pytest.mark.parametrize("codec", ["png", "jpeg:90"])
def test_image_codecs_store_encoded_images_that_read_back(manifest: Path, tmp_path: Path,
                                                         codec: str) -> None:
    from segprep.inspect import verify

    raw = run(manifest, tmp_path / "raw")
    coded = run(manifest, tmp_path / codec.replace(":", ""), image_codec=codec, workers=2)
    raw_rows, coded_rows = rows_of(raw), rows_of(coded)
    assert list(raw_rows["sample_id"]) == list(coded_rows["sample_id"])
    assert list(raw_rows["mask_sha1"]) == list(coded_rows["mask_sha1"])  # masks as before
    with h5py.File(coded.shards[0], "r") as f:
        assert f.attrs["image_codec"] == codec and f["images"].ndim == 1
    assert verify(coded.manifest).ok  # every row's checksum is of the pixels read back
    for a, b in zip(raw_rows.to_dict("records"), coded_rows.to_dict("records")):
        want = load_sample(raw.manifest.parent, a).image
        got = load_sample(coded.manifest.parent, b).image
        assert got.shape == want.shape == (SIZE, SIZE, 3)
        if codec == "png":  # lossless: the same pixels, the same checksum
            np.testing.assert_array_equal(got, want)
            assert a["image_sha1"] == b["image_sha1"]
        else:
            assert np.abs(got.astype(int) - want.astype(int)).mean() < 8  # 4:2:0 chroma at 40 px
    # the training loader decodes them
    from segtrain.data import ShardDataset
    dataset = ShardDataset(coded.manifest, "train")
    assert dataset[0]["image"].shape == (3, SIZE, SIZE)
    # a rerun with the same codec is a no-op; another codec is other options
    assert run(manifest, tmp_path / codec.replace(":", ""), image_codec=codec).skipped
    with pytest.raises(SegprepError, match="other options"):
        run(manifest, tmp_path / codec.replace(":", ""), image_codec="raw")
    close_shards()


def test_bad_image_codec_lists_the_valid_ones(manifest: Path, tmp_path: Path) -> None:
    for bad in ("webp", "jpeg:0", "jpeg:abc"):
        with pytest.raises(SegprepError, match="valid: raw, png, jpeg:Q"):
            run(manifest, tmp_path / "bad", image_codec=bad)
    result = CliRunner().invoke(main, ["augment", str(manifest), "--factor", "2", "--size", "40",
                                       "--image-codec", "gif", "-o", str(tmp_path / "cli")])
    assert result.exit_code != 0 and "valid: raw, png, jpeg:Q" in result.output
    assert "Traceback" not in result.output


def test_a_corrupt_encoded_image_is_caught_by_verify(manifest: Path, tmp_path: Path) -> None:
    from segprep.inspect import verify

    coded = run(manifest, tmp_path / "png", image_codec="png")
    close_shards()
    with h5py.File(coded.shards[0], "r+") as f:
        data = f["images"][1]
        data[len(data) // 2:] = 0
        f["images"][1] = data
    close_shards()
    result = verify(coded.manifest)
    assert not result.ok and len(result.failures) == 1
    assert "does not decode" in result.failures[0][2] or "checksum" in result.failures[0][2]
    close_shards()


def test_lineage_columns(manifest: Path) -> None:
    result = run(manifest, seed=7)
    df = rows_of(result)
    for column in ("variant", "aug_seed", "aug_tries", "aug_params", "fg_lost", "image_sha1",
                   "mask_sha1", "stem", "has_roi"):
        assert column in df.columns
    assert list(df.columns[:len(COLUMNS)]) == list(COLUMNS)
    assert "phash" not in df.columns  # describes the source image, stale for a variant
    train = df[df["split"] == "train"]
    for row in train.to_dict("records"):
        variant = int(row["variant"])
        assert row["sample_id"] == f"{row['parent_id']}~a{variant:02d}"
        params = json.loads(row["aug_params"])
        if variant == 0:
            assert params == [] and row["aug_seed"] == ""
        else:
            first = variant_seed(7, row["parent_id"], variant)
            assert int(row["aug_seed"]) == (first + int(row["aug_tries"]) - 1) % 2**32
            assert all(set(p) == {"name", "params"} for p in params)
        sample = load_sample(result.manifest.parent, row)
        assert array_sha1(sample.image) == row["image_sha1"]
        assert array_sha1(sample.mask) == row["mask_sha1"]
        inside = sample.mask if sample.roi is None else sample.mask[sample.roi > 0]
        assert float(row["fg_fraction"]) == pytest.approx(inside.mean(), abs=1e-5)
    assert sorted(train.loc[train["parent_id"] == "synth/a", "sample_id"]) == [
        f"synth/a~a0{v}" for v in range(4)]
    # the ROI travels with its sample, resized with nearest (values stay {0, 1})
    roi_row = df[df["parent_id"] == "synth/b"].iloc[0].to_dict()
    roi = load_sample(result.manifest.parent, roi_row).roi
    assert roi is not None and set(np.unique(roi)) == {0, 1}
    other = load_sample(result.manifest.parent, df[df["parent_id"] == "synth/a"].iloc[0].to_dict()).roi
    assert other is None or other.all()  # samples without a ROI read as all-inside


def test_seed_changes_output_and_is_stable(manifest: Path, tmp_path: Path) -> None:
    a = rows_of(run(manifest, tmp_path / "a", seed=1))
    b = rows_of(run(manifest, tmp_path / "b", seed=2))
    assert list(a["image_sha1"][a["variant"] == "0"]) == list(b["image_sha1"][b["variant"] == "0"])
    assert list(a["image_sha1"][a["variant"] != "0"]) != list(b["image_sha1"][b["variant"] != "0"])
    assert variant_seed(1, "x/y", 3) == variant_seed(1, "x/y", 3) != variant_seed(1, "x/y", 4)


@pytest.mark.parametrize("backend", ["albumentations", "augmentor"])
@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_masks_stay_class_indices(manifest: Path, tmp_path: Path, backend: str, preset: str) -> None:
    result = run(manifest, tmp_path / "w", backend=backend, preset=preset, factor=5)
    for arrays in shard_arrays(result).values():
        assert set(np.unique(arrays["masks"])) <= {0, 1}
        if "roi" in arrays:
            assert set(np.unique(arrays["roi"])) <= {0, 1}
    df = rows_of(result)
    augmented = df[df["variant"] != "0"]
    assert len(augmented) == 3 * 4
    if preset != "photometric":  # something geometric happened somewhere
        assert (augmented["mask_sha1"] != "").all()
        assert len(set(augmented["mask_sha1"])) > 3


def test_augmentor_binarizes_its_bicubic_masks() -> None:
    mask = np.zeros((64, 64), np.uint8)
    cv2.circle(mask, (30, 34), 17, 1, -1)
    image = np.dstack([mask * 200] * 3).astype(np.uint8)
    # Augmentor alone leaves grey values in a rotated 0/255 mask...
    from Augmentor.Operations import RotateRange
    from PIL import Image
    state = random.getstate()
    random.seed(5)  # Augmentor draws the angle from the global generator; 0 degrees is possible
    rotated = [np.asarray(RotateRange(1, 25, 25).perform_operation([Image.fromarray(mask * 255)])[0])
               for _ in range(5)]
    random.setstate(state)
    assert any(set(np.unique(r)) - {0, 255} for r in rotated)
    # ...the backend's pipeline makes them class indices again, for every draw
    backend = AugmentorBackend("geometric", (64, 64))
    seen = set()
    for seed in range(40):
        out = backend.augment(image, mask, mask.copy(), seed)
        seen |= set(np.unique(out.mask)) | set(np.unique(out.roi))
        assert out.mask.dtype == np.uint8 and out.mask.shape == (64, 64)
    assert seen == {0, 1}


def test_albumentations_backend_is_seeded_and_flips_independently() -> None:
    backend = make_backend(BackendSpec(preset="light", size=(32, 32)))
    image, mask = _image_and_mask(32, 32, 1, raw=False)
    a = backend.augment(image, mask, None, 123)
    b = backend.augment(image, mask, None, 123)
    np.testing.assert_array_equal(a.image, b.image)
    assert a.params == b.params
    combos = {tuple(p["name"] for p in backend.augment(image, mask, None, s).params
                    if "Flip" in p["name"]) for s in range(40)}
    # one shared generator per call: flips are drawn independently (not all-or-none)
    assert ("HorizontalFlip",) in combos and ("VerticalFlip",) in combos


def test_foreground_lost_is_redrawn_then_flagged(manifest: Path, tmp_path: Path) -> None:
    def eraser(p: float) -> Path:
        """A user pipeline that shifts the whole picture out of the frame with probability p."""
        path = tmp_path / f"erase{p}.json"
        A.save(A.Compose([A.Affine(translate_percent={"x": (1.0, 1.0), "y": (0.0, 0.0)}, p=p)]),
               str(path))
        return path

    always = rows_of(run(manifest, tmp_path / "always", pipeline=eraser(1.0), max_tries=3))
    augmented = always[always["variant"] != "0"]
    assert (augmented["fg_lost"] == "1").all() and (augmented["aug_tries"] == "3").all()
    assert (always.loc[always["variant"] == "0", "fg_lost"] == "0").all()
    sometimes = rows_of(run(manifest, tmp_path / "sometimes", pipeline=eraser(0.5), max_tries=10))
    augmented = sometimes[sometimes["variant"] != "0"]
    assert (augmented["fg_lost"] == "0").all() and (augmented["fg_fraction"].astype(float) > 0).all()
    assert (augmented["aug_tries"].astype(int) > 1).any()


def test_resume_after_a_kill_equals_an_uninterrupted_run(manifest: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    reference = run(manifest, tmp_path / "reference")
    work = tmp_path / "killed"
    original = _Worker.process
    calls = {"n": 0}

    def dies_on_third_shard(self, task):
        calls["n"] += 1
        if calls["n"] == 3:
            (work / "shards" / f"{task.name}.tmp").write_bytes(b"half a shard")
            raise KeyboardInterrupt  # as if killed while writing the third shard
        return original(self, task)

    monkeypatch.setattr(_Worker, "process", dies_on_third_shard)
    with pytest.raises(KeyboardInterrupt):
        run(manifest, work)
    assert not (work / "manifests" / "augment.csv").exists()
    monkeypatch.setattr(_Worker, "process", original)
    resumed = run(manifest, work, workers=2)
    assert resumed.reused_shards == 2 and resumed.computed_rows == 14 - 10
    assert resumed.manifest.read_text() == reference.manifest.read_text()
    a, b = shard_arrays(reference), shard_arrays(resumed)
    for name in a:
        for key in a[name]:
            np.testing.assert_array_equal(a[name][key], b[name][key])
    assert not list((work / "shards").glob("*.tmp"))
    assert not (work / "manifests" / ".augment-partial").exists()


def test_finished_run_is_a_noop_unless_forced(manifest: Path) -> None:
    first = run(manifest)
    stamps = {p: p.stat().st_mtime_ns for p in first.shards}
    again = run(manifest, workers=2)
    assert again.skipped and again.rows == first.rows
    assert {p: p.stat().st_mtime_ns for p in first.shards} == stamps
    with pytest.raises(SegprepError, match="other options.*factor 4 -> 3.*--force"):
        run(manifest, factor=3)
    forced = run(manifest, factor=3, force=True)
    assert not forced.skipped and forced.rows == 3 * 3 + 2
    # shards the new run does not name are gone
    names = {p.name for p in (manifest.parent.parent / "shards").glob("augment-*")}
    assert names == {p.name for p in forced.shards}


@pytest.mark.parametrize("fmt", ["json", "yaml"])
def test_user_pipeline_file(manifest: Path, tmp_path: Path, fmt: str) -> None:
    path = tmp_path / f"pipeline.{fmt}"
    user = A.Compose([A.HorizontalFlip(p=1.0), A.Rotate(limit=20, p=1.0), A.ToGray(p=1.0)])
    A.save(user, str(path), data_format=fmt)
    result = run(manifest, tmp_path / "w", pipeline=path)
    df = rows_of(result)
    for row in df[df["variant"] != "0"].to_dict("records"):
        names = [p["name"] for p in json.loads(row["aug_params"])]
        assert names == ["HorizontalFlip", "Rotate", "ToGray"]
        image = load_sample(result.manifest.parent, row).image
        assert (image[..., 0] == image[..., 1]).all()  # ToGray really ran
    assert result.options["pipeline"] is not None and result.options["preset"] is None
    for arrays in shard_arrays(result).values():
        assert set(np.unique(arrays["masks"])) <= {0, 1}


def test_bad_pipeline_files(manifest: Path, tmp_path: Path) -> None:
    garbage = tmp_path / "broken.json"
    garbage.write_text("{not json")
    with pytest.raises(SegprepError, match="broken.json: not an albumentations pipeline"):
        run(manifest, pipeline=garbage)
    with pytest.raises(SegprepError, match="missing.yaml: pipeline file not found"):
        run(manifest, pipeline=tmp_path / "missing.yaml")
    good = tmp_path / "p.json"
    A.save(A.Compose([A.HorizontalFlip()]), str(good))
    with pytest.raises(SegprepError, match="augmentor backend"):
        run(manifest, pipeline=good, backend="augmentor")
    with pytest.raises(SegprepError, match="either --preset or --pipeline"):
        run(manifest, pipeline=good, preset="light")


def test_bad_input(tmp_path: Path, manifest: Path) -> None:
    with pytest.raises(ManifestError, match="nope.csv: manifest not found"):
        run(tmp_path / "nope.csv")
    excluded = make_manifest(tmp_path / "excluded", only_excluded=True)
    with pytest.raises(ManifestError, match="clean.csv: no rows to augment: all 6 rows are excluded"):
        run(excluded)
    with pytest.raises(SegprepError, match="unknown augmentation preset 'heavy'; valid: default, "
                                           "light, geometric, photometric"):
        run(manifest, preset="heavy")
    for size in ("abc", "0", "352x", "12x-3", "4"):
        with pytest.raises(SegprepError, match="bad --size"):
            run(manifest, size=size)
    with pytest.raises(SegprepError, match="bad --factor"):
        run(manifest, factor=0)


def test_an_unreadable_sample_is_skipped_not_fatal(manifest: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import segprep.augment.stage as stage
    real = stage.load_sample

    def flaky(root, row):
        if row["sample_id"] == "synth/b":
            raise ShardError("ingest-00000.h5: cannot read images[1] (truncated or corrupt)")
        return real(root, row)

    monkeypatch.setattr(stage, "load_sample", flaky)
    result = run(manifest)
    assert result.failed == [("synth/b", "ingest-00000.h5: cannot read images[1] (truncated or corrupt)")]
    assert result.rows == 2 * 4 + 2 and "synth/b" not in set(rows_of(result)["parent_id"])


def test_parse_size() -> None:
    assert parse_size(352) == (352, 352) and parse_size("352") == (352, 352)
    assert parse_size("288x384") == (288, 384) and parse_size((10, 12)) == (10, 12)


def test_raw_grey_masks_are_binarized_with_a_warning(tmp_path: Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    raw = make_manifest(tmp_path / "work", raw_masks=True)
    with caplog.at_level(logging.WARNING, logger="segprep.augment"):
        result = run(raw, factor=2)
    assert result.binarized == 5 and "binarized at 128" in caplog.text
    for arrays in shard_arrays(result).values():
        assert set(np.unique(arrays["masks"])) == {0, 1}


def test_pad_aspect_keeps_ratio(manifest: Path, tmp_path: Path) -> None:
    result = run(manifest, tmp_path / "w", aspect="pad", factor=1, size="40x60")
    df = rows_of(result)
    row = df[df["parent_id"] == "synth/c"].iloc[0].to_dict()  # 50x50 native -> 40x40 + padding
    sample = load_sample(result.manifest.parent, row)
    assert sample.image.shape == (40, 60, 3)
    assert (sample.image[:, :10] == 0).all() and (sample.image[:, 50:] == 0).all()
    assert sample.image[:, 10:50].any()


def test_preview_png(manifest: Path) -> None:
    result = run(manifest, preview=2)
    assert result.preview == manifest.parent.parent / "reports" / "augment" / "preview.png"
    picture = cv2.imread(str(result.preview))
    assert picture is not None and picture.shape[0] > 100 and picture.shape[1] > 300


# ----------------------------------------------------------------------------- CLI

def test_cli_runs_and_prints_a_summary(manifest: Path) -> None:
    runner = CliRunner()
    args = ["augment", str(manifest), "--factor", "3", "--size", "32x40", "--workers", "2",
            "--preset", "light", "--preview", "2", "--compression", "gzip"]
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "augment: 11 rows at 32x40: train 9 (3 samples x 3), val 1, test 1" in result.output
    assert "not carried: 1 excluded rows" in result.output
    assert "augment.csv" in result.output and "preview.png" in result.output
    again = runner.invoke(main, args)
    assert again.exit_code == 0 and "up to date" in again.output


def test_cli_errors_are_one_line(manifest: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(main, ["augment", str(manifest), "--preset", "heavy"])
    assert result.exit_code == 1
    assert "valid: default, light, geometric, photometric" in result.output
    result = runner.invoke(main, ["augment", str(manifest), "--size", "big"])
    assert result.exit_code == 1 and "bad --size 'big'" in result.output
    result = runner.invoke(main, ["augment", str(tmp_path / "missing.csv")])
    assert result.exit_code == 1 and "missing.csv: manifest not found" in result.output


def test_cli_out_option_and_the_work_alias(manifest: Path, tmp_path: Path) -> None:
    """-o/--out names the WORK folder as in `segprep clean`; --work, its former name, still works."""
    runner = CliRunner()
    args = ["augment", str(manifest), "--factor", "2", "--size", "32", "--preset", "light"]
    for option, folder in (("--out", "a"), ("-o", "b"), ("--work", "c")):
        result = runner.invoke(main, [*args, option, str(tmp_path / folder)])
        assert result.exit_code == 0, result.output
        assert len(read_manifest(tmp_path / folder / "manifests" / "augment.csv")) == 8  # 3 x 2 + val + test
    help_text = runner.invoke(main, ["augment", "--help"]).output
    assert "-o, --out" in help_text and "--work " not in help_text and "Example" in help_text
    result = runner.invoke(main, [*args, "--out", str(tmp_path / "a"), "--work", str(tmp_path / "c")])
    assert result.exit_code == 1 and "disagree" in result.output


@pytest.mark.parametrize("given, expected", [(None, "1"), ("0", "0")])
def test_importing_segprep_augment_turns_off_albumentations_update_check(given: str | None,
                                                                         expected: str) -> None:
    # albumentations asks PyPI for its latest version on every import unless this is set; no
    # segkit process may touch the network. A user's own setting wins.
    env = {k: v for k, v in os.environ.items() if k != "NO_ALBUMENTATIONS_UPDATE"}
    if given is not None:
        env["NO_ALBUMENTATIONS_UPDATE"] = given
    code = "import os, segprep.augment; print(os.environ.get('NO_ALBUMENTATIONS_UPDATE'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == expected
