"""The clean checks and repairs one by one, on small hand-made masks with a known defect."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from segprep.checks import CHECKS, checks
from segprep.checks import repairs
from segprep.checks.alignment import measure, robust_z
from segprep.checks.duplicates import (THUMB, Table, dice, find_duplicates, find_leakage,
                                       find_near_duplicate_conflicts, leak_pairs, mask_thumbnail)
from segprep.checks.findings import Finding
from segprep.checks.mask import border_share, check_mask
from segprep.checks.options import CleanOptions, area_pixels, parse_area, parse_threshold
from segprep.checks.source import SourceSample, find_inverted, find_misaligned
from segprep.errors import SegprepError

OPTS = CleanOptions()


def disc(size: int = 96, radius: int = 20, center: tuple[int, int] | None = None,
         value: int = 255) -> np.ndarray:
    mask = np.zeros((size, size), np.uint8)
    cy, cx = center or (size // 2, size // 2)
    cv2.circle(mask, (cx, cy), radius, value, -1)
    return mask


def codes(findings: list[Finding]) -> list[str]:
    return [f.code for f in findings]


# ----------------------------------------------------------------------------- binarize

def test_jpeg_noise_is_routine_binarization_not_nonbinary() -> None:
    rng = np.random.default_rng(0)
    raw = disc().astype(np.int16)
    # JPEG-like noise: dark pixels up to 8, bright pixels down to 246 (real Kvasir-SEG masks).
    raw = np.where(raw > 0, 255 - rng.integers(0, 10, raw.shape), rng.integers(0, 9, raw.shape))
    binary, findings = check_mask(raw.astype(np.uint8), None, OPTS)
    assert findings == []
    assert binary.dtype == np.uint8 and set(np.unique(binary)) == {0, 1}
    assert np.array_equal(binary, (disc() > 0).astype(np.uint8))


def test_label_image_0_1_is_binarized_relative_to_its_scale() -> None:
    label = (disc() > 0).astype(np.uint8)          # nnU-Net style 0/1
    binary, findings = check_mask(label, None, OPTS)
    assert findings == [] and np.array_equal(binary, label)
    # A nearly black JPEG mask of an empty frame is empty, not noise turned foreground.
    dark = np.random.default_rng(1).integers(0, 9, (96, 96)).astype(np.uint8)
    assert repairs.binarize(dark).sum() == 0


def test_nonbinary_is_found_and_binarized_at_mid_grey() -> None:
    blurred = cv2.GaussianBlur(disc(), (0, 0), 4)
    binary, findings = check_mask(blurred, None, OPTS)
    assert codes(findings) == ["nonbinary"]
    assert findings[0].action == "repaired" and findings[0].severity == "info"
    assert findings[0].value == pytest.approx(((blurred > 25) & (blurred < 230)).mean(), abs=1e-6)
    assert np.array_equal(binary, (blurred > 127.5).astype(np.uint8))
    otsu = repairs.threshold_value(blurred, "otsu")
    assert 0 < otsu < 255 and repairs.threshold_value(blurred, 200.0) == 200.0


def test_faint_grey_edges_are_reported_however_few() -> None:
    # An anti-aliased outline: 12 grey pixels on a 0/255 disc (0.1% of the mask), as in
    # datasets whose masks were drawn with smoothing; reported, then binarized as usual.
    raw = disc()
    ys, xs = np.nonzero(cv2.Canny(raw, 100, 200))
    raw[ys[:12], xs[:12]] = 128
    binary, findings = check_mask(raw, None, OPTS, mask_format="png")
    assert codes(findings) == ["nonbinary"] and findings[0].value == pytest.approx(12 / raw.size, abs=1e-6)
    assert "PNG" in findings[0].message and np.array_equal(binary, (raw > 127).astype(np.uint8))


# ----------------------------------------------------------------------------- speckle

def test_speckle_found_and_removed() -> None:
    raw = disc()
    for y, x in ((5, 5), (10, 85), (85, 10)):
        cv2.circle(raw, (x, y), 2, 255, -1)       # 13 px specks
    binary, findings = check_mask(raw, None, OPTS)
    assert codes(findings) == ["speckle"] and findings[0].value == 3.0
    assert np.array_equal(binary, (disc() > 0).astype(np.uint8))


def test_components_are_8_connected() -> None:
    mask = (disc() > 0).astype(np.uint8)
    for k in range(25):                            # a staircase whose pixels touch diagonally
        mask[1 + k, 70 + k] = 1
    _, specks, areas = repairs.find_specks(mask, 50)
    assert areas.tolist() == [25]                  # one 25 px piece, not 25 one-pixel pieces
    _, specks, _ = repairs.find_specks(mask, 25)
    assert len(specks) == 0
    removed = repairs.remove_specks(mask, 50)
    assert np.array_equal(removed, (disc() > 0).astype(np.uint8))


def vessel_tree(size: int = 128) -> np.ndarray:
    """A thin branching structure with small line fragments near it (like DRIVE)."""
    mask = np.zeros((size, size), np.uint8)
    cv2.line(mask, (10, 64), (118, 64), 255, 2)
    for x in range(20, 110, 15):
        cv2.line(mask, (x, 64), (x + 12, 20), 255, 1)
        cv2.line(mask, (x, 64), (x + 10, 110), 255, 1)
    cv2.line(mask, (5, 10), (9, 14), 255, 1)        # a tiny line fragment standing apart
    mask[90, 40] = 255                              # a 1 px fragment
    return mask


def test_thin_structures_keep_their_fragments_but_lose_round_blobs() -> None:
    tree = vessel_tree()
    assert repairs.compactness((tree > 0).astype(np.uint8)) < OPTS.thin_compactness
    binary, findings = check_mask(tree, None, OPTS)
    assert findings == [] and np.array_equal(binary, (tree > 0).astype(np.uint8))
    blob = tree.copy()
    cv2.circle(blob, (120, 120), 3, 255, -1)       # a round speck far from every vessel
    binary, findings = check_mask(blob, None, OPTS)
    assert codes(findings) == ["speckle"] and findings[0].value == 1.0
    assert np.array_equal(binary, (tree > 0).astype(np.uint8))


# ----------------------------------------------------------------------------- holes

def test_holes_found_and_filled() -> None:
    raw = disc(radius=30)
    cv2.circle(raw, (40, 48), 2, 0, -1)
    cv2.circle(raw, (56, 50), 3, 0, -1)
    binary, findings = check_mask(raw, None, OPTS)
    assert codes(findings) == ["holes"] and findings[0].value == 2.0
    assert np.array_equal(binary, (disc(radius=30) > 0).astype(np.uint8))


def test_background_at_the_border_and_big_rings_are_not_holes() -> None:
    notch = disc(radius=30, center=(48, 20))        # touches the left border
    notch[40:45, 0:3] = 0                           # background cut in from the border
    assert check_mask(notch, None, OPTS)[1] == []
    ring = disc(radius=40)
    cv2.circle(ring, (48, 48), 25, 0, -1)           # 1960 px > 0.5% of 96x96
    assert area_pixels(OPTS.max_hole, 96, 96) < 1960
    assert check_mask(ring, None, OPTS)[1] == []


# ----------------------------------------------------------------------------- empty, inverted, roi

def test_empty_excluded_unless_allowed() -> None:
    findings = check_mask(np.zeros((64, 64), np.uint8), None, OPTS)[1]
    assert codes(findings) == ["empty"] and findings[0].action == "excluded"
    findings = check_mask(np.zeros((64, 64), np.uint8), None, CleanOptions(allow_empty=True))[1]
    assert codes(findings) == ["empty"] and findings[0].action == "kept" and findings[0].severity == "info"


def _lesions(n: int, rng: np.random.Generator, size: int = 96) -> list[tuple[np.ndarray, np.ndarray]]:
    """Dermoscopy-like samples: light skin with texture, a dark brown lesion of any size; every
    third one a large lesion filling most of the frame and touching three of its borders."""
    out = []
    for k in range(n):
        image = np.empty((size, size, 3), np.float32)
        image[:] = (205, 160, 140)                                   # skin
        mask = np.zeros((size, size), np.uint8)
        if k % 3 == 0:                                               # frame-filling lesion
            cv2.ellipse(mask, (size // 2, size // 2 + 10), (size // 2 + 12, size // 2 + 4), 0, 0, 360, 1, -1)
        else:
            radius = int(rng.integers(10, 40))
            cv2.circle(mask, (int(rng.integers(radius, size - radius)),
                              int(rng.integers(radius, size - radius))), radius, 1, -1)
        image[mask > 0] = (110, 70, 50)                              # lesion
        image += rng.normal(0, 8, image.shape)
        out.append((np.clip(image, 0, 255).astype(np.uint8), mask))
    return out


def _source(samples: list[tuple[np.ndarray, np.ndarray]]) -> list[SourceSample]:
    out = []
    for image, mask in samples:
        look = measure(image, mask)
        out.append(SourceSample(float(mask.mean()), border_share(mask), look.ring, look.edge,
                                look.colour_in, look.colour_out, empty=not mask.any()))
    return out


def test_inverted_by_colour_not_geometry() -> None:
    rng = np.random.default_rng(0)
    samples = _lesions(24, rng)
    large = [k for k in range(24) if k % 3 == 0]
    assert all(samples[k][1].mean() > 0.65 and border_share(samples[k][1]) > 0.4 for k in large)
    # two masks saved inverted: one small lesion, one frame-filling lesion
    samples[1] = (samples[1][0], 1 - samples[1][1])
    samples[3] = (samples[3][0], 1 - samples[3][1])
    source = _source(samples)
    found = find_inverted(source, np.arange(24), "derm", {}, OPTS)
    assert sorted(i for i, _ in found) == [1, 3]                   # no large real lesion flagged
    assert all(f.action == "flagged" and f.severity == "warning" for _, f in found)
    assert {f.action for _, f in find_inverted(source, np.arange(24), "derm", {},
                                               CleanOptions(repair_inverted=True))} == {"repaired"}
    assert {f.action for _, f in find_inverted(source, np.arange(24), "derm", {},
                                               CleanOptions(strict=True))} == {"excluded"}
    # Too few samples to learn colours from: geometry decides, and still only flags.
    few = find_inverted(source[:5], np.arange(5), "derm", {}, OPTS)
    assert [i for i, _ in few] == [1] and few[0][1].action == "flagged"


def test_misaligned_measured_against_the_same_outline_moved() -> None:
    rng = np.random.default_rng(1)
    samples = _lesions(20, rng)[1::3] + _lesions(20, np.random.default_rng(2))[1::3]
    samples += _lesions(12, np.random.default_rng(3))[2::3]
    n = len(samples)
    image, mask = samples[0]
    look = measure(image, mask)
    moved = np.roll(mask, 18, axis=1)
    look_moved = measure(image, moved)
    assert look.ring >= 0.95 and look.edge >= 0.95                # its own place is the best
    assert look_moved.ring < 0.8 and look_moved.edge < 0.8
    assert np.isnan(measure(image, np.zeros_like(mask)).ring)
    thin = measure(image, mask, thin=True)
    assert np.isnan(thin.ring) and np.isnan(thin.edge) and thin.thin_edge > 2
    samples[0] = (image, moved)
    samples[1] = (samples[1][0], samples[2][1])                     # another image's mask
    found = find_misaligned(_source(samples), np.arange(n), "derm", {}, OPTS)
    assert sorted(i for i, _ in found) == [0, 1]
    assert all(f.action == "flagged" for _, f in found)
    z = robust_z(np.array([1.0, 1.1, 0.9, 1.0, 0.2, np.nan]), floor=0.05)
    assert z[4] < -3.5 and np.isnan(z[5])


def test_foreground_outside_the_roi_is_noted_not_removed() -> None:
    roi = disc(radius=40)
    raw = disc(radius=45)
    binary, findings = check_mask(raw, roi, OPTS)
    assert codes(findings) == ["outside_roi"] and findings[0].severity == "info"
    assert findings[0].value == float(((raw > 0) & (roi == 0)).sum())
    assert np.array_equal(binary, (raw > 0).astype(np.uint8))


# ----------------------------------------------------------------------------- duplicates

def _table(masks: list[np.ndarray], sha1: list[str], splits: list[str]) -> Table:
    n = len(masks)
    return Table(ids=[f"s/{i}" for i in range(n)], splits=splits, image_sha1=sha1,
                 phash=np.zeros(n, np.uint64), has_phash=np.ones(n, bool),
                 masks={i: mask_thumbnail((m > 0).astype(np.uint8)) for i, m in enumerate(masks)},
                 details={}, comparable=np.ones(n, bool), rank=[(False, 0, 0, i) for i in range(n)])


def test_duplicates_keep_the_first_and_conflicting_masks_are_flagged() -> None:
    a, b = disc(), disc(center=(30, 30))
    table = _table([a, a, b, a], ["x", "x", "x", "y"], ["train"] * 4)
    found = find_duplicates(table, [], np.ones(4, bool), OPTS)
    by_code = {}
    for sid, f in found:
        by_code.setdefault(f.code, []).append(sid)
    assert sorted(by_code["duplicate"]) == ["s/1", "s/2"]              # s/0 kept
    assert sorted(by_code["conflict"]) == ["s/0", "s/2"]               # b disagrees with a
    assert all(f.partner == "s/0" for sid, f in found if f.code == "duplicate")


def test_near_duplicate_conflict_majority_and_leakage() -> None:
    a, other = disc(), disc(center=(20, 70), radius=12)
    # 0, 1, 2: three frames of one scene that agree; 3: the same scene with another mask.
    table = _table([a, a, a, other], ["p", "q", "r", "s"], ["train", "train", "test", "train"])
    pairs = [(i, j, 2, (0.0, 0.0, 1.0), 0.95) for i in range(4) for j in range(i + 1, 4)]
    usable = np.ones(4, bool)
    flagged = [sid for sid, f in find_near_duplicate_conflicts(table, pairs, usable, OPTS)]
    assert flagged == ["s/3"]                       # only the odd one out
    two = _table([a, other], ["p", "q"], ["train", "train"])
    flagged = [sid for sid, _ in find_near_duplicate_conflicts(two, [(0, 1, 2, (0.0, 0.0, 1.0), 0.9)],
                                                               np.ones(2, bool), OPTS)]
    assert flagged == ["s/0", "s/1"]                # a lone pair: both
    findings = find_leakage(table, pairs, usable, OPTS)
    listed = leak_pairs(findings, table)
    assert {sid for sid, _ in findings} == {"s/0", "s/1", "s/2", "s/3"}
    assert all("test" in (pair[1], pair[3]) for pair in listed)
    assert dice(mask_thumbnail(a > 0), mask_thumbnail(a > 0)) == 1.0
    assert mask_thumbnail(a > 0).shape == (THUMB, THUMB)


# ----------------------------------------------------------------------------- options, registry

def test_options_parse_and_errors_list_the_choices() -> None:
    assert parse_area("0.5%") == ("rel", 0.005) and parse_area("50px") == ("px", 50.0)
    assert area_pixels("1%", 100, 100) == 100 and area_pixels("7", 10, 10) == 7
    with pytest.raises(SegprepError, match="0.05% or a pixel count"):
        parse_area("lots", "min-area")
    with pytest.raises(SegprepError, match="mid, otsu or a grey value"):
        parse_threshold("bright")
    assert parse_threshold("otsu") == "otsu" and parse_threshold("100") == 100.0
    with pytest.raises(SegprepError, match="dice-min"):
        CleanOptions(dice_min=2).validate()


def test_the_registry_is_what_clean_runs() -> None:
    from segprep.checks.registry import SCOPES, register

    for code, check in CHECKS.items():
        assert check.code == code and check.description and check.scope in SCOPES
        assert check.severity in ("error", "warning", "info") and check.worst in ("high", "low", "abs")
        # every scope but the codes another check emits, ingest's and a person's has a measure
        assert check.measure is not None or check.scope in ("ingest", "review", "model") or code == "conflict", code
    # mask checks run in registration order, each repair applied before the next check
    assert [c.code for c in checks("mask")] == ["nonbinary", "speckle", "holes", "empty", "outside_roi"]
    assert checks("source")[0].explains_others and checks("source")[0].code == "inverted"
    with pytest.raises(ValueError, match="registered twice"):
        register("speckle", "mask", "warning", "flagged", "x", "again")(lambda ctx: None)
    with pytest.raises(ValueError, match="scope"):
        register("new", "everywhere", "warning", "flagged", "x", "y")
    with pytest.raises(ValueError, match="severity"):
        Finding("x", "fatal", 0.0, "")


def test_a_registered_mask_check_runs_without_touching_clean(monkeypatch) -> None:
    """The worked example of docs/DEVELOPING.md: one decorated function is a new check."""
    from segprep.checks import registry
    from segprep.checks.registry import register

    monkeypatch.setattr(registry, "CHECKS", dict(registry.CHECKS))

    @register("tiny_object", "mask", "warning", "flagged", "foreground share",
              "the object covers under 1% of the frame")
    def check_tiny(ctx):
        share = float(ctx.binary.mean())
        if 0 < share < 0.01:
            return Finding("tiny_object", "warning", share, f"foreground {share:.2%} of the frame",
                           action="excluded" if ctx.opts.strict else "flagged")
        return None

    binary, found = check_mask(disc(radius=4), None, OPTS)
    assert [f.code for f in found] == ["tiny_object"] and registry.code_order("tiny_object") == len(CHECKS)
    assert found[0].action == "flagged"
    _, strict = check_mask(disc(radius=4), None, CleanOptions(strict=True).validate())
    assert [(f.code, f.action) for f in strict] == [("tiny_object", "excluded")]
