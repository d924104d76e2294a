"""Raw layouts: detection, pairing, official splits, groups, and the errors for unusable folders."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from segprep.errors import SegprepError
from segprep.readers import describe_layouts, get_layout, layouts, resolve_sources
from segprep.readers import cvc_clinicdb


def _png(path: Path, shape=(16, 20, 3), value: int = 200) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(abs(hash(path.name)) % 2**32)
    array = rng.integers(0, 256, shape, dtype=np.uint8) if value < 0 else np.full(shape, value, np.uint8)
    assert cv2.imwrite(str(path), array)
    return path


def _mask(path: Path, shape=(16, 20)) -> Path:
    mask = np.zeros(shape, np.uint8)
    mask[4:10, 5:12] = 255
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), mask)
    return path


def _complete(pairs):
    return {p.stem: p for p in pairs if p.image_path is not None and p.mask_path is not None}


def test_registry_lists_every_layout_with_what_it_expects() -> None:
    names = list(layouts())
    assert set(names) == {"kvasir-seg", "cvc-clinicdb", "cvc-colondb", "etis-larib", "drive", "ph2",
                          "folder", "nnunet"}
    assert names[-1] == "folder"  # the catch-all is tried last
    text = describe_layouts()
    for name in names:
        assert name in text
    with pytest.raises(SegprepError) as err:
        get_layout("kvasir")
    assert "unknown layout 'kvasir'" in str(err.value) and "etis-larib" in str(err.value)
    assert "\n" not in str(err.value)  # one line: the CLI prints it as is


@pytest.mark.parametrize("layout", ["kvasir-seg", "cvc-clinicdb", "drive", "ph2", "folder"])
def test_auto_detects_each_synth_layout(synth, layout: str) -> None:
    data = synth(layout, n=6)
    (source,) = resolve_sources([data.root])
    assert source.layout == layout
    pairs = source.pairs()
    assert len(_complete(pairs)) == 6
    if layout == "ph2":  # the cases sit one folder down, as in the download
        assert source.root.name == "PH2 Dataset images"
        assert all(p.group == p.stem for p in pairs)
    if layout == "folder":
        assert source.name == data.root.name
    else:
        assert source.name == layout


def test_drive_keeps_official_split_roi_and_reports_test_without_manual(synth, tmp_path: Path) -> None:
    import shutil
    root = tmp_path / "DRIVE"
    shutil.copytree(synth("drive", n=6).root, root)
    (root / "test" / "1st_manual" / "01_manual1.gif").unlink()
    (source,) = resolve_sources([tmp_path])  # the parent of the DRIVE folder works too
    assert source.root == root and source.layout == "drive"
    pairs = source.pairs()
    complete = _complete(pairs)
    assert {p.split for p in complete.values() if p.stem.endswith("_training")} == {"train"}
    assert {p.split for p in complete.values() if p.stem.endswith("_test")} == {"test"}
    assert all(p.roi_path is not None and p.roi_path.name == f"{p.stem}_mask.gif"
               for p in complete.values())
    (lonely,) = [p for p in pairs if p.mask_path is None]
    assert lonely.stem == "01_test" and lonely.split == "test" and "1st_manual" in lonely.note
    assert "01_test" not in complete


def test_cvc_clinicdb_png_redistribution_and_sequence_table(tmp_path: Path, monkeypatch) -> None:
    root = tmp_path / "CVC-ClinicDB"
    for frame in range(1, 6):
        _png(root / "PNG" / "Original" / f"{frame}.png")
        _mask(root / "PNG" / "Ground Truth" / f"{frame}.png")
    table = tmp_path / "seq.csv"
    table.write_text("# test table\nframe,sequence\n1,1\n2,1\n3,2\n4,2\n5,3\n")
    monkeypatch.setattr(cvc_clinicdb, "SEQUENCES_CSV", table)
    cvc_clinicdb.sequences.cache_clear()
    try:
        (source,) = resolve_sources([root])
        assert source.layout == "cvc-clinicdb"
        groups = {p.stem: p.group for p in source.pairs()}
        assert groups == {"1": "seq01", "2": "seq01", "3": "seq02", "4": "seq02", "5": "seq03"}
        # Frames that do not match the table (another release, synthetic data) get no groups.
        table.write_text("frame,sequence\n" + "".join(f"{i},{i // 10 + 1}\n" for i in range(1, 101)))
        cvc_clinicdb.sequences.cache_clear()
        assert {p.group for p in source.pairs()} == {""}
    finally:
        cvc_clinicdb.sequences.cache_clear()


def test_etis_larib_original_layout_pairs_p_prefixed_masks(tmp_path: Path) -> None:
    root = tmp_path / "ETIS"
    for n in (1, 2, 10):
        _png(root / "ETIS-LaribPolypDB" / f"{n}.tif")
        _mask(root / "Ground Truth" / f"p{n}.tif")
    _mask(root / "Ground Truth" / "p99.tif")
    (source,) = resolve_sources([root])
    assert (source.layout, source.name) == ("etis-larib", "etis-larib")
    pairs = source.pairs()
    assert sorted(_complete(pairs)) == ["1", "10", "2"]
    assert [p.mask_path.name for p in pairs if p.image_path is None] == ["p99.tif"]


def test_cvc_colondb_flat_release_ignores_contour_and_region_masks(tmp_path: Path) -> None:
    root = tmp_path / "colon"
    for n in (1, 2, 3):
        _png(root / f"{n}.bmp")
        _mask(root / f"p{n}.bmp")
        _mask(root / f"s{n}.bmp")
        _mask(root / f"c{n}.bmp")
    (source,) = resolve_sources([root])
    assert source.layout == "cvc-colondb"
    pairs = source.pairs()
    assert sorted(_complete(pairs)) == ["1", "2", "3"] and len(pairs) == 3
    assert {p.mask_path.name for p in pairs} == {"p1.bmp", "p2.bmp", "p3.bmp"}


def test_cvc_colondb_and_etis_redistributions_by_folder_name(tmp_path: Path) -> None:
    for name, layout in (("CVC-ColonDB", "cvc-colondb"), ("ETIS-LaribPolypDB", "etis-larib")):
        root = tmp_path / name
        _png(root / "images" / "1.png")
        _mask(root / "masks" / "1.png")
        (source,) = resolve_sources([root])
        assert source.layout == layout and len(_complete(source.pairs())) == 1


def test_nnunet_train_and_test_with_and_without_labels(tmp_path: Path) -> None:
    root = tmp_path / "Dataset042_Polyps"
    root.mkdir()
    (root / "dataset.json").write_text(json.dumps({"name": "Polyps", "file_ending": ".png"}))
    (root / "labelsTr").mkdir()
    for case in ("a_001", "a_002"):
        _png(root / "imagesTr" / f"{case}_0000.png")
        label = np.zeros((16, 20), np.uint8)
        label[2:6, 2:6] = 1  # nnU-Net labels are class indices
        cv2.imwrite(str(root / "labelsTr" / f"{case}.png"), label)
    _png(root / "imagesTs" / "b_001_0000.png")
    (source,) = resolve_sources([root])
    assert (source.layout, source.name, source.fg_threshold) == ("nnunet", "Polyps", 0)
    pairs = source.pairs()
    complete = _complete(pairs)
    assert sorted(complete) == ["a_001", "a_002"] and {p.split for p in complete.values()} == {"train"}
    (test,) = [p for p in pairs if p.mask_path is None]
    assert test.stem == "b_001" and test.split == "test" and "labelsTs" in test.note


def test_folder_mask_suffixes_flat_folder_and_duplicate_stems(tmp_path: Path) -> None:
    root = tmp_path / "lesions"
    suffixes = ["", "_mask", "_masks", "_segmentation", "_lesion", "_gt", "_label", "_seg", "-mask",
                "_Segmentation"]
    for k, suffix in enumerate(suffixes):
        _png(root / "images" / f"img{k}.png")
        _mask(root / "masks" / f"img{k}{suffix}.png")
    _png(root / "images" / "img0.jpg")       # a second file with stem img0
    _mask(root / "masks" / "orphan_mask.png")
    _png(root / "images" / "lonely.png")
    (root / "images" / "notes.txt").write_text("not an image")
    (source,) = resolve_sources([root])
    assert (source.layout, source.name) == ("folder", "lesions")
    pairs = source.pairs()
    complete = _complete(pairs)
    assert sorted(complete) == sorted(f"img{k}" for k in range(len(suffixes)))
    unpaired = {(p.image_path or p.mask_path).name: p.note for p in pairs if p.stem not in complete
                or p.mask_path is None or p.image_path is None}
    assert set(unpaired) == {"img0.png" if complete["img0"].image_path.name == "img0.jpg" else "img0.jpg",
                             "orphan_mask.png", "lonely.png"}
    assert any("duplicate image stem" in note for note in unpaired.values())

    flat = tmp_path / "flat"
    _png(flat / "a.png")
    _mask(flat / "a_segmentation.png")
    _png(flat / "b.png")
    (source,) = resolve_sources([flat])
    assert source.layout == "folder"
    assert sorted(_complete(source.pairs())) == ["a"]


def test_kvasir_detected_by_its_ids_when_the_folder_is_renamed(synth, tmp_path: Path) -> None:
    import shutil
    root = tmp_path / "polyps"
    shutil.copytree(synth("kvasir-seg", n=6).root / "images", root / "images")
    shutil.copytree(synth("kvasir-seg", n=6).root / "masks", root / "masks")
    (source,) = resolve_sources([root])
    assert source.layout == "kvasir-seg"


def test_same_source_twice_is_disambiguated_and_a_parent_holds_several(synth, tmp_path: Path) -> None:
    import shutil
    a, b = tmp_path / "one" / "Kvasir-SEG", tmp_path / "two" / "kvasir copy"
    shutil.copytree(synth("kvasir-seg", n=6).root, a)
    shutil.copytree(synth("kvasir-seg", n=6).root, b)
    names = [s.name for s in resolve_sources([a, b])]
    assert names == ["kvasir-seg-Kvasir-SEG", "kvasir-seg-kvasir copy"]
    shutil.copytree(synth("drive", n=4).root, tmp_path / "one" / "DRIVE")
    found = resolve_sources([tmp_path / "one"])
    assert sorted(s.layout for s in found) == ["drive", "kvasir-seg"]
    with pytest.raises(SegprepError, match="already given"):
        resolve_sources([a, a])


def test_unusable_folders_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(SegprepError, match="no such folder"):
        resolve_sources([tmp_path / "missing"])
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(SegprepError, match="empty folder"):
        resolve_sources([tmp_path / "empty"])
    odd = tmp_path / "odd"
    _png(odd / "pictures" / "a.png")
    with pytest.raises(SegprepError) as err:
        resolve_sources([odd])
    message = str(err.value)
    assert "no known dataset layout" in message
    for name in layouts():
        assert name in message  # every layout and what it expects
    with pytest.raises(SegprepError, match="not a drive dataset"):
        resolve_sources([odd], layout="drive")
    with pytest.raises(SegprepError, match="unknown layout"):
        resolve_sources([odd], layout="nope")
    file = tmp_path / "a.png"
    _png(file)
    with pytest.raises(SegprepError, match="not a folder"):
        resolve_sources([file])


def test_one_mask_file_per_lesion_is_paired_with_its_image(tmp_path: Path) -> None:
    # BUSI ships every class as one flat folder: name.png, name_mask.png, name_mask_1.png ...
    flat = tmp_path / "benign"
    flat.mkdir()
    for stem in ("benign (1)", "benign (2)", "benign (3)"):
        _png(flat / f"{stem}.png")
        _mask(flat / f"{stem}_mask.png")
    _mask(flat / "benign (1)_mask_1.png")
    _mask(flat / "benign (1)_mask_2.png")
    _mask(flat / "benign (3)_mask_1.png")
    (flat / "benign (3)_mask.png").unlink()          # only numbered masks: the first is the mask
    pairs = {p.stem: p for p in get_layout("folder").pairs(flat)}
    assert set(pairs) == {"benign (1)", "benign (2)", "benign (3)"}   # nothing unpaired
    assert [m.name for m in pairs["benign (1)"].extra_masks] == ["benign (1)_mask_1.png",
                                                                 "benign (1)_mask_2.png"]
    assert pairs["benign (2)"].extra_masks == ()
    assert pairs["benign (3)"].mask_path.name == "benign (3)_mask_1.png"
    # images/ + masks/ with the same stems: name_1 is a second mask unless an image has that name
    root = tmp_path / "sep"
    for stem in ("a", "b", "b_1"):
        _png(root / "images" / f"{stem}.png")
        _mask(root / "masks" / f"{stem}.png")
    _mask(root / "masks" / "a_1.png")
    pairs = {p.stem: p for p in get_layout("folder").pairs(root)}
    assert [m.name for m in pairs["a"].extra_masks] == ["a_1.png"]
    assert pairs["b"].extra_masks == () and pairs["b_1"].mask_path.name == "b_1.png"
