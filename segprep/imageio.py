"""Decode raw image and mask files as the public datasets ship them.

Images come back as ``uint8`` RGB ``(H, W, 3)``; masks come back as one ``uint8`` channel with
the grey values exactly as decoded (clean needs to see JPEG noise). What the datasets really
contain is handled here and nowhere else: JPEG, PNG, TIFF, BMP, GIF (palette), RGBA, greyscale,
16-bit, masks saved as 3-channel images, zero-byte and truncated files.

Three guarantees the stages rely on:

* **No colour lost.** Where decoders disagree about a file's channels, the one that honours the
  file's samples-per-pixel wins: OpenCV reads an RGB TIFF tagged "min-is-black" (photometric 1,
  3 samples per pixel, as some endoscopy datasets ship) as one grey channel and only warns;
  tifffile reads its three channels. :class:`Decoded` says which decoder produced the pixels.
* **No decompression bombs.** The pixel count is read from the file's header and checked
  against ``max_pixels`` before anything is decoded.
* **No lost warnings.** libjpeg and OpenCV report damaged data on the process's standard error
  and decode anyway (a truncated JPEG with an end-of-image marker appended comes back with its
  lower half grey). Their messages are captured per file: damage that loses pixels is a
  :class:`DecodeError`, anything else travels in :attr:`Decoded.warnings`.
"""

from __future__ import annotations

import io
import logging
import os
import sys
import tempfile
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from segprep.errors import DecodeError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".gif")
# Largest image decoded, in pixels: 2D medical images are at most a few tens of megapixels
# (whole-slide images are not 2D files of this kind); 100 MP of RGB is 300 MB decoded.
MAX_PIXELS = 100_000_000

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
# Decoder messages that mean pixels are missing (libjpeg fills them with grey and goes on).
# Others (libjpeg's "extraneous bytes before marker", libtiff's unknown tags) change no pixel.
_DAMAGE = ("premature end", "huffman")


@dataclass(frozen=True)
class Decoded:
    """A decoded file: its pixels, its container, the decoder that produced them, how many
    channels the file declares (None when its header does not say) and the decoder's warnings."""

    array: np.ndarray
    container: str                  # jpeg, png, tiff, bmp, gif
    decoder: str                    # opencv, tifffile, pillow
    declared_channels: int | None = None
    warnings: tuple[str, ...] = ()
    data: bytes = b""               # the file's bytes, as decoded (ingest may keep them)


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


def _read_bytes(path: Path, data: bytes | None = None) -> tuple[bytes, str]:
    """The file's bytes (``data`` when given: a file kept in a shard) and its container."""
    path = Path(path)
    if data is None:
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


# ----------------------------------------------------------------------------- headers

def _jpeg_frame(data: bytes) -> tuple[int, int, int, int] | None:
    """``(precision, components, height, width)`` from a JPEG's frame header (SOFn)."""
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
            if i + 10 > n:
                return None
            return (data[i + 4], data[i + 9], int.from_bytes(data[i + 5:i + 7], "big"),
                    int.from_bytes(data[i + 7:i + 9], "big"))
        if marker in (0xD9, 0xDA):  # end of image or start of scan before any frame header
            return None
        i += 2 + int.from_bytes(data[i + 2:i + 4], "big")
    return None


@dataclass(frozen=True)
class _Header:
    height: int
    width: int
    channels: int | None     # samples per pixel the file declares, None when unknown
    bits: int | None = None  # bits per sample, where the header says (JPEG)


_PNG_CHANNELS = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}   # colour type -> channels (palette: RGB)


def _tiff_header(data: bytes) -> _Header | None:
    import tifffile

    try:
        with tifffile.TiffFile(io.BytesIO(data)) as tiff:
            page = tiff.pages[0]
            return _Header(int(page.imagelength), int(page.imagewidth), int(page.samplesperpixel))
    except Exception:  # noqa: BLE001 - a header tifffile cannot parse: let the decoders decide
        return None


