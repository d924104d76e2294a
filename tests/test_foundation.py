"""The contracts every stage relies on: image decoding, shards, manifests, the CLI shell."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from PIL import Image

from segprep import imageio
from segprep.errors import DecodeError, ManifestError, ShardError
from segprep.manifest import COLUMNS, read_manifest, write_manifest
from segprep.shards import (ShardReader, ShardSequence, ShardWriter, close_shards, load_sample, read_image,
                            read_mask, read_roi, shard_info, shard_length)


# ----------------------------------------------------------------------------- image decoding

def _rgb(h: int = 6, w: int = 5) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("suffix", [".png", ".bmp", ".tif"])
def test_read_image_lossless_formats_give_rgb(tmp_path: Path, suffix: str) -> None:
    rgb = _rgb()
    path = tmp_path / f"a{suffix}"
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    out = imageio.read_image(path)
    assert out.dtype == np.uint8 and out.shape == (6, 5, 3)
    np.testing.assert_array_equal(out, rgb)


def test_read_image_grey_rgba_16bit_palette(tmp_path: Path) -> None:
    grey = np.arange(30, dtype=np.uint8).reshape(6, 5)
    cv2.imwrite(str(tmp_path / "g.png"), grey)
    out = imageio.read_image(tmp_path / "g.png")
    assert out.shape == (6, 5, 3) and (out[..., 0] == grey).all() and (out[..., 2] == grey).all()

    rgba = np.dstack([_rgb(), np.full((6, 5), 7, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    np.testing.assert_array_equal(imageio.read_image(tmp_path / "a.png"), rgba[..., :3])

    deep = (np.arange(30, dtype=np.uint16).reshape(6, 5) * 2000)
    cv2.imwrite(str(tmp_path / "d.png"), deep)
    out = imageio.read_image(tmp_path / "d.png")[..., 0]
    # scaled over the full 16-bit range, never wrapped modulo 256
    assert out.max() == round(29 * 2000 / 257) and np.all(np.diff(out.ravel().astype(int)) >= 0)

    palette = Image.fromarray(grey).convert("P")
    palette.save(tmp_path / "p.gif")
    assert imageio.read_image(tmp_path / "p.gif").shape == (6, 5, 3)


def test_read_mask_keeps_grey_values_and_reduces_colour(tmp_path: Path) -> None:
    mask = np.zeros((8, 8), np.uint8)
    mask[2:6, 2:6] = 255
    mask[0, 0] = 131
    cv2.imwrite(str(tmp_path / "m.png"), mask)
    np.testing.assert_array_equal(imageio.read_mask(tmp_path / "m.png"), mask)

    red = np.zeros((8, 8, 3), np.uint8)
    red[..., 2] = mask  # BGR: a red annotation on black
    cv2.imwrite(str(tmp_path / "red.png"), red)
    np.testing.assert_array_equal(imageio.read_mask(tmp_path / "red.png"), mask)

    labels = (mask > 127).astype(np.uint16)
    cv2.imwrite(str(tmp_path / "l.png"), labels)
    assert set(np.unique(imageio.read_mask(tmp_path / "l.png"))) == {0, 1}

    alpha_drawn = np.zeros((8, 8, 4), np.uint8)
    alpha_drawn[..., 3] = mask  # the mask drawn into the alpha channel over constant black
    Image.fromarray(alpha_drawn, "RGBA").save(tmp_path / "alpha.png")
    np.testing.assert_array_equal(imageio.read_mask(tmp_path / "alpha.png"), mask)

    Image.fromarray(mask).save(tmp_path / "m.gif")
    np.testing.assert_array_equal(imageio.read_mask(tmp_path / "m.gif") > 127, mask > 127)


def test_bad_files_raise_decode_error_naming_the_file(tmp_path: Path) -> None:
    good = tmp_path / "good.jpg"
    cv2.imwrite(str(good), _rgb(64, 64))
    data = good.read_bytes()
    cases = {
        "zero.png": (b"", "zero-byte"),
        "text.png": (b"hello world, not an image", "not an image"),
        "cut.jpg": (data[: len(data) // 2], "truncated"),
    }
    png = tmp_path / "full.png"
    cv2.imwrite(str(png), _rgb(64, 64))
    cases["cut.png"] = (png.read_bytes()[:-40], "truncated")
    for name, (content, reason) in cases.items():
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(DecodeError, match=reason) as info:
            imageio.read_image(path)
        assert name in str(info.value)
    with pytest.raises(DecodeError, match="not found"):
        imageio.read_image(tmp_path / "missing.png")


def test_non_ascii_and_spaces_in_paths(tmp_path: Path) -> None:
    folder = tmp_path / "dossier à voir"
    folder.mkdir()
    path = folder / "image 01 ü.png"
    cv2.imwrite(str(tmp_path / "plain.png"), cv2.cvtColor(_rgb(), cv2.COLOR_RGB2BGR))
    path.write_bytes((tmp_path / "plain.png").read_bytes())
    np.testing.assert_array_equal(imageio.read_image(path), _rgb())


# ----------------------------------------------------------------------------- shards

def test_variable_shard_round_trip_and_atomic_rename(tmp_path: Path) -> None:
    path = tmp_path / "s.h5"
    writer = ShardWriter(path, "ingest")
    a = writer.add(sample_id="x/a", image=_rgb(6, 5), mask=np.zeros((6, 5), np.uint8))
    b = writer.add(sample_id="x/b", image=_rgb(3, 4), mask=np.full((3, 4), 255, np.uint8),
                   roi=np.ones((3, 4), np.uint8))
    assert not path.exists() and writer.tmp_path.exists()  # only complete files get the name
    writer.close()
    assert path.exists() and not writer.tmp_path.exists()
    assert (a, b) == (0, 1) and shard_length(path) == 2
    info = shard_info(path)
    assert info["format"] == "segprep-shard" and info["stage"] == "ingest" and info["layout"] == "variable"
    np.testing.assert_array_equal(read_image(path, 1), _rgb(3, 4))
    assert read_mask(path, 1).max() == 255 and read_roi(path, 0) is None and read_roi(path, 1).shape == (3, 4)
    with pytest.raises(ShardError, match="out of range"):
        read_image(path, 2)


def test_writer_failure_leaves_no_file(tmp_path: Path) -> None:
    path = tmp_path / "s.h5"
    with pytest.raises(RuntimeError):
        with ShardWriter(path, "ingest") as writer:
            writer.add(sample_id="a", image=_rgb(), mask=np.zeros((6, 5), np.uint8))
            raise RuntimeError("killed")
    assert not path.exists() and not writer.tmp_path.exists()
    with pytest.raises(ShardError, match="uint8"):
        with ShardWriter(path, "ingest") as writer:
            writer.add(sample_id="a", image=_rgb().astype(np.float32))


def test_fixed_shard_one_chunk_per_sample_and_roi_backfill(tmp_path: Path) -> None:
    path = tmp_path / "f.h5"
    with ShardWriter(path, "augment", fixed_size=(4, 4)) as writer:
        for i in range(3):
            roi = np.zeros((4, 4), np.uint8) if i == 1 else None
            writer.add(sample_id=f"s{i}", image=np.full((4, 4, 3), i, np.uint8),
                       mask=np.full((4, 4), i % 2, np.uint8), roi=roi)
        with pytest.raises(ShardError, match="fixed"):
            writer.add(sample_id="bad", image=np.zeros((5, 4, 3), np.uint8))
    import h5py
    with h5py.File(path, "r") as f:
        assert f["images"].shape == (3, 4, 4, 3) and f["images"].chunks == (1, 4, 4, 3)
        assert list(f["ids"].asstr()[()]) == ["s0", "s1", "s2"]
    assert read_image(path, 2)[0, 0, 0] == 2
    assert [int(read_roi(path, i).sum()) for i in range(3)] == [16, 0, 16]


def test_shard_sequence_rolls_over(tmp_path: Path) -> None:
    with ShardSequence(tmp_path, "ingest", "ingest", max_samples=2) as seq:
        places = [seq.add(sample_id=str(i), image=_rgb(), mask=np.zeros((6, 5), np.uint8))
                  for i in range(5)]
    assert places == [("ingest-00000.h5", 0), ("ingest-00000.h5", 1), ("ingest-00001.h5", 0),
                      ("ingest-00001.h5", 1), ("ingest-00002.h5", 0)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ingest-00000.h5", "ingest-00001.h5",
                                                           "ingest-00002.h5"]


def test_truncated_and_foreign_shards_are_clear_errors(tmp_path: Path) -> None:
    path = tmp_path / "s.h5"
    with ShardWriter(path, "ingest") as writer:
        writer.add(sample_id="a", image=_rgb(), mask=np.zeros((6, 5), np.uint8))
    cut = tmp_path / "cut.h5"
    cut.write_bytes(path.read_bytes()[:300])
    with pytest.raises(ShardError, match="cut.h5"):
        read_image(cut, 0)
    import h5py
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["x"] = 1
    with pytest.raises(ShardError, match="not a segprep shard"):
        shard_length(tmp_path / "other.h5")
    with pytest.raises(ShardError, match="not found"):
        shard_length(tmp_path / "nope.h5")


def _jpeg_bytes(image: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
    return data.tobytes()


def test_a_kept_file_reads_back_as_its_decoded_pixels(tmp_path: Path) -> None:
    image = _rgb(40, 30)
    jpeg = _jpeg_bytes(image)
    ok, png_mask = cv2.imencode(".png", np.where(_rgb(40, 30)[..., 0] > 128, 255, 0).astype(np.uint8))
    decoded_image = imageio.decode_image(tmp_path / "x.jpg", data=jpeg).array
    decoded_mask = imageio.decode_mask(tmp_path / "x.png", data=png_mask.tobytes()).array
    path = tmp_path / "s.h5"
    with ShardWriter(path, "ingest") as writer:
        writer.add(sample_id="a", image=decoded_image, mask=decoded_mask,
                   files={"images": jpeg, "masks": png_mask.tobytes()})
        writer.add(sample_id="b", image=decoded_image, mask=decoded_mask)  # pixels, as before
    import h5py
    with h5py.File(path, "r") as f:
        assert f.attrs["version"] == 2
        assert f["images/0000000"].ndim == 1 and f["images/0000000"][()].tobytes() == jpeg
        assert f["images/0000001"].shape == (40, 30, 3)
    for index in (0, 1):
        np.testing.assert_array_equal(read_image(path, index), decoded_image)
        np.testing.assert_array_equal(read_mask(path, index), decoded_mask)
    assert ShardReader().spec(path, "images", 0) == (np.dtype(np.uint8), (40, 30, 3))
    with pytest.raises(ShardError, match="fixed-size shard stores pixels"):
        with ShardWriter(tmp_path / "f.h5", "augment", fixed_size=(40, 30)) as writer:
            writer.add(sample_id="a", image=decoded_image, files={"images": jpeg})
    close_shards()


def test_a_corrupt_kept_file_is_a_shard_error_naming_the_sample(tmp_path: Path) -> None:
    image = _rgb(64, 48)
    jpeg = _jpeg_bytes(image)
    path = tmp_path / "s.h5"
    with ShardWriter(path, "ingest") as writer:
        writer.add(sample_id="a", image=imageio.decode_image(path, data=jpeg).array,
                   files={"images": jpeg[:len(jpeg) // 2] + b"\xff\xd9"})  # cut, end marker kept
    with pytest.raises(ShardError, match=r"s\.h5.*images\[0\].*corrupt"):
        read_image(path, 0)
    close_shards()


def test_version_1_shards_read_and_newer_ones_are_refused(tmp_path: Path) -> None:
    import h5py
    path = tmp_path / "v1.h5"
    with ShardWriter(path, "ingest") as writer:
        writer.add(sample_id="a", image=_rgb(), mask=np.zeros((6, 5), np.uint8))
    with h5py.File(path, "r+") as f:  # a shard as segprep wrote them before files were kept
        f.attrs["version"] = 1
    np.testing.assert_array_equal(read_image(path, 0), _rgb())
    close_shards()
    with h5py.File(path, "r+") as f:
        f.attrs["version"] = 99
    with pytest.raises(ShardError, match="version 99 is newer.*--force"):
        read_image(path, 0)
    close_shards()


# ----------------------------------------------------------------------------- manifests

def _manifest(tmp_path: Path, n: int = 3) -> Path:
    rows = []
    with ShardSequence(tmp_path / "shards", "ingest", "ingest") as seq:
        for i in range(n):
            shard, index = seq.add(sample_id=f"src/{i}", image=_rgb(), mask=np.zeros((6, 5), np.uint8))
            rows.append(dict(sample_id=f"src/{i}", source="src", split="train", group=str(i),
                             image_shard=f"../shards/{shard}", image_index=index,
                             mask_shard=f"../shards/{shard}", mask_index=index, height=6, width=5,
                             fg_fraction=0.0, status="ok", issues="", parent_id="",
                             image_path=f"../raw/{i}.png", mask_path=f"../raw/{i}_mask.png",
                             extra_note="kept"))
    return write_manifest(pd.DataFrame(rows), tmp_path / "manifests" / "ingest.csv")


def test_manifest_round_trip_keeps_order_extras_and_empty_strings(tmp_path: Path) -> None:
    path = _manifest(tmp_path)
    header = path.read_text().splitlines()[0].split(",")
    assert header[: len(COLUMNS)] == list(COLUMNS) and header[-1] == "extra_note"
    df = read_manifest(path)
    assert len(df) == 3 and df["issues"].tolist() == ["", "", ""]
    assert df["image_index"].dtype == np.int64 and df["extra_note"].iloc[0] == "kept"
    sample = load_sample(path.parent, df.iloc[2])
    assert sample.image.shape == (6, 5, 3) and sample.roi is None


@pytest.mark.parametrize("edit, reason", [
    (lambda df: df.drop(columns=["group"]), "missing column"),
    (lambda df: df.assign(sample_id=["a", "a", "b"]), "duplicate sample_id a"),
    (lambda df: df.assign(image_shard="../../../elsewhere.h5"), "escapes"),
    (lambda df: df.assign(image_shard="/abs/elsewhere.h5"), "escapes"),
    (lambda df: df.assign(mask_index=[0, 1, 7]), "line 4: mask_index 7 is out of range"),
    (lambda df: df.assign(height=["6", "six", "6"]), "line 3: column height"),
    (lambda df: df.assign(split=["train", "dev", "test"]), "split 'dev'"),
    (lambda df: df.assign(mask_shard="../shards/missing.h5"), "shard not found"),
])
def test_manifest_validation_errors(tmp_path: Path, edit, reason: str) -> None:
    path = _manifest(tmp_path)
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    edit(df).to_csv(path, index=False)
    with pytest.raises(ManifestError, match=reason) as info:
        read_manifest(path)
    assert str(path) in str(info.value)


def test_manifest_with_truncated_shard_is_an_error(tmp_path: Path) -> None:
    path = _manifest(tmp_path)
    close_shards()
    shard = tmp_path / "shards" / "ingest-00000.h5"
    shard.write_bytes(shard.read_bytes()[:500])
    with pytest.raises(ManifestError, match="truncated or corrupt"):
        read_manifest(path)


def test_missing_or_garbage_manifest(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="not found"):
        read_manifest(tmp_path / "nope.csv")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(ManifestError, match="not a readable CSV"):
        read_manifest(tmp_path / "empty.csv")
    (tmp_path / "notes.csv").write_text("hello world\nnot a manifest\n")
    with pytest.raises(ManifestError, match="notes.csv: not a segprep manifest"):
        read_manifest(tmp_path / "notes.csv")
    with pytest.raises(ManifestError, match="a folder, not a manifest"):
        read_manifest(tmp_path)


# ----------------------------------------------------------------------------- CLI shell

def test_cli_version_and_expected_errors_are_one_line() -> None:
    from segprep.cli import main
    runner = CliRunner()
    result = runner.invoke(main, ["--version"])
    assert result.exit_code == 0 and "segprep, version" in result.output


@pytest.mark.parametrize("package", ["segprep", "segtrain"])
def test_group_help_lists_every_command_fast_and_each_has_an_example(package: str) -> None:
    """`segprep --help` / `segtrain --help` show one line per command without importing any
    (no torch, OpenCV or pandas), and every command's own --help shows an example."""
    import subprocess
    import sys
    code = (f"import sys; from {package}.cli import main\n"
            f"try: main(['--help'])\nexcept SystemExit: pass\n"
            f"print('LOADED', sorted(m for m in ('torch', 'cv2', 'pandas', 'albumentations') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60).stdout
    assert "LOADED []" in out, out
    commands = __import__(f"{package}.cli", fromlist=["COMMANDS"]).COMMANDS
    listing = out.split("Commands:")[1].splitlines()[1:len(commands) + 1]
    assert [line.split()[0] for line in listing] == list(commands)
    assert not any(line.endswith("...") for line in listing)
    main = __import__(f"{package}.cli", fromlist=["main"]).main
    for name in commands:
        result = CliRunner().invoke(main, [name, "--help"])
        assert result.exit_code == 0 and "Example" in result.output, (name, result.output)


def test_library_code_logs_never_prints() -> None:
    import ast
    root = Path(__file__).resolve().parents[1]
    for package in ("segprep", "segtrain"):
        for path in (root / package).rglob("*.py"):
            if "cli" in path.relative_to(root).parts:
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "print":
                    raise AssertionError(f"{path}:{node.lineno} prints; log instead")


def test_package_boundaries() -> None:
    """segprep never imports torch; segtrain reads segprep only through its contract modules
    (manifest, shards, imageio, errors, the findings format that `segtrain qc` writes for clean)
    and the shared machinery (the CLI shell, the WORK folder's lock and atomic files, the CPU
    count)."""
    import ast
    root = Path(__file__).resolve().parents[1]
    allowed = {"segprep", "segprep.manifest", "segprep.shards", "segprep.imageio", "segprep.errors",
               "segprep.lazycli", "segprep.work", "segprep.executor", "segprep.progress",
               "segprep.checks.findings"}
    for package in ("segprep", "segtrain"):
        for path in (root / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                         else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
                for name in names:
                    if package == "segprep":
                        assert not name.startswith("torch"), f"{path} imports {name}"
                    elif name.startswith("segprep"):
                        assert name in allowed, f"{path} imports {name}"


def test_gzip_levels_round_trip_and_bad_names_list_choices(tmp_path: Path) -> None:
    import h5py
    mask = np.zeros((16, 16), np.uint8)
    mask[4:12, 4:12] = 1
    with ShardWriter(tmp_path / "g.h5", "augment", fixed_size=(16, 16),
                     compression={"images": "none", "masks": "gzip-1"}) as writer:
        writer.add(sample_id="a", image=np.zeros((16, 16, 3), np.uint8), mask=mask)
    with h5py.File(tmp_path / "g.h5", "r") as f:
        assert f["masks"].compression == "gzip" and f["masks"].compression_opts == 1
        assert f["images"].compression is None
    np.testing.assert_array_equal(read_mask(tmp_path / "g.h5", 0), mask)
    for bad in ("gzip-0", "gzip-10", "gzip1", "zstd"):
        with pytest.raises(ShardError, match="lzf"):
            ShardWriter(tmp_path / f"{bad}.h5", "augment", compression=bad)


# ----------------------------------------------------------------------------- decoders that disagree

def test_rgb_tiff_tagged_min_is_black_keeps_its_colour(tmp_path: Path) -> None:
    import tifffile

    rgb = _rgb(20, 30)
    path = tmp_path / "frame.tif"
    # Photometric 1 ("min-is-black") with 3 samples per pixel, contiguous, 8 bits, uncompressed:
    # OpenCV decodes only the first channel of such a file.
    tifffile.imwrite(path, rgb, photometric="minisblack", planarconfig="contig")
    assert cv2.imread(str(path), cv2.IMREAD_UNCHANGED).ndim == 2
    decoded = imageio.decode_image(path)
    assert decoded.decoder == "tifffile" and decoded.declared_channels == 3
    np.testing.assert_array_equal(decoded.array, rgb)
    assert not imageio.is_grey(decoded.array)
    # separate planes too
    tifffile.imwrite(tmp_path / "planes.tif", np.moveaxis(rgb, -1, 0), photometric="minisblack",
                     planarconfig="separate")
    np.testing.assert_array_equal(imageio.read_image(tmp_path / "planes.tif"), rgb)
    # an ordinary RGB TIFF stays with OpenCV
    cv2.imwrite(str(tmp_path / "plain.tif"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert imageio.decode_image(tmp_path / "plain.tif").decoder == "opencv"


def test_pixel_limit_is_checked_from_the_header_before_decoding(tmp_path: Path) -> None:
    path = tmp_path / "big.png"
    cv2.imwrite(str(path), np.zeros((300, 400), np.uint8))
    assert imageio.read_mask(path, max_pixels=120_000).shape == (300, 400)
    with pytest.raises(DecodeError, match=r"declares 400x300 = 120,000 pixels.*--max-pixels"):
        imageio.read_mask(path, max_pixels=100_000)
    for suffix in (".jpg", ".bmp", ".tif", ".gif"):
        other = tmp_path / f"big{suffix}"
        if suffix == ".gif":
            Image.fromarray(np.zeros((300, 400), np.uint8)).save(other)
        else:
            cv2.imwrite(str(other), np.zeros((300, 400, 3), np.uint8))
        with pytest.raises(DecodeError, match="declares 400x300"):
            imageio.read_image(other, max_pixels=100_000)


def test_damaged_jpeg_data_is_unreadable_not_grey_rows(tmp_path: Path) -> None:
    good = tmp_path / "good.jpg"
    cv2.imwrite(str(good), _rgb(128, 128))
    data = good.read_bytes()
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(data[: len(data) // 2] + b"\xff\xd9")  # end-of-image marker appended
    with pytest.raises(DecodeError, match="damaged JPEG data.*premature end") as info:
        imageio.read_image(cut)
    assert "cut.jpg" in str(info.value)
    # stray bytes between two header segments: libjpeg warns, no pixel is lost; the warning
    # travels along instead of going to the terminal
    extra = tmp_path / "extra.jpg"
    end_of_app0 = 4 + int.from_bytes(data[4:6], "big")
    extra.write_bytes(data[:end_of_app0] + b"\x12\x34\x56" + data[end_of_app0:])
    decoded = imageio.decode_image(extra)
    np.testing.assert_array_equal(decoded.array, imageio.read_image(good))
    assert decoded.warnings and "extraneous" in decoded.warnings[0]
