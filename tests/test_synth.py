"""`segprep synth`: real layouts and formats, determinism, defects that are what they say, CLI."""

from __future__ import annotations

import hashlib
import re
import warnings
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from PIL import Image

from segprep.cli import main
from segprep.errors import SegprepError
from segprep.synth import DEFECTS, LAYOUT_DEFECTS, LAYOUT_SPECS, LAYOUTS, make_dataset

# Enough samples that round(noise * n) covers every code of every layout.
NOISY = dict(n=24, noise=1.0, seed=5, size=(96, 96))
CLEAN = dict(NOISY, noise=0.0)


def files_of(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def path_of(result, stem: str, role: str) -> Path:
    return result.root / LAYOUT_SPECS[result.layout].files(stem)[role].relpath


def read_mask(result, stem: str) -> np.ndarray:
    array = np.array(Image.open(path_of(result, stem, "mask")))
    return array[..., 0] if array.ndim == 3 else array


def read_image(result, stem: str) -> np.ndarray:
    return np.array(Image.open(path_of(result, stem, "image")).convert("RGB"))


def components(binary: np.ndarray, connectivity: int) -> list[int]:
    count, _, stats, _ = cv2.connectedComponentsWithStats(binary.astype(np.uint8),
                                                          connectivity=connectivity)
    return [int(a) for a in stats[1:count, cv2.CC_STAT_AREA]]


def small_specks(mask: np.ndarray) -> int:
    return sum(area < 50 for area in components(mask >= 128, 8))


def enclosed_holes(mask: np.ndarray) -> int:
    """Background regions (4-connected, the dual of 8-connected foreground) off the border."""
    count, labels = cv2.connectedComponents((mask < 128).astype(np.uint8), connectivity=4)
    border = set(np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])))
    return len(set(range(1, count)) - border)


def grey_share(mask: np.ndarray) -> float:
    return float(((mask >= 32) & (mask <= 223)).sum()) / max(int((mask >= 128).sum()), 1)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a >= 128, b >= 128
    return 2.0 * (a & b).sum() / max(int(a.sum() + b.sum()), 1)


def shift(array: np.ndarray, dy: int, dx: int) -> np.ndarray:
    h, w = array.shape[:2]
    matrix = np.float32([[1, 0, dx], [0, 1, dy]])
    return cv2.warpAffine(array, matrix, (w, h), flags=cv2.INTER_NEAREST)


def numbers(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in re.findall(r"-?\d+", text))


# ---------------------------------------------------------------------------------------
# layouts


def test_kvasir_naming(synth):
    result = synth("kvasir-seg", n=3, size=(48, 48))
    stems = list(result.groups["stem"])
    assert all(re.fullmatch(r"cj[a-z0-9]{23}", s) for s in stems) and len(set(stems)) == 3
    expected = {f"images/{s}.jpg" for s in stems} | {f"masks/{s}.jpg" for s in stems}
    assert files_of(result.root) == expected | {"synth_truth.csv", "synth_groups.csv"}


@pytest.mark.parametrize("layout, n, expected", [
    ("cvc-clinicdb", 3, {"Original/1.tif", "Original/2.tif", "Original/3.tif",
                         "Ground Truth/1.tif", "Ground Truth/2.tif", "Ground Truth/3.tif"}),
    ("drive", 3, {"training/images/21_training.tif", "training/images/22_training.tif",
                  "training/1st_manual/21_manual1.gif", "training/1st_manual/22_manual1.gif",
                  "training/mask/21_training_mask.gif", "training/mask/22_training_mask.gif",
                  "test/images/01_test.tif", "test/1st_manual/01_manual1.gif",
                  "test/2nd_manual/01_manual2.gif", "test/mask/01_test_mask.gif"}),
    ("ph2", 2, {"PH2 Dataset images/IMD002/IMD002_Dermoscopic_Image/IMD002.bmp",
                "PH2 Dataset images/IMD002/IMD002_lesion/IMD002_lesion.bmp",
                "PH2 Dataset images/IMD003/IMD003_Dermoscopic_Image/IMD003.bmp",
                "PH2 Dataset images/IMD003/IMD003_lesion/IMD003_lesion.bmp"}),
    ("folder", 2, {"images/case_0001.png", "images/case_0002.png",
                   "masks/case_0001.png", "masks/case_0002.png"}),
])
def test_layout_naming(synth, layout, n, expected):
    result = synth(layout, n=n, size=(48, 48))
    assert files_of(result.root) == expected | {"synth_truth.csv", "synth_groups.csv"}


