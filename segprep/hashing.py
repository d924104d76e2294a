"""Perceptual hashes (near-duplicate detection) and array checksums.

``phash`` is the classic DCT hash: greyscale, 32x32, 2-D DCT, the top-left 8x8 low
frequencies thresholded at their median (the DC term is left out of the median because it
only measures mean brightness and would pull the threshold up). Two images whose hashes differ
in few of the 64 bits look alike at thumbnail scale: consecutive video frames, re-encodes,
small crops or brightness changes.

Images with a fixed frame (the black corners and text boxes of endoscopy, the round field of
view of fundus photographs) share most of those 64 low-frequency bits even when they show
different things: on Kvasir-SEG, unrelated images are as close as 2-6 bits. ``phash256``
(64x64, the top-left 16x16 block) sees enough detail to confirm a candidate pair: there,
re-encoded and shifted copies stay within ~32 of 256 bits while unrelated images are 42 or more
apart.
"""

from __future__ import annotations

import hashlib

import cv2
import numpy as np

HASH_BITS = 64


def _grey64(image: np.ndarray) -> np.ndarray:
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if image.ndim == 3 else image
    # INTER_AREA averages the pixels each output pixel covers, so the hash does not alias.
    return cv2.resize(grey, (64, 64), interpolation=cv2.INTER_AREA).astype(np.float32)


def _bits(low: np.ndarray) -> int:
    """Coefficients above the median of the AC terms as an integer, first coefficient first."""
    ac = low[1:]
    # 63 and 255 AC terms: an odd count, whose median is its middle element; np.partition
    # finds the same value without np.median's checks and copies.
    middle = len(ac) // 2
    median = np.partition(ac, middle)[middle] if len(ac) % 2 else np.median(ac)
    return int.from_bytes(np.packbits(low > median).tobytes(), "big")


def image_hashes(image: np.ndarray) -> tuple[int, int]:
    """``(phash(image), phash256(image))`` from one resize."""
    small = _grey64(image)
    # 64 -> 32 is an exact 2x2 average, so phash is the 32x32 DCT hash of the area-resized image.
    thumb = cv2.resize(small, (32, 32), interpolation=cv2.INTER_AREA)
    return _bits(cv2.dct(thumb)[:8, :8].ravel()), _bits(cv2.dct(small)[:16, :16].ravel())


def phash(image: np.ndarray) -> int:
    """64-bit perceptual hash of an RGB ``(H, W, 3)`` or grey ``(H, W)`` uint8 image."""
    return image_hashes(image)[0]


def phash256(image: np.ndarray) -> int:
    """256-bit DCT hash (64x64 grey, top-left 16x16), to confirm near-duplicate candidates."""
    return image_hashes(image)[1]


def phash_hex(value: int, bits: int = HASH_BITS) -> str:
    return f"{value:0{bits // 4}x}"


def hamming(a: int, b: int) -> int:
    """Number of differing bits between two hashes."""
    return (int(a) ^ int(b)).bit_count()


def _popcount(values: np.ndarray) -> np.ndarray:
    if hasattr(np, "bitwise_count"):  # numpy >= 2.0
        return np.bitwise_count(values)
    as_bytes = values.view(np.uint8).reshape(*values.shape, 8)
    return np.unpackbits(as_bytes, axis=-1).sum(axis=-1)


def hamming_matrix(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Pairwise Hamming distances between two vectors of uint64 hashes, ``(len(rows), len(cols))``."""
    rows = np.asarray(rows, dtype=np.uint64)
    cols = np.asarray(cols, dtype=np.uint64)
    return _popcount(rows[:, None] ^ cols[None, :]).astype(np.int16)


# Distances computed per row block: about 15 bytes each at the peak (XOR, popcount, casts).
_BLOCK_ELEMENTS = 2**26


def near_pairs(hashes: np.ndarray, max_distance: int, *, block: int | None = None
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """All pairs ``i < j`` within ``max_distance`` bits, plus each hash's nearest neighbour.

    Returns ``(i, j, distance, nearest)`` where ``nearest[k]`` is the index of the closest other
    hash (lowest index on ties; -1 when there is only one hash). Computed in row blocks of
    ``block`` rows (default: 2048, fewer for large ``n``, so a block's distances stay near 2^26
    elements, ~1 GB at the peak): the time grows with n^2, the memory with n.
    """
    hashes = np.asarray(hashes, dtype=np.uint64)
    n = len(hashes)
    if block is None:
        block = int(min(2048, max(16, _BLOCK_ELEMENTS // max(n, 1))))
    nearest = np.full(n, -1, dtype=np.int64)
    found_i, found_j, found_d = [], [], []
    for start in range(0, n, block):
        dist = hamming_matrix(hashes[start:start + block], hashes).astype(np.int32)
        rows = np.arange(start, min(start + block, n))
        dist[rows - start, rows] = HASH_BITS + 1  # a hash is not its own neighbour
        if n > 1:
            nearest[rows] = dist.argmin(axis=1)
        ii, jj = np.nonzero(dist <= max_distance)
        ii = ii + start
        keep = ii < jj
        found_i.append(ii[keep])
        found_j.append(jj[keep])
        found_d.append(dist[ii[keep] - start, jj[keep]])
    if not found_i:
        empty = np.zeros(0, np.int64)
        return empty, empty, empty, nearest
    return (np.concatenate(found_i).astype(np.int64), np.concatenate(found_j).astype(np.int64),
            np.concatenate(found_d).astype(np.int64), nearest)


def array_sha1(array: np.ndarray) -> str:
    """SHA-1 of an array's bytes in C order (what the manifest's ``*_sha1`` columns hold)."""
    return hashlib.sha1(np.ascontiguousarray(array).data).hexdigest()
