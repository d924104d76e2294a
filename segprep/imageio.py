"""Decode raw image and mask files as the public datasets ship them.

Images come back as ``uint8`` RGB ``(H, W, 3)``; masks come back as one ``uint8`` channel with
the grey values exactly as decoded (clean needs to see JPEG noise). What the datasets really
contain is handled here and nowhere else: JPEG, PNG, TIFF, BMP, GIF (palette), RGBA, greyscale,
16-bit, masks saved as 3-channel images, zero-byte and truncated files.
"""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from segprep.errors import DecodeError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".gif")

# Leading bytes of each container, so a non-image file gets a clear reason.
_SIGNATURES = {
    b"\xff\xd8\xff": "jpeg",
    b"\x89PNG\r\n\x1a\n": "png",
    b"II*\x00": "tiff",
    b"MM\x00*": "tiff",
    b"BM": "bmp",
    b"GIF87a": "gif",
    b"GIF89a": "gif",
}


def is_image_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def _container(data: bytes) -> str | None:
    for signature, kind in _SIGNATURES.items():
        if data.startswith(signature):
            return kind
    return None


def _check_complete(path: Path, data: bytes, kind: str) -> None:
    """libjpeg and libpng decode a truncated file into grey rows with only a warning;
    the end markers tell a complete file from a cut one."""
    if kind == "jpeg" and b"\xff\xd9" not in data[-64:]:
        raise DecodeError(f"{path}: truncated JPEG (no end-of-image marker)")
    if kind == "png" and b"IEND" not in data[-32:]:
        raise DecodeError(f"{path}: truncated PNG (no IEND chunk)")


def _read_bytes(path: Path) -> tuple[bytes, str]:
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DecodeError(f"{path}: file not found") from None
    except OSError as exc:
        raise DecodeError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if not data:
        raise DecodeError(f"{path}: zero-byte file")
    kind = _container(data)
    if kind is None:
        raise DecodeError(f"{path}: not an image file (unknown header; expected one of "
                          f"JPEG, PNG, TIFF, BMP, GIF)")
    _check_complete(path, data, kind)
    return data, kind


# libjpeg-turbo writes RGB as cheaply as BGR: decoding a colour JPEG straight to RGB gives the
# same bytes as BGR plus a channel swap, without the swap's pass over every pixel (and a second
# image-sized buffer). IMREAD_COLOR* would apply an EXIF rotation that IMREAD_UNCHANGED does not;
# turn that off.
_JPEG_RGB = (cv2.IMREAD_COLOR_RGB | cv2.IMREAD_IGNORE_ORIENTATION
             if hasattr(cv2, "IMREAD_COLOR_RGB") else None)


def _jpeg_frame(data: bytes) -> tuple[int, int] | None:
    """``(precision, components)`` from a JPEG's frame header (SOFn), None when not found."""
    i, n = 2, len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # markers without a length
            i += 2
            continue
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            return (data[i + 4], data[i + 9]) if i + 10 <= n else None
        if marker in (0xD9, 0xDA):  # end of image or start of scan before any frame header
            return None
        i += 2 + int.from_bytes(data[i + 2:i + 4], "big")
    return None


def _decode(path: Path, *, rgb: bool = False) -> tuple[np.ndarray, bool]:
    """Decoded pixels in the file's own channel order and depth (BGR[A] from OpenCV), and
    whether they are RGB: with ``rgb=True`` an 8-bit, 3-component JPEG comes back as RGB (the
    same pixels as decoding to BGR and swapping the channels); every other file keeps BGR[A].
    """
    data, kind = _read_bytes(path)
    if rgb and kind == "jpeg" and _JPEG_RGB is not None and _jpeg_frame(data) == (8, 3):
        array = cv2.imdecode(np.frombuffer(data, np.uint8), _JPEG_RGB)
        if array is None or array.size == 0:
            raise DecodeError(f"{path}: cannot decode JPEG (corrupt or truncated)")
        return array, True
    if kind == "gif":
        # OpenCV's GIF support is optional at build time; Pillow always has it.
        try:
            with Image.open(path) as im:
                im.seek(0)
                if im.mode == "P":
                    im = im.convert("RGBA" if "transparency" in im.info else "RGB")
                array = np.asarray(im)
        except (OSError, UnidentifiedImageError, ValueError) as exc:
            raise DecodeError(f"{path}: cannot decode GIF ({exc})") from None
        if array.ndim == 3:  # Pillow gives RGB; keep OpenCV's BGR convention below
            array = array[..., [2, 1, 0, 3][: array.shape[2]]]
        return array, False
    array = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if array is None or array.size == 0:
        raise DecodeError(f"{path}: cannot decode {kind.upper()} (corrupt or truncated)")
    return array, False