def test_drive_numbers_continue_past_40():
    stems = LAYOUT_SPECS["drive"].stems(83, np.random.default_rng(0))
    assert stems[:2] == ["21_training", "22_training"] and stems[41] == "62_training"
    assert stems[42:44] == ["01_test", "02_test"] and stems[-1] == "41_test"


@pytest.mark.parametrize("layout, image_format, image_mode, mask_format, mask_mode", [
    ("kvasir-seg", "JPEG", "RGB", "JPEG", "RGB"),
    ("cvc-clinicdb", "TIFF", "RGB", "TIFF", "L"),
    ("drive", "TIFF", "RGB", "GIF", "L"),
    ("ph2", "BMP", "RGB", "BMP", "L"),
    ("folder", "PNG", "RGB", "PNG", "L"),
])
def test_file_formats_match_the_real_ones(synth, layout, image_format, image_mode, mask_format,
                                          mask_mode):
    result = synth(layout, **CLEAN)
    for stem in result.groups["stem"][:4]:
        with Image.open(path_of(result, stem, "image")) as image:
            assert (image.format, image.mode, image.size) == (image_format, image_mode, (96, 96))
        with Image.open(path_of(result, stem, "mask")) as mask:
            assert (mask.format, mask.mode, mask.size) == (mask_format, mask_mode, (96, 96))
        values = read_mask(result, stem)
        if layout == "kvasir-seg":  # JPEG greys near 0 and 255, like the real masks
            assert values[values < 128].max() <= 12 and values[values >= 128].min() >= 243
        else:
            assert set(np.unique(values)) == {0, 255}


def test_drive_extra_files(synth):
    result = synth("drive", **CLEAN)
    with Image.open(result.root / "training/images/21_training.tif") as image:
        assert image.info["compression"] == "tiff_lzw"
    fov = np.array(Image.open(result.root / "training/mask/21_training_mask.gif"))
    assert set(np.unique(fov)) == {0, 255}
    with Image.open(result.root / "test/2nd_manual/01_manual2.gif") as second:
        assert second.mode == "P" and set(np.unique(np.array(second))) == {0, 1}
    first = read_mask(result, "01_test")
    assert dice(np.array(second) * 255, first) > 0.8


# ---------------------------------------------------------------------------------------
# domain content


def border_edge_ratio(image: np.ndarray, mask: np.ndarray) -> float:
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)
    grey = cv2.GaussianBlur(grey, (0, 0), 1.0)
    magnitude = np.hypot(cv2.Sobel(grey, cv2.CV_32F, 1, 0), cv2.Sobel(grey, cv2.CV_32F, 0, 1))
    binary = (mask >= 128).astype(np.uint8)
    border = cv2.morphologyEx(binary, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8)) > 0
    return float(magnitude[border].mean() / (np.median(magnitude) + 1e-6))


@pytest.mark.parametrize("layout", ["kvasir-seg", "cvc-clinicdb", "ph2", "folder"])
def test_object_borders_are_image_edges(synth, layout):
    result = synth(layout, **CLEAN)
    for stem in result.groups["stem"][:6]:
        image, mask = read_image(result, stem), read_mask(result, stem)
        assert border_edge_ratio(image, mask) > 2.0