def _header(data: bytes, kind: str) -> _Header | None:
    """Size and declared channels from the file's header, without decoding its pixels."""
    try:
        if kind == "png" and len(data) >= 26:
            return _Header(int.from_bytes(data[20:24], "big"), int.from_bytes(data[16:20], "big"),
                           _PNG_CHANNELS.get(data[25]))
        if kind == "jpeg":
            frame = _jpeg_frame(data)
            return None if frame is None else _Header(frame[2], frame[3], frame[1], frame[0])
        if kind == "gif" and len(data) >= 10:
            return _Header(int.from_bytes(data[8:10], "little"), int.from_bytes(data[6:8], "little"), None)
        if kind == "bmp" and len(data) >= 26:
            if int.from_bytes(data[14:18], "little") == 12:  # OS/2 header: 16-bit sizes
                return _Header(int.from_bytes(data[20:22], "little"),
                               int.from_bytes(data[18:20], "little"), None)
            width = int.from_bytes(data[18:22], "little", signed=True)
            height = int.from_bytes(data[22:26], "little", signed=True)
            return _Header(abs(height), abs(width), None)
        if kind == "tiff":
            return _tiff_header(data)
    except (IndexError, ValueError):
        return None
    return None


def stored_size(data: bytes) -> tuple[int, int] | None:
    """(height, width) from an image file's header, without decoding it; None when unknown."""
    kind = _container(data)
    header = _header(data, kind) if kind is not None else None
    return None if header is None else (header.height, header.width)


def _check_pixels(path: Path, header: _Header | None, max_pixels: int | None) -> None:
    if header is None or not max_pixels:
        return
    pixels = header.height * header.width
    if pixels > max_pixels:
        raise DecodeError(f"{path}: declares {header.width}x{header.height} = {pixels:,} pixels, "
                          f"above the limit of {max_pixels:,} (--max-pixels); not decoded")


# ----------------------------------------------------------------------------- decoder warnings

