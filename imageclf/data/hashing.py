"""A perceptual hash (pHash) in numpy, and the search for near-duplicate images.

A 64-bit hash summarises an image's coarse structure, so a resized, re-encoded or
slightly brightened copy hashes to within a few bits of the original; the Hamming
distance between hashes then finds candidate copies of a test image in the training data.

The hash is taken from a 32 x 32 grayscale thumbnail (:func:`thumbnails`): the 8 x 8
lowest frequencies of its DCT compared with their median. Small, look-alike images
(MNIST strokes, 28-px chest X-rays) often hash within a few bits of each other without
being copies, so each candidate pair is confirmed by the correlation of the two
thumbnails. Measured on the data in ../shared/data: resized + JPEG-compressed and
brightened copies correlate at 0.996 or more; distinct look-alikes (MNIST ones, Fashion-MNIST
trousers) reach 0.988, rarely more. The default 0.99 therefore misses some copies rather
than report look-alikes as copies: copies with heavy added noise (0.98-0.99), and enlarged
copies of images that are mostly pixel noise (resampling smooths the noise away).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

THUMB = 32
# A candidate pair: pHashes differ in at most this many of 64 bits ...
DEFAULT_MAX_DISTANCE = 8
# ... confirmed when the thumbnails' correlation is at least this.
DEFAULT_MIN_CORRELATION = 0.99


def _gray(images: np.ndarray) -> np.ndarray:
    x = np.asarray(images)
    if x.ndim == 4:
        x = x[..., :3].mean(-1) if x.shape[-1] >= 3 else x[..., 0]
    return x.astype(np.float32)


def thumbnails(images: np.ndarray, size: int = THUMB, batch: int = 4096) -> np.ndarray:
    """(N, size, size) float32 grayscale thumbnails of same-sized images (N, H, W[, C])."""
    x = _gray(images)
    out = np.empty((len(x), size, size), np.float32)
    for start in range(0, len(x), batch):
        t = torch.from_numpy(np.ascontiguousarray(x[start:start + batch]))[:, None]
        t = F.interpolate(t, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        out[start:start + batch] = t[:, 0].numpy()
    return out


def thumbnail(image: np.ndarray, size: int = THUMB) -> np.ndarray:
    """One image's thumbnail (any size, gray or colour)."""
    return thumbnails(np.asarray(image)[None], size)[0]


def _pack(bits: np.ndarray) -> np.ndarray:
    """(N, 64) booleans -> (N,) uint64, first bit most significant."""
    packed = np.packbits(bits.astype(np.uint8), axis=1)  # (N, 8) bytes, big-endian bit order
    return packed.view(">u8").reshape(-1).astype(np.uint64)


def _dct_matrix(n: int) -> np.ndarray:
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    m = np.cos(np.pi * (2 * i + 1) * k / (2 * n)) * np.sqrt(2 / n)
    m[0] /= np.sqrt(2)
    return m


def phash(thumbs: np.ndarray) -> np.ndarray:
    """pHash of (N, 32, 32) thumbnails: low-frequency DCT coefficients above their median."""
    d = _dct_matrix(thumbs.shape[1]).astype(np.float32)
    coeffs = d @ thumbs @ d.T
    low = coeffs[:, :8, :8].reshape(len(thumbs), 64)
    # The DC term is the mean brightness; leaving it out of the median keeps the hash
    # about structure, not exposure.
    median = np.median(low[:, 1:], axis=1, keepdims=True)
    return _pack(low > median)


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Bit differences between every hash in ``a`` and every hash in ``b``: (len(a), len(b))."""
    return np.bitwise_count(np.asarray(a, np.uint64)[:, None] ^ np.asarray(b, np.uint64)[None, :])


def pixel_hash(image: np.ndarray) -> int:
    """A 64-bit BLAKE2 digest of an image's exact pixel bytes: identical images, equal hashes.

    Run folders store these for their training images (train_hashes.npy), so the definition
    must not change: a model trained before would stop recognising its own images."""
    digest = hashlib.blake2b(np.ascontiguousarray(image).tobytes(), digest_size=8).digest()
    return int(np.frombuffer(digest, np.uint64)[0])


def pixel_hashes(images, batch: int = 512) -> np.ndarray:
    """:func:`pixel_hash` of each of same-sized images (an array or a disk cache, read in blocks)."""
    out = np.empty(len(images), np.uint64)
    for start in range(0, len(images), batch):
        for j, img in enumerate(images[start:start + batch]):
            out[start + j] = pixel_hash(img)
    return out


def pixel_key(image: np.ndarray) -> tuple[tuple[int, ...], int]:
    """Exact-duplicate key of an image of any size: its shape and :func:`pixel_hash`."""
    return tuple(np.shape(image)), pixel_hash(image)


def _standardise(thumbs: np.ndarray) -> np.ndarray:
    """Zero mean, unit norm per thumbnail, so a dot product is a correlation (0 for flat images)."""
    x = thumbs.reshape(len(thumbs), -1).astype(np.float32)
    x = x - x.mean(1, keepdims=True)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norm, out=np.zeros_like(x), where=norm > 1e-6)


@dataclass
class Hashes:
    """pHashes, standardised thumbnails and exact-pixel digests of one split, in its order."""

    phash: np.ndarray
    unit: np.ndarray
    exact: list[tuple]

    @classmethod
    def of_thumbnails(cls, thumbs: np.ndarray, exact: list[tuple]) -> Hashes:
        return cls(phash(thumbs), _standardise(thumbs), exact)

    def __len__(self) -> int:
        return len(self.phash)


def near_pairs(a: Hashes, b: Hashes, max_distance: int = DEFAULT_MAX_DISTANCE,
               min_correlation: float = DEFAULT_MIN_CORRELATION, *, same: bool = False,
               chunk: int = 256) -> Iterator[tuple[int, int, int, float]]:
    """(i, j, pHash distance, correlation) for near-duplicates ``a[i]`` and ``b[j]``.

    ``same``: a and b are one split, so each pair once and no image with itself.
    """
    buf = np.empty((chunk, len(b)), np.uint64)
    for start in range(0, len(a), chunk):
        block = a.phash[start:start + chunk]
        xor = np.bitwise_xor(block[:, None], b.phash[None, :], out=buf[:len(block)])
        dist = np.bitwise_count(xor)
        close = dist <= max_distance
        if same:
            close &= np.arange(len(b))[None, :] > np.arange(start, start + len(block))[:, None]
        rows, cols = np.nonzero(close)
        if not len(rows):
            continue
        corr = np.einsum("ij,ij->i", a.unit[start + rows], b.unit[cols])
        ok = corr >= min_correlation
        for r, c, d, k in zip(rows[ok], cols[ok], dist[rows[ok], cols[ok]], corr[ok]):
            yield start + int(r), int(c), int(d), float(k)


def exact_pairs(a: Hashes, b: Hashes, *, same: bool = False) -> list[tuple[int, int]]:
    """(i, j) for pixel-identical images ``a[i]`` and ``b[j]``."""
    where: dict[tuple, list[int]] = {}
    for j, key in enumerate(b.exact):
        where.setdefault(key, []).append(j)
    pairs = []
    for i, key in enumerate(a.exact):
        pairs += [(i, j) for j in where.get(key, ()) if not same or j > i]
    return pairs