def _to_uint8(array: np.ndarray, path: Path) -> np.ndarray:
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * 255
    if array.dtype == np.uint16:
        # Scale the full 16-bit range; truncating would wrap values above 255.
        return np.round(array.astype(np.float32) / 257.0).astype(np.uint8)
    if np.issubdtype(array.dtype, np.floating):
        lo, hi = float(np.nanmin(array)), float(np.nanmax(array))
        scale = 255.0 if hi <= 1.0 and lo >= 0.0 else 255.0 / max(hi - lo, 1e-12)
        offset = 0.0 if hi <= 1.0 and lo >= 0.0 else lo
        return np.clip(np.round((array - offset) * scale), 0, 255).astype(np.uint8)
    raise DecodeError(f"{path}: unsupported pixel type {array.dtype}")


def read_image(path: Path) -> np.ndarray:
    """An image file as ``uint8`` RGB ``(H, W, 3)``. Raises :class:`DecodeError` naming the file."""
    path = Path(path)
    array, is_rgb = _decode(path, rgb=True)
    if is_rgb:  # IMREAD_COLOR_RGB always gives uint8 (H, W, 3)
        return array
    array = _to_uint8(array, path)
    if array.ndim == 2:
        return cv2.cvtColor(array, cv2.COLOR_GRAY2RGB)
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4):
        raise DecodeError(f"{path}: unsupported image shape {array.shape}")
    if array.shape[2] == 1:
        return cv2.cvtColor(array, cv2.COLOR_GRAY2RGB)
    if array.shape[2] == 4:
        return cv2.cvtColor(array, cv2.COLOR_BGRA2RGB)
    # The decoded array is this function's own: swap in place instead of filling a new one.
    own = array.flags.writeable and array.flags.c_contiguous
    return cv2.cvtColor(array, cv2.COLOR_BGR2RGB, dst=array if own else None)


def read_mask(path: Path) -> np.ndarray:
    """A mask file as one ``uint8`` channel with its raw grey values.

    16-bit masks keep their values when they fit in 8 bits (label images such as
    nnU-Net's 0/1), and are scaled otherwise. A mask saved as a colour image is
    reduced with the channel maximum, so a red-on-black annotation is not darkened
    the way a luminance conversion would darken it.
    """
    path = Path(path)
    array, _ = _decode(path)
    if array.dtype == np.uint16 and int(array.max(initial=0)) <= 255:
        array = array.astype(np.uint8)
    array = _to_uint8(array, path)
    if array.ndim == 3 and array.shape[2] == 4:
        colour, alpha = array[..., :3], array[..., 3]
        # Some tools draw the mask into the alpha channel over a constant colour.
        array = alpha if colour.min() == colour.max() else colour
    if array.ndim == 3:
        if 1 < array.shape[2] <= 4 and array.flags.c_contiguous:
            # Contiguous planes and cv2.max: ~2.5x faster than np.maximum.reduce over the
            # strided channel views (numpy's max(axis=2) is ~25x slower still).
            planes = cv2.split(array)
            array = planes[0]
            for plane in planes[1:]:
                cv2.max(array, plane, dst=array)
        else:
            array = (np.maximum.reduce([array[..., c] for c in range(array.shape[2])])
                     if array.shape[2] > 1 else array[..., 0])
    if array.ndim != 2:
        raise DecodeError(f"{path}: unsupported mask shape {array.shape}")
    return np.ascontiguousarray(array)