class _NativeStderr:
    """What C libraries (libjpeg, OpenCV's logger) write to file descriptor 2 during a decode,
    captured into a per-process temporary file instead of the terminal."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._file = None
        self._pid: int | None = None

    @contextmanager
    def capture(self) -> Iterator[list[str]]:
        messages: list[str] = []
        with self._lock:
            if self._pid != os.getpid():  # a forked child gets a file of its own
                self._file = tempfile.TemporaryFile()
                self._pid = os.getpid()
            handle = self._file
            handle.seek(0)
            handle.truncate()
            try:
                sys.stderr.flush()
            except (AttributeError, ValueError):  # no or closed Python stderr
                pass
            saved = os.dup(2)
            level = cv2.utils.logging.getLogLevel()
            cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_WARNING)
            os.dup2(handle.fileno(), 2)
            try:
                yield messages
            finally:
                os.dup2(saved, 2)
                os.close(saved)
                cv2.utils.logging.setLogLevel(level)
                if os.fstat(handle.fileno()).st_size:
                    handle.seek(0)
                    text = handle.read().decode("utf-8", "replace")
                    messages.extend(line.strip() for line in text.splitlines() if line.strip())


_stderr = _NativeStderr()


def _damage(messages: list[str]) -> str | None:
    for message in messages:
        if any(word in message.lower() for word in _DAMAGE):
            return message
    return None


# ----------------------------------------------------------------------------- decoding

# libjpeg-turbo writes RGB as cheaply as BGR: decoding a colour JPEG straight to RGB gives the
# same bytes as BGR plus a channel swap, without the swap's pass over every pixel (and a second
# image-sized buffer). IMREAD_COLOR* would apply an EXIF rotation that IMREAD_UNCHANGED does not;
# turn that off.
_JPEG_RGB = (cv2.IMREAD_COLOR_RGB | cv2.IMREAD_IGNORE_ORIENTATION
             if hasattr(cv2, "IMREAD_COLOR_RGB") else None)


def _tifffile_decode(path: Path, data: bytes) -> np.ndarray:
    """The first page of a TIFF as tifffile reads it, channels last, in the stored (RGB) order."""
    import tifffile

    try:
        with tifffile.TiffFile(io.BytesIO(data)) as tiff:
            page = tiff.pages[0]
            array = page.asarray()
            samples, planar = int(page.samplesperpixel), int(page.planarconfig)
    except Exception as exc:  # noqa: BLE001 - tifffile's errors have no common base
        raise DecodeError(f"{path}: cannot decode TIFF (corrupt or truncated; tifffile: "
                          f"{type(exc).__name__}: {exc})") from None
    if array.ndim == 3 and samples > 1 and planar == 2 and array.shape[0] == samples:
        array = np.moveaxis(array, 0, -1)  # separate planes -> channels last
    return np.ascontiguousarray(array)


def _channels(array: np.ndarray) -> int:
    return 1 if array.ndim == 2 else int(array.shape[2])


def _decode(path: Path, *, rgb: bool, max_pixels: int | None,
            data: bytes | None = None) -> tuple[np.ndarray, bool, Decoded]:
    """Decoded pixels in the decoder's own channel order and depth, whether that order is RGB
    (OpenCV gives BGR[A]; tifffile and Pillow give RGB[A]), and the record of the decode (its
    ``array`` is not yet converted). With ``rgb=True`` an 8-bit, 3-component JPEG is decoded
    straight to RGB (the same pixels as decoding to BGR and swapping the channels)."""
    data, kind = _read_bytes(path, data)
    header = _header(data, kind)
    _check_pixels(path, header, max_pixels)
    declared = header.channels if header is not None else None
    opencv_channels = None  # set when OpenCV's channels lost to tifffile's
    with _stderr.capture() as messages:
        is_rgb, decoder = False, "opencv"
        if kind == "gif":
            # OpenCV's GIF support is optional at build time; Pillow always has it.
            decoder, is_rgb = "pillow", True
            try:
                with Image.open(io.BytesIO(data)) as im:
                    im.seek(0)
                    if im.mode == "P":
                        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
                    array = np.asarray(im)
            except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as exc:
                raise DecodeError(f"{path}: cannot decode GIF ({exc})") from None
        else:
            buffer = np.frombuffer(data, np.uint8)
            colour_jpeg = kind == "jpeg" and header is not None and (header.channels, header.bits) == (3, 8)
            flags = _JPEG_RGB if rgb and colour_jpeg and _JPEG_RGB is not None else cv2.IMREAD_UNCHANGED
            try:
                array = cv2.imdecode(buffer, flags)
            except cv2.error:
                array = None
            is_rgb = flags != cv2.IMREAD_UNCHANGED
            failed = array is None or array.size == 0
            if kind == "tiff" and (failed or (declared is not None and _channels(array) < declared)):
                # OpenCV failed, or dropped channels the file declares (it expands a palette
                # into more, which is right): tifffile honours samples-per-pixel.
                opencv_channels = None if failed else _channels(array)
                array, is_rgb, decoder = _tifffile_decode(path, data), True, "tifffile"
            if array is None or array.size == 0:
                raise DecodeError(f"{path}: cannot decode {kind.upper()} (corrupt or truncated)")
    if opencv_channels is not None:
        log.info("%s: OpenCV decoded %d channel(s), the file declares %s; used tifffile",
                 path, opencv_channels, declared)
    damage = _damage(messages)
    if damage is not None:
        raise DecodeError(f"{path}: damaged {kind.upper()} data, pixels missing ({damage})")
    return array, is_rgb, Decoded(array, kind, decoder, declared, tuple(messages), data)


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


def _image_rgb(array: np.ndarray, is_rgb: bool, path: Path) -> np.ndarray:
    if array.dtype == np.uint8 and array.ndim == 3 and array.shape[2] == 3 and is_rgb:
        return array  # IMREAD_COLOR_RGB, or tifffile's RGB
    array = _to_uint8(array, path)
    if array.ndim == 2:
        return cv2.cvtColor(array, cv2.COLOR_GRAY2RGB)
    if array.ndim != 3 or array.shape[2] not in (1, 2, 3, 4):
        raise DecodeError(f"{path}: unsupported image shape {array.shape}")
    channels = array.shape[2]
    if channels in (1, 2):  # grey, or grey + alpha
        return cv2.cvtColor(np.ascontiguousarray(array[..., 0]), cv2.COLOR_GRAY2RGB)
    if channels == 4:
        return cv2.cvtColor(array, cv2.COLOR_RGBA2RGB if is_rgb else cv2.COLOR_BGRA2RGB)
    if is_rgb:
        return np.ascontiguousarray(array)
    # The decoded array is this function's own: swap in place instead of filling a new one.
    own = array.flags.writeable and array.flags.c_contiguous
    return cv2.cvtColor(array, cv2.COLOR_BGR2RGB, dst=array if own else None)


def decode_image(path: Path, max_pixels: int | None = MAX_PIXELS, data: bytes | None = None) -> Decoded:
    """An image file as ``uint8`` RGB ``(H, W, 3)`` in :attr:`Decoded.array`, with the decoder
    used and its warnings. ``data``: the file's bytes, already read (``path`` then only names
    them in errors). Raises :class:`DecodeError` naming the file."""
    path = Path(path)
    array, is_rgb, record = _decode(path, rgb=True, max_pixels=max_pixels, data=data)
    return Decoded(_image_rgb(array, is_rgb, path), record.container, record.decoder,
                   record.declared_channels, record.warnings, record.data)


def _mask_channel(array: np.ndarray, path: Path) -> np.ndarray:
    if array.dtype == np.uint16 and int(array.max(initial=0)) <= 255:
        array = array.astype(np.uint8)
    array = _to_uint8(array, path)
    if array.ndim == 3 and array.shape[2] in (2, 4):
        colour, alpha = array[..., :-1], array[..., -1]
        # Some tools draw the mask into the alpha channel over a constant colour.
        array = alpha if colour.min() == colour.max() else np.ascontiguousarray(colour)
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


def decode_mask(path: Path, max_pixels: int | None = MAX_PIXELS, data: bytes | None = None) -> Decoded:
    """A mask file as one ``uint8`` channel with its raw grey values (:attr:`Decoded.array`).

    16-bit masks keep their values when they fit in 8 bits (label images such as
    nnU-Net's 0/1), and are scaled otherwise. A mask saved as a colour image is
    reduced with the channel maximum, so a red-on-black annotation is not darkened
    the way a luminance conversion would darken it.
    """
    path = Path(path)
    array, _, record = _decode(path, rgb=False, max_pixels=max_pixels, data=data)
    return Decoded(_mask_channel(array, path), record.container, record.decoder,
                   record.declared_channels, record.warnings, record.data)


def keepable(decoded: Decoded) -> bool:
    """Whether a shard may keep this file's bytes instead of its pixels: decoding the bytes
    again with the same function gives the same pixels (the decode is a pure function of the
    bytes), and the bytes are a compressed format (8-bit JPEG or PNG through OpenCV). Files that
    need tifffile or Pillow, or that are 16-bit, are stored as pixels: an uncompressed TIFF or
    BMP is larger than the pixels compressed, and the pixels do not depend on another decoder
    being present where the shard is read."""
    if decoded.container == "png" and len(decoded.data) > 24 and decoded.data[24] > 8:
        return False  # 16-bit: twice the bytes of the 8-bit pixels it becomes
    return (decoded.container in ("jpeg", "png") and decoded.decoder == "opencv"
            and not decoded.warnings and bool(decoded.data))


def read_image(path: Path, max_pixels: int | None = MAX_PIXELS) -> np.ndarray:
    """An image file as ``uint8`` RGB ``(H, W, 3)``. Raises :class:`DecodeError` naming the file."""
    return decode_image(path, max_pixels).array


def read_mask(path: Path, max_pixels: int | None = MAX_PIXELS) -> np.ndarray:
    """A mask file as one ``uint8`` channel with its raw grey values (see :func:`decode_mask`)."""
    return decode_mask(path, max_pixels).array


def is_grey(image: np.ndarray) -> bool:
    """Whether an RGB image's three channels are identical (a grey picture, or lost colour).
    A colour photograph differs on a sparse grid already: the full check runs only when the
    grid finds no colour."""
    if image.ndim != 3 or image.shape[2] != 3:
        return True
    for view in (image[::8, ::8], image):
        if not ((view[..., 0] == view[..., 1]).all() and (view[..., 1] == view[..., 2]).all()):
            return False
    return True
