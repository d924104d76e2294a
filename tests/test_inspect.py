"""`segprep inspect` and `segprep verify`, and manifest validation on an ingest manifest."""

from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import pandas as pd
import pytest
from click.testing import CliRunner

from segprep.cli import main
from segprep.errors import ManifestError
from segprep.ingest import ingest
from segprep.inspect import inspect_manifest, verify
from segprep.manifest import read_manifest
from segprep.shards import close_shards


@pytest.fixture(scope="module")
def ingested(synth, tmp_path_factory) -> Path:
    """An ingest of two sources with defects; tests copy it before changing anything."""
    work = tmp_path_factory.mktemp("inspect") / "work"
    ingest([synth("kvasir-seg", n=12, noise=1.0, seed=11).root, synth("drive", n=10, seed=11).root],
           work, workers=1)
    close_shards()
    return work


@pytest.fixture
def work(ingested: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "work"
    shutil.copytree(ingested, copy)
    yield copy
    close_shards()


def test_inspect_summarises_per_source_and_split(work: Path) -> None:
    result = inspect_manifest(work / "manifests" / "ingest.csv")
    table = result.table.set_index(["source", "split"])
    assert table.loc[("drive", "test"), "count"] == 5
    assert table["count"].sum() == len(result.rows)
    assert table.loc[("drive", "test"), "height"] == "64-64"
    row = table.loc[("kvasir-seg", "train")]
    assert row["fg_min"] <= row["fg_q1"] <= row["fg_median"] <= row["fg_q3"] <= row["fg_max"]
    assert table["excluded"].sum() == 1 and "size_mismatch=1" in " ".join(table["issues"])
    text = CliRunner().invoke(main, ["inspect", str(work / "manifests" / "ingest.csv")])
    assert text.exit_code == 0, text.output
    assert "kvasir-seg" in text.output and "drive" in text.output and "fg_median" in text.output
    assert "issues: size_mismatch 1" in text.output


def test_verify_passes_a_fresh_ingest_and_names_a_tampered_row(work: Path) -> None:
    manifest = work / "manifests" / "ingest.csv"
    assert verify(manifest).ok
    runner = CliRunner()
    ok = runner.invoke(main, ["verify", str(manifest)])
    assert ok.exit_code == 0 and "rows verified" in ok.output

    df = read_manifest(manifest)
    ok_rows = df[df["status"] == "ok"]
    pixels_row = ok_rows[ok_rows["source"] == "drive"].iloc[0]     # TIFF: stored as pixels
    kept_row = ok_rows[ok_rows["source"] == "kvasir-seg"].iloc[3]  # JPEG: the file's bytes kept
    close_shards()  # read_manifest keeps read-only handles; h5py refuses a second, writable one
    with h5py.File(manifest.parent / pixels_row["image_shard"], "r+") as f:
        pixels = f["images"][f"{pixels_row['image_index']:07d}"]
        pixels[0, 0, 0] = 255 - pixels[0, 0, 0]
    with h5py.File(manifest.parent / kept_row["image_shard"], "r+") as f:
        kept = f["images"][f"{kept_row['image_index']:07d}"]
        assert kept.ndim == 1
        # near the end: inside the entropy-coded data (a small JPEG's middle can be an unused
        # Huffman table entry, whose change decodes to the same pixels)
        spot = kept.shape[0] - 16
        kept[spot] = kept[spot] ^ 0x5A
    close_shards()
    result = verify(manifest)
    problems = {sample_id: problem for _, sample_id, problem in result.failures}
    assert set(problems) == {pixels_row["sample_id"], kept_row["sample_id"]}
    assert problems[pixels_row["sample_id"]] == "image checksum differs from image_sha1"
    assert ("checksum differs" in problems[kept_row["sample_id"]]
            or "corrupt" in problems[kept_row["sample_id"]])
    bad = runner.invoke(main, ["verify", str(manifest)])
    assert bad.exit_code == 1 and kept_row["sample_id"] in bad.output and "2 failed" in bad.output


def test_verify_names_every_row_of_a_truncated_shard(work: Path) -> None:
    manifest = work / "manifests" / "ingest.csv"
    df = read_manifest(manifest)
    shard = manifest.parent / df["image_shard"].iloc[0]
    close_shards()
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 3])
    close_shards()
    result = verify(manifest)
    failed = {sample_id for _, sample_id, _ in result.failures}
    assert failed == set(df.loc[df["image_shard"] == df["image_shard"].iloc[0], "sample_id"])
    with pytest.raises(ManifestError, match="truncated or corrupt"):
        read_manifest(manifest)


def _set(row: int, column: str, value: str):
    def change(df: pd.DataFrame) -> pd.DataFrame:
        df.loc[row, column] = df[column][0] if value == "<first>" else value
        return df
    return change


@pytest.mark.parametrize("change,message", [
    (lambda df: df.drop(columns=["mask_shard"]), "missing column"),
    (_set(1, "sample_id", "<first>"), "duplicate sample_id"),
    (_set(2, "image_shard", "../../elsewhere/ingest-00000.h5"), "escapes"),
    (_set(0, "mask_index", "999"), "out of range"),
])
def test_manifest_validation_errors_name_the_problem(work: Path, change, message: str) -> None:
    manifest = work / "manifests" / "ingest.csv"
    change(pd.read_csv(manifest, dtype=str, keep_default_na=False)).to_csv(manifest, index=False)
    with pytest.raises(ManifestError, match=message):
        read_manifest(manifest)
    for command in ("inspect", "verify"):
        result = CliRunner().invoke(main, [command, str(manifest)])
        assert result.exit_code == 1 and message in result.output


def test_the_work_folder_can_move(work: Path, tmp_path: Path) -> None:
    moved = tmp_path / "elsewhere" / "moved"
    shutil.move(str(work), moved)
    result = verify(moved / "manifests" / "ingest.csv")
    assert result.ok and result.n_rows > 0
