import os

import numpy as np
import pytest

from imageclf.core.errors import BadImageError
from imageclf.data import synthetic as testing
from imageclf.data.cache import DiskImages, cache_split, decode_paths
from imageclf.data.hashing import pixel_hashes
from imageclf.data.images import Preprocessing
from imageclf.data.sources import open_dataset

PRE = Preprocessing(size=(16, 16), channels=1)


@pytest.fixture
def split(tmp_path):
    return open_dataset(testing.make_class_folders(tmp_path / "d", n=80, size=20)).splits["all"]


def test_disk_and_memory_caches_hold_the_same_pixels(split, tmp_path):
    mem = cache_split(split, PRE, storage="memory", workers=2)
    disk = cache_split(split, PRE, storage="disk", cache_dir=tmp_path / "c", workers=2)
    assert isinstance(disk.images, DiskImages)
    idx = np.array([5, 0, 79, 40])
    assert np.array_equal(disk.images[idx], mem.images[idx])
    assert np.array_equal(pixel_hashes(disk.images), pixel_hashes(mem.images))


def test_disk_cache_reused_and_invalidated_by_mtime(split, tmp_path):
    cache_split(split, PRE, storage="disk", cache_dir=tmp_path / "c", workers=1)
    files = sorted(os.listdir(tmp_path / "c"))
    assert len(files) == 2  # data + meta, no temp leftovers
    cache_split(split, PRE, storage="disk", cache_dir=tmp_path / "c", workers=1)
    assert sorted(os.listdir(tmp_path / "c")) == files
    os.utime(split.paths[0], ns=(1, 1))
    cache_split(split, PRE, storage="disk", cache_dir=tmp_path / "c", workers=1)
    assert len(os.listdir(tmp_path / "c")) == 4


def test_parallel_decode_keeps_order(split):
    one = cache_split(split, PRE, storage="memory", workers=1)
    two = cache_split(split, PRE, storage="memory", workers=2)
    assert np.array_equal(one.images, two.images)


def test_bad_file_named_or_skipped(split):
    with open(split.paths[3], "wb") as f:
        f.write(b"not a png")
    with pytest.raises(BadImageError, match=os.path.basename(split.paths[3])):
        cache_split(split, PRE, storage="memory")
    cached = cache_split(split, PRE, storage="memory", skip_bad=True)
    assert len(cached) == 79 and cached.skipped[0][0] == split.paths[3]
    assert 3 not in cached.source_index and np.array_equal(cached.labels, np.delete(split.labels, 3))


def test_half_written_cache_of_a_dead_process_is_removed(split, tmp_path):
    cache_dir = tmp_path / "c"
    cache_dir.mkdir()
    dead = cache_dir / "abc.tmp999999999"  # no such pid
    dead.write_bytes(b"half")
    alive = cache_dir / f"abd.tmp{os.getpid()}"
    alive.write_bytes(b"busy")
    cache_split(split, PRE, storage="disk", cache_dir=cache_dir, workers=1)
    assert not dead.exists() and alive.exists()


def test_prefetching_reader_yields_every_batch_in_order(tmp_path):
    from imageclf.data.cache import batches

    images = np.random.default_rng(0).integers(0, 256, (50, 4, 5, 3), dtype=np.uint8)
    (tmp_path / "c.u8").write_bytes(images.tobytes())
    plan = [np.array([3, 1, 7]), np.array([0]), np.array([49, 48]), np.array([5, 6, 7, 8])]
    for source in (DiskImages(tmp_path / "c.u8", images.shape), images):
        out = list(batches(source, plan, prefetch=2))
        assert len(out) == len(plan)
        for got, idx in zip(out, plan):
            assert got.flags.c_contiguous and np.array_equal(got, images[idx])


def test_a_truncated_disk_cache_is_a_clear_error(tmp_path):
    from imageclf.core.errors import DataError

    (tmp_path / "short.u8").write_bytes(bytes(50 * 60 - 10))
    with pytest.raises(DataError, match="shorter"):
        DiskImages(tmp_path / "short.u8", (50, 4, 5, 3))[49]


def test_small_files_decode_on_one_thread_that_runs_ahead_and_larger_ones_on_every_core(tmp_path,
                                                                                        monkeypatch):
    import threading

    from imageclf.data import cache

    small = [tmp_path / f"s{i}.png" for i in range(100)]
    for i, p in enumerate(small):
        p.write_bytes(b"x" * (100 + i))
    large = [tmp_path / f"l{i}.png" for i in range(100)]
    for p in large:
        p.write_bytes(b"x" * cache.SMALL_FILE * 2)
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    assert cache.decode_threads([str(p) for p in small]) == 1
    assert cache.decode_threads([str(p) for p in large]) == 4
    assert cache.decode_threads([str(tmp_path / "missing.png")] * 3) == 4  # nothing to measure
    # one worker thread still decodes apart from the caller, in order
    seen = set()
    real = cache._decode_chunk
    monkeypatch.setattr(cache, "_decode_chunk",
                        lambda args: seen.add(threading.current_thread().name) or real(args))
    out = list(decode_paths([str(p) for p in small], PRE, 1, threads=True))
    assert len(out) == 100 and all(isinstance(r, str) for r in out)  # not images: each says why
    assert seen and all(name.startswith("imageclf-decode") for name in seen)