def test_domains_look_like_their_data(synth):
    polyps = synth("kvasir-seg", **CLEAN)
    image = read_image(polyps, polyps.groups["stem"][0]).reshape(-1, 3).mean(0)
    assert image[0] > image[1] + 40 and image[0] > image[2] + 40  # pink/red tissue

    skin = synth("ph2", **CLEAN)
    for stem in skin.groups["stem"][:4]:
        grey = cv2.cvtColor(read_image(skin, stem), cv2.COLOR_RGB2GRAY).astype(float)
        lesion = read_mask(skin, stem) >= 128
        assert grey[lesion].mean() < grey[~lesion].mean() - 30

    fundus = synth("drive", **CLEAN)
    for stem in fundus.groups["stem"][:4]:
        grey = cv2.cvtColor(read_image(fundus, stem), cv2.COLOR_RGB2GRAY).astype(float)
        fov = np.array(Image.open(path_of(fundus, stem, "roi"))) > 0
        vessels = read_mask(fundus, stem) >= 128
        around = cv2.dilate(vessels.astype(np.uint8), np.ones((7, 7), np.uint8)) > 0
        near = around & ~vessels & fov
        assert grey[~fov].mean() < 15 and grey[fov].mean() > 50
        assert grey[vessels].mean() < grey[near].mean() - 10
        assert not (vessels & ~fov).any()


@pytest.mark.parametrize("layout", LAYOUTS)
def test_clean_masks_look_clean(synth, layout):
    """What `segprep clean` must not flag: no specks, holes, greys, empty or inverted masks."""
    result = synth(layout, **CLEAN)
    hashes = set()
    for stem in result.groups["stem"]:
        mask = read_mask(result, stem)
        assert small_specks(mask) == 0 and enclosed_holes(mask) == 0 and grey_share(mask) < 0.01
        assert 0.005 < (mask >= 128).mean() < 0.5
        hashes.add(hashlib.sha256(read_image(result, stem).tobytes()).hexdigest())
    assert len(hashes) == len(result.groups)
    assert result.truth.empty and list(result.truth.columns) == ["stem", "defect", "details"]


def test_cvc_frames_form_video_sequences(synth):
    result = synth("cvc-clinicdb", **CLEAN)
    groups = list(result.groups["group"])
    assert groups == sorted(groups) and 2 <= len(set(groups)) < len(groups)
    for a, b in zip(result.groups["stem"][:-1], result.groups["stem"][1:]):
        if groups[int(a) - 1] != groups[int(b) - 1]:
            continue
        assert dice(read_mask(result, a), read_mask(result, b)) > 0.75
        ga = cv2.cvtColor(read_image(result, a), cv2.COLOR_RGB2GRAY).astype(float)[8:-8, 8:-8]
        gb = cv2.cvtColor(read_image(result, b), cv2.COLOR_RGB2GRAY).astype(float)
        best = max(np.corrcoef(ga.ravel(), gb[8 + dy:88 + dy, 8 + dx:88 + dx].ravel())[0, 1]
                   for dy in range(-4, 5) for dx in range(-4, 5))
        assert best > 0.9  # the same scene, moved by a pixel or two


# ---------------------------------------------------------------------------------------
# determinism


def hash_tree(root: Path) -> dict[str, str]:
    return {rel: hashlib.sha256((root / rel).read_bytes()).hexdigest() for rel in files_of(root)}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_same_seed_same_bytes(tmp_path, layout):
    args = dict(n=12, size=(64, 64), noise=1.0)
    a = make_dataset(tmp_path / "a", layout, seed=3, **args)
    b = make_dataset(tmp_path / "b", layout, seed=3, **args)
    c = make_dataset(tmp_path / "c", layout, seed=4, **args)
    assert hash_tree(a.root) == hash_tree(b.root)
    assert hash_tree(a.root) != hash_tree(c.root)
    assert a.truth.equals(b.truth) and a.groups.equals(b.groups)


def test_clean_pixels_do_not_depend_on_noise(synth):
    clean, noisy = synth("ph2", **CLEAN), synth("ph2", **NOISY)
    untouched = sorted(set(noisy.groups["stem"]) - set(noisy.truth["stem"]))
    mask_defects = noisy.truth["defect"].isin(["speckle", "empty", "inverted"])
    for stem in untouched + list(noisy.truth.loc[mask_defects, "stem"]):
        image = path_of(noisy, stem, "image").read_bytes()
        assert image == path_of(clean, stem, "image").read_bytes()


# ---------------------------------------------------------------------------------------
# defects


