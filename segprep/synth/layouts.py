"""On-disk layouts of the real datasets: folder structure, file names and file formats.

Each layout maps a sample's stem to the files the real dataset has for it, with an encoder
per file chosen to match what the real files hold (checked against the published data):

- kvasir-seg: RGB JPEG images (quality 75) and RGB JPEG masks (quality 95, so grey values
  near 0 and 255 only, like the real masks); stems of 25 lowercase letters and digits.
- cvc-clinicdb: uncompressed RGB TIFF frames ``Original/N.tif`` and single-channel 0/255
  TIFF masks ``Ground Truth/N.tif``, N = 1..n.
- drive: LZW RGB TIFF images; vessel and field-of-view masks as 0/255 GIFs with a grey
  palette (Pillow reads them as mode L); the test split's ``2nd_manual`` GIFs are palette
  images holding 0/1, as in the real set. Training numbers 21.., test numbers 01...
- ph2: 24-bit BMP images and 8-bit 0/255 BMP lesion masks, IMD002, IMD003, ...
- folder: PNG images and single-channel 0/255 PNG masks.
"""

from __future__ import annotations

from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from segprep.synth.defects import DEFECTS, Item

Encoder = Callable[[np.ndarray], bytes]


def _pil_bytes(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def _grey(array: np.ndarray) -> Image.Image:
    return Image.fromarray(np.ascontiguousarray(array), "L")


def jpeg_rgb(quality: int) -> Encoder:
    # Masks too are stored as 3-channel JPEGs, as in the real Kvasir-SEG.
    def encode(array: np.ndarray) -> bytes:
        rgb = array if array.ndim == 3 else np.dstack([array] * 3)
        image = Image.fromarray(np.ascontiguousarray(rgb), "RGB")
        return _pil_bytes(image, "JPEG", quality=quality)
    return encode


def tiff(compression: str | None) -> Encoder:
    def encode(array: np.ndarray) -> bytes:
        image = Image.fromarray(array, "RGB") if array.ndim == 3 else _grey(array)
        return _pil_bytes(image, "TIFF", **({"compression": compression} if compression else {}))
    return encode


def gif_grey(array: np.ndarray) -> bytes:
    # optimize=False keeps the full 256-entry grey palette, so the file reads back as mode L
    # with its exact values (0/255, or the greys of a `nonbinary` defect).
    return _pil_bytes(_grey(array), "GIF", optimize=False)


def gif_second_observer(array: np.ndarray) -> bytes:
    image = Image.fromarray((array > 127).astype(np.uint8), "P")
    image.putpalette([4, 2, 4, 252, 254, 252] + [0, 0, 0] * 254)
    return _pil_bytes(image, "GIF", optimize=False)


def bmp(array: np.ndarray) -> bytes:
    return _pil_bytes(Image.fromarray(array, "RGB") if array.ndim == 3 else _grey(array), "BMP")


def png(array: np.ndarray) -> bytes:
    # Fast zlib level: noisy synthetic pixels barely compress, and level 6 triples the run time.
    image = Image.fromarray(array, "RGB") if array.ndim == 3 else _grey(array)
    return _pil_bytes(image, "PNG", compress_level=1)


@dataclass(frozen=True)
class FileSpec:
    relpath: str
    encode: Encoder


@dataclass(frozen=True)
class Layout:
    name: str
    domain: str                  # painter: polyp, fundus or skin
    video: bool                  # samples are frames of video sequences
    defects: tuple[str, ...]     # the codes this layout can carry
    stems: Callable[[int, np.random.Generator], list[str]]
    files: Callable[[str], dict[str, FileSpec]]  # role (image, mask, roi, mask2) -> file


def kvasir_stems(n: int, rng: np.random.Generator) -> list[str]:
    alphabet = np.array(list("abcdefghijklmnopqrstuvwxyz0123456789"))
    stems: list[str] = []
    while len(stems) < n:
        # Real stems all start "cj"; the rest looks random.
        stem = "cj" + "".join(rng.choice(alphabet, 23))
        if stem not in stems:
            stems.append(stem)
    return stems


def drive_split(n: int) -> tuple[int, int]:
    """(training, test) counts: half each, the odd one to training."""
    return (n + 1) // 2, n // 2


def drive_stems(n: int, rng: np.random.Generator) -> list[str]:
    n_train, n_test = drive_split(n)
    return ([f"{21 + i:02d}_training" for i in range(n_train)]
            + [f"{1 + i:02d}_test" for i in range(n_test)])


def drive_files(stem: str) -> dict[str, FileSpec]:
    number, split = stem.split("_")
    lzw = tiff("tiff_lzw")
    files = {
        "image": FileSpec(f"{split}/images/{number}_{split}.tif", lzw),
        "mask": FileSpec(f"{split}/1st_manual/{number}_manual1.gif", gif_grey),
        "roi": FileSpec(f"{split}/mask/{number}_{split}_mask.gif", gif_grey),
    }
    if split == "test":
        files["mask2"] = FileSpec(f"test/2nd_manual/{number}_manual2.gif", gif_second_observer)
    return files


def ph2_files(stem: str) -> dict[str, FileSpec]:
    case = f"PH2 Dataset images/{stem}"
    return {"image": FileSpec(f"{case}/{stem}_Dermoscopic_Image/{stem}.bmp", bmp),
            "mask": FileSpec(f"{case}/{stem}_lesion/{stem}_lesion.bmp", bmp)}


_ALL_BUT_HOLES = tuple(code for code in DEFECTS if code != "holes")

LAYOUT_SPECS: dict[str, Layout] = {
    "kvasir-seg": Layout(
        "kvasir-seg", "polyp", False, DEFECTS, kvasir_stems,
        lambda stem: {"image": FileSpec(f"images/{stem}.jpg", jpeg_rgb(75)),
                      "mask": FileSpec(f"masks/{stem}.jpg", jpeg_rgb(95))}),
    "cvc-clinicdb": Layout(
        "cvc-clinicdb", "polyp", True, DEFECTS,
        lambda n, rng: [str(i + 1) for i in range(n)],
        lambda stem: {"image": FileSpec(f"Original/{stem}.tif", tiff(None)),
                      "mask": FileSpec(f"Ground Truth/{stem}.tif", tiff(None))}),
    # Vessels are 1-4 px wide and have no inside, so `holes` has nothing to punch into.
    "drive": Layout("drive", "fundus", False, _ALL_BUT_HOLES, drive_stems, drive_files),
    "ph2": Layout(
        "ph2", "skin", False, DEFECTS,
        lambda n, rng: [f"IMD{i + 2:03d}" for i in range(n)], ph2_files),
    "folder": Layout(
        "folder", "polyp", False, DEFECTS,
        lambda n, rng: [f"case_{i + 1:04d}" for i in range(n)],
        lambda stem: {"image": FileSpec(f"images/{stem}.png", png),
                      "mask": FileSpec(f"masks/{stem}.png", png)}),
}

# Top-level entries any layout writes, so `--force` knows what an earlier run left behind.
OWN_ENTRIES = ("images", "masks", "Original", "Ground Truth", "training", "test",
               "PH2 Dataset images", "synth_truth.csv", "synth_groups.csv")


def write_item(root: Path, layout: Layout, stem: str, item: Item) -> None:
    """Encode and write every file of one sample; a None array is a file left out."""
    for role, spec in layout.files(stem).items():
        array = getattr(item, role)
        if array is None:
            continue
        data = spec.encode(array)
        if role == "image" and item.truncate_to is not None:
            data = data[:int(len(data) * item.truncate_to)]
        path = root / spec.relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
