"""Perceptual hashing: copies hash alike, different images do not, planted duplicates are found."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from imageclf.data import hashing
from imageclf.data.synthetic import synthetic_images


def _jpeg_resized(img: np.ndarray, size: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(img).resize((size, size), Image.BILINEAR).save(buf, "JPEG", quality=80)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())))


def _hashes(images) -> hashing.Hashes:
    thumbs = np.stack([hashing.thumbnail(i) for i in images])
    return hashing.Hashes.of_thumbnails(thumbs, [hashing.pixel_key(i) for i in images])


def test_phash_bits_and_dct():
    # The DCT matrix is orthonormal, so the hash compares true DCT coefficients.
    d = hashing._dct_matrix(32)
    np.testing.assert_allclose(d @ d.T, np.eye(32), atol=1e-10)
    flat = np.full((1, 32, 32), 100.0, np.float32)
    ramp = np.tile(np.linspace(0, 255, 32, dtype=np.float32), (32, 1))[None]
    assert hashing.phash(flat).dtype == np.uint64
    assert hashing.phash(flat)[0] != hashing.phash(ramp)[0]


def test_copies_hash_close_and_distinct_images_do_not():
    images, _ = synthetic_images(20, size=64, seed=1)
    base = _hashes(images)
    copies = _hashes([_jpeg_resized(images[0], 48), np.clip(images[1] * 1.1, 0, 255).astype(np.uint8)])
    d = hashing.hamming(copies.phash, base.phash)
    assert d[0, 0] <= hashing.DEFAULT_MAX_DISTANCE and d[1, 1] <= hashing.DEFAULT_MAX_DISTANCE
    # Distinct noisy images differ in many bits.
    others = hashing.hamming(base.phash, base.phash)[~np.eye(20, dtype=bool)]
    assert np.median(others) > 16


def test_hamming_counts_bits():
    a = np.array([0b1011], np.uint64)
    b = np.array([0, 0b1000, np.uint64(2**64 - 1)], np.uint64)
    assert hashing.hamming(a, b).tolist() == [[3, 2, 61]]


def test_planted_duplicates_are_found_across_splits():
    train, _ = synthetic_images(60, size=48, seed=2)
    test, _ = synthetic_images(30, size=48, seed=3)
    test[4] = train[10]                                       # exact copy
    test[7] = _jpeg_resized(train[20], 48)                    # re-encoded as JPEG
    a, b = _hashes(test), _hashes(train)
    assert hashing.exact_pairs(a, b) == [(4, 10)]
    near = {(i, j) for i, j, _, _ in hashing.near_pairs(a, b)}
    assert (7, 20) in near and (4, 10) in near
    assert len(near) == 2                                     # nothing else looks like a copy
    within = hashing.exact_pairs(b, b, same=True)
    assert within == []


def test_near_pairs_within_one_split_lists_each_pair_once():
    images, _ = synthetic_images(10, size=32, seed=4)
    images[6] = images[2]
    h = _hashes(images)
    assert [(i, j) for i, j, _, _ in hashing.near_pairs(h, h, same=True)] == [(2, 6)]
    assert hashing.exact_pairs(h, h, same=True) == [(2, 6)]