def test_defect_cycle_covers_every_code(tmp_path):
    result = make_dataset(tmp_path / "d", "folder", n=40, size=(48, 48), noise=0.3, seed=2)
    assert len(result.truth) == 12 and set(result.truth["defect"]) == set(DEFECTS)
    assert result.truth["stem"].is_unique
    assert pd.read_csv(result.truth_path, dtype=str).equals(result.truth)
    assert pd.read_csv(result.groups_path, dtype=str).equals(result.groups)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_defect_is_what_it_says(synth, layout):
    noisy, clean = synth(layout, **NOISY), synth(layout, **CLEAN)
    expected = set(DEFECTS) - ({"holes"} if layout == "drive" else set())
    assert set(noisy.truth["defect"]) == expected == set(LAYOUT_DEFECTS[layout])
    group = dict(zip(noisy.groups["stem"], noisy.groups["group"]))
    for row in noisy.truth.itertuples():
        check = CHECKS[row.defect]
        with warnings.catch_warnings():  # PIL warns about the truncated TIFF's directory
            warnings.simplefilter("ignore")
            check(noisy, clean, row.stem, row.details, group)


def check_nonbinary(noisy, clean, stem, details, group):
    mask, true = read_mask(noisy, stem), read_mask(clean, stem)
    assert grey_share(mask) > 0.2
    assert dice(mask, true) > 0.85  # thresholding at mid-grey gives the object back


def check_speckle(noisy, clean, stem, details, group):
    mask, true = read_mask(noisy, stem), read_mask(clean, stem)
    assert small_specks(mask) >= 3 and small_specks(true) == 0
    count, labels, stats, _ = cv2.connectedComponentsWithStats((mask >= 128).astype(np.uint8),
                                                                connectivity=8)
    object_only = np.isin(labels, [i for i in range(1, count) if stats[i, cv2.CC_STAT_AREA] >= 50])
    assert dice(object_only * 255, true) > 0.97  # specks added, nothing else changed


def check_holes(noisy, clean, stem, details, group):
    mask = read_mask(noisy, stem)
    assert enclosed_holes(mask) >= 2 and enclosed_holes(read_mask(clean, stem)) == 0
    assert small_specks(mask) == 0


def check_empty(noisy, clean, stem, details, group):
    assert (read_mask(noisy, stem) < 128).all()


def check_inverted(noisy, clean, stem, details, group):
    mask = read_mask(noisy, stem)
    assert (mask >= 128).mean() > 0.5
    assert dice(255 - mask, read_mask(clean, stem)) > 0.95


def check_misaligned(noisy, clean, stem, details, group):
    dy, dx = numbers(details)[:2]
    assert max(abs(dy), abs(dx)) >= 0.1 * 96
    mask, true = read_mask(noisy, stem), read_mask(clean, stem)
    assert dice(mask, true) < 0.45
    assert dice(mask, shift(true, dy, dx)) > 0.95


def check_size_mismatch(noisy, clean, stem, details, group):
    assert read_mask(noisy, stem).shape != read_image(noisy, stem).shape[:2]


def check_corrupt_image(noisy, clean, stem, details, group):
    path = path_of(noisy, stem, "image")
    assert path.stat().st_size < path_of(clean, stem, "image").stat().st_size
    with pytest.raises(OSError):
        with Image.open(path) as image:
            image.load()
    assert cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_UNCHANGED) is None
    assert path_of(noisy, stem, "mask").exists()


def check_missing_mask(noisy, clean, stem, details, group):
    assert not path_of(noisy, stem, "mask").exists()
    assert path_of(noisy, stem, "image").exists()
    if noisy.layout == "drive":  # the field of view stays
        assert path_of(noisy, stem, "roi").exists()


def check_duplicate(noisy, clean, stem, details, group):
    source = re.fullmatch(r"copy of (\S+)", details)[1]
    assert source != stem
    assert np.array_equal(read_image(noisy, stem), read_image(clean, source))
    assert group[stem] == group[source]


