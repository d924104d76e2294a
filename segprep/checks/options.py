"""Thresholds of the clean checks, with their defaults (shown by ``segprep clean --help``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from segprep.errors import SegprepError


def parse_area(text: str | float | int, option: str = "area") -> tuple[str, float]:
    """``"0.05%"`` -> ("rel", 0.0005) (share of the image's pixels); ``"50"`` or ``"50px"`` ->
    ("px", 50.0)."""
    raw = str(text).strip().lower()
    try:
        if raw.endswith("%"):
            value = float(raw[:-1]) / 100.0
            kind = "rel"
        else:
            value = float(raw[:-2] if raw.endswith("px") else raw)
            kind = "px"
    except ValueError:
        raise SegprepError(f"--{option} {text!r}: expected a share of the image such as 0.05% "
                           f"or a pixel count such as 50 or 50px") from None
    if value < 0 or (kind == "rel" and value > 1):
        raise SegprepError(f"--{option} {text!r}: must be between 0 and 100% or a non-negative "
                           f"pixel count")
    return kind, value


def area_pixels(spec: str, height: int, width: int) -> int:
    kind, value = parse_area(spec)
    return int(round(value * height * width)) if kind == "rel" else int(round(value))


def parse_threshold(text: str | float) -> str | float:
    raw = str(text).strip().lower()
    if raw in ("mid", "otsu"):
        return raw
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 255:
        raise SegprepError(f"--threshold {text!r}: valid choices are mid, otsu or a grey value 0-255")
    return value


@dataclass(frozen=True)
class CleanOptions:
    # nonbinary: a pixel is "grey" when its value lies in the middle band
    # (grey_band * scale, (1 - grey_band) * scale); JPEG noise stays within a few values of 0
    # and 255 (Kvasir-SEG: dark <= 8, bright >= 246) and never reaches that band.
    threshold: str | float = "mid"
    grey_band: float = 0.1
    # nonbinary: report a mask when more than this share of its pixels are grey (default: any;
    # JPEG noise is not grey by the band above, and lossless formats have none).
    nonbinary_share: float = 0.0
    # speckle / holes: sizes in pixels ("50", "50px") or as a share of the image ("0.5%").
    # Specks are slips of a brush or compression blocks: their size does not grow with the
    # image (Kvasir-SEG: all under 10 px, at 0.3-2 Mpx), while a second real object does
    # (Kvasir-SEG: 553 px and more), so the speck size is absolute. Holes are filled up to a
    # share of the frame: a polyp or lesion has no real holes, so the bound only guards
    # ring-shaped objects.
    min_area: str = "50px"
    max_hole: str = "0.5%"
    # Thin-structure masks (vessels): the largest component's compactness 4*pi*area/perimeter^2
    # is below this (real DRIVE: <= 0.002, synthetic vessels at 128 px: <= 0.045; real
    # Kvasir-SEG polyps: >= 0.13, synthetic blobs: >= 0.3). There a tiny component is a vessel
    # fragment unless it is a round blob standing apart, and an enclosed hole is a loop
    # between vessels, so speck removal keeps the fragments and hole filling stays off.
    thin_compactness: float = 0.075
    allow_empty: bool = False
    # inverted, where a source has too few samples to judge by colour: foreground share of the
    # frame and of the frame's border both above these. A lesion filling the frame touches
    # three sides (56% of the border in the tests); an inverted mask covers nearly all of it.
    inverted_fg: float = 0.5
    inverted_border: float = 0.9
    repair_inverted: bool = False
    repair: bool = True
    strict: bool = False
    # dataset-level: robust z-scores (median / MAD) within each source. misaligned: the sum of
    # two z-scores (colour contrast and edge strength of the mask's place against its best
    # move); at 5, 0.6% of the real Kvasir-SEG masks (benchmarks/README.md, "clean on real data").
    misaligned_z: float = 5.0
    area_z: float = 3.5
    # near-duplicates: perceptual-hash Hamming distance for a candidate pair (looser than
    # ingest's 6 bits: a copy shifted by 3 px and re-encoded can differ in 12 at 128 px), then the correlation of the registered images' fine detail that makes
    # it near-identical (real Kvasir-SEG: re-saved or consecutive frames 0.74-1.0, unrelated
    # frames with the same black corners and text overlay <= 0.52; DRIVE: different eyes
    # <= 0.4); masks "agree" at this Dice (1 px tolerance at 128 px) or more.
    phash_distance: int = 12
    near_min_corr: float = 0.65
    dice_min: float = 0.5

    def validate(self) -> "CleanOptions":
        parse_area(self.min_area, "min-area")
        parse_area(self.max_hole, "max-hole")
        parse_threshold(self.threshold)
        for name in ("misaligned_z", "area_z", "thin_compactness"):
            if getattr(self, name) <= 0:
                raise SegprepError(f"--{name.replace('_', '-')} must be positive, got {getattr(self, name)}")
        if not -1 <= self.near_min_corr <= 1:
            raise SegprepError(f"--near-min-corr must be between -1 and 1, got {self.near_min_corr}")
        if not 0 <= self.dice_min <= 1:
            raise SegprepError(f"--dice-min must be between 0 and 1, got {self.dice_min}")
        for name in ("inverted_fg", "inverted_border"):
            if not 0 <= getattr(self, name) <= 1:
                raise SegprepError(f"--{name.replace('_', '-')} must be a share between 0 and 1, "
                                   f"got {getattr(self, name)}")
        if not 0 <= self.phash_distance <= 64:
            raise SegprepError(f"--phash-distance must be between 0 and 64, got {self.phash_distance}")
        return self

    def as_dict(self) -> dict:
        return asdict(self)