def check_near_duplicate_conflict(noisy, clean, stem, details, group):
    dy, dx = numbers(details)[:2]
    source = re.search(r"copy of (\S+) with", details)[1]
    image = read_image(noisy, stem).astype(float)
    original = shift(read_image(clean, source), dy, dx).astype(float)
    inner = (slice(8, -8), slice(8, -8))
    assert 0 < np.abs(image[inner] - original[inner]).mean() < 6
    assert 1 <= abs(dy) + abs(dx) <= 10
    assert dice(read_mask(noisy, stem), shift(read_mask(clean, source), dy, dx)) < 0.35
    assert group[stem] == group[source]


CHECKS = {code: globals()[f"check_{code}"] for code in DEFECTS}


def test_copies_prefer_clean_sources(synth):
    result = synth("kvasir-seg", n=24, noise=0.5, seed=1, size=(64, 64))
    defective = set(result.truth["stem"])
    for details in result.truth["details"]:
        match = re.search(r"copy of (\S+)", details)
        if match:
            assert match[1] not in defective


# ---------------------------------------------------------------------------------------
# API and CLI errors


def test_unknown_layout_names_the_valid_ones(tmp_path):
    with pytest.raises(SegprepError, match="kvasir-seg, cvc-clinicdb, drive, ph2, folder"):
        make_dataset(tmp_path / "x", "isic")


def test_refuses_folders_that_hold_files(tmp_path):
    (tmp_path / "mine.txt").write_text("user data")
    with pytest.raises(SegprepError, match="--force"):
        make_dataset(tmp_path, "folder", n=2, size=(48, 48))
    with pytest.raises(SegprepError, match="did not write"):
        make_dataset(tmp_path, "folder", n=2, size=(48, 48), force=True)
    assert files_of(tmp_path) == {"mine.txt"}


def test_force_replaces_only_an_earlier_synth_output(tmp_path):
    make_dataset(tmp_path, "drive", n=4, size=(48, 48))
    (tmp_path / "notes.txt").write_text("keep me")
    make_dataset(tmp_path, "folder", n=2, size=(48, 48), force=True)
    assert files_of(tmp_path) == {"notes.txt", "synth_truth.csv", "synth_groups.csv",
                                  "images/case_0001.png", "images/case_0002.png",
                                  "masks/case_0001.png", "masks/case_0002.png"}


def test_cli_help_and_run(tmp_path):
    runner = CliRunner()
    help_text = runner.invoke(main, ["synth", "--help"]).output
    assert all(option in help_text for option in ("--layout", "--n", "--size", "--noise", "--seed"))

    out = tmp_path / "out"
    run = runner.invoke(main, ["synth", str(out), "--layout", "ph2", "--n", "4", "--size", "64x48",
                               "--noise", "0.5", "--seed", "1"])
    assert run.exit_code == 0, run.output
    assert "4 ph2 samples" in run.output and "defects: 2 injected" in run.output
    assert str(out / "synth_truth.csv") in run.output
    assert len(pd.read_csv(out / "synth_truth.csv")) == 2
    with Image.open(out / "PH2 Dataset images/IMD002/IMD002_Dermoscopic_Image/IMD002.bmp") as image:
        assert image.size == (48, 64)

    again = runner.invoke(main, ["synth", str(out), "--layout", "ph2", "--n", "2"])
    assert again.exit_code == 1 and "--force" in again.output
    forced = runner.invoke(main, ["synth", str(out), "--layout", "folder", "--n", "2", "--size",
                                  "48x48", "--force"])
    assert forced.exit_code == 0 and not (out / "PH2 Dataset images").exists()


def test_cli_rejects_bad_options(tmp_path):
    runner = CliRunner()
    layout = runner.invoke(main, ["synth", str(tmp_path / "a"), "--layout", "isic"])
    assert layout.exit_code == 2 and "kvasir-seg" in layout.output and "drive" in layout.output
    size = runner.invoke(main, ["synth", str(tmp_path / "b"), "--size", "big"])
    assert size.exit_code == 2 and "expected HxW" in size.output
    small = runner.invoke(main, ["synth", str(tmp_path / "c"), "--size", "8x8"])
    assert small.exit_code == 1 and "--size" in small.output and "Traceback" not in small.output
