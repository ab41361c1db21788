"""Decode every image of a split once into a uint8 (N, H, W, C) array, in memory or on disk.

Later epochs index this array and never decode again. The first pass decodes in parallel
on all cores. A disk cache is keyed by path + size + mtime + preprocessing, so a second
run on the same data starts at once, and an edited file is decoded again.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
import sys
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from imageclf.core.errors import BadImageError, DataError
from imageclf.core.io import atomic_write_text, cache_root
from imageclf.data.images import Preprocessing, load_image, prepare_array
from imageclf.data.sources import Split

CACHE_VERSION = 1
# Below this many files a process pool costs more than it saves.
MIN_PARALLEL_FILES = 64
CHUNK = 32
# Files smaller than this (their median, over a sample) decode in one worker thread, not one per
# core: a 28 px PNG (~460 bytes) is ~50 us of Pillow's Python work under the GIL and ~2 us of C,
# so a second thread only contends for the GIL with the first and with the caller's inference.
# mnist-basic predicting 5,000 Fashion-MNIST PNGs: 6,370-7,131 img/s on two threads, 7,452-8,001
# on one; 128 px PNGs (~5 KB) and JPEG photos (~14 KB) are as fast or faster on two.
SMALL_FILE = 2048
SIZE_SAMPLE = 16


def decode_threads(paths: Sequence[str]) -> int:
    """Worker threads for decoding ``paths``: one where the files are small (SMALL_FILE), else
    one per core."""
    sizes = []
    for p in paths[:: max(1, len(paths) // SIZE_SAMPLE)][:SIZE_SAMPLE]:
        try:
            sizes.append(os.stat(p).st_size)
        except OSError:  # a bad path is reported by its decode
            continue
    cores = os.cpu_count() or 1
    return 1 if sizes and float(np.median(sizes)) < SMALL_FILE else cores


class DiskImages:
    """A read-only (N, H, W, C) uint8 array in a raw file, read with pread.

    Reading batches with pread keeps the data in the page cache instead of in this
    process' resident memory, which a memmap touched at random would fill.
    """

    def __init__(self, path: Path, shape: tuple[int, ...]) -> None:
        self.path = path
        self.shape = shape
        self.dtype = np.dtype(np.uint8)
        self._item = int(np.prod(shape[1:]))
        self._fd: int | None = None

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def nbytes(self) -> int:
        return self.shape[0] * self._item

    def _file(self) -> int:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDONLY)
        return self._fd

    def __getitem__(self, index) -> np.ndarray:
        if isinstance(index, int | np.integer):
            return self[np.array([index])][0]
        if isinstance(index, slice):
            index = np.arange(*index.indices(self.shape[0]))
        index = np.asarray(index, dtype=np.int64)
        out = np.empty((len(index), *self.shape[1:]), np.uint8)
        fd = self._file()
        flat = out.reshape(len(index), -1)
        for j, i in enumerate(index):
            # Straight into the batch buffer: no intermediate bytes object per image.
            if os.preadv(fd, [flat[j]], int(i) * self._item) != self._item:
                raise DataError(f"{self.path}: cache file is shorter than its index says")
        return out

    def __getstate__(self) -> dict:
        return {"path": self.path, "shape": self.shape}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["path"], state["shape"])

    def __del__(self) -> None:
        if self._fd is not None:
            os.close(self._fd)


@dataclass
class CachedSplit:
    """Decoded images of one split, with the labels of those that decoded."""

    name: str
    images: np.ndarray | DiskImages
    labels: np.ndarray
    source_index: np.ndarray
    skipped: list[tuple[str, str]] = field(default_factory=list)
    groups: np.ndarray | None = None  # the split's groups (--group-by) of the images that decoded

    def __len__(self) -> int:
        return len(self.labels)


def batches(images: np.ndarray | DiskImages, index_batches: Sequence[np.ndarray],
            prefetch: int = 2) -> Iterator[np.ndarray]:
    """``images[idx]`` for each index batch, in order, as contiguous uint8 arrays.

    From a disk cache the next ``prefetch`` batches are read on a background thread while
    the caller trains on this one (``pread`` releases the GIL); an in-memory cache is
    indexed directly, which costs microseconds.
    """
    if isinstance(images, np.ndarray):
        for idx in index_batches:
            yield np.ascontiguousarray(images[idx])
        return
    with ThreadPoolExecutor(1, thread_name_prefix="imageclf-prefetch") as pool:
        todo = iter(index_batches)
        pending = deque(pool.submit(images.__getitem__, idx) for _, idx in zip(range(prefetch), todo))
        while pending:
            batch = pending.popleft().result()
            nxt = next(todo, None)
            if nxt is not None:
                pending.append(pool.submit(images.__getitem__, nxt))
            yield batch


def _decode_chunk(args: tuple[list[str], Preprocessing]) -> list[np.ndarray | str]:
    paths, pre = args
    out: list[np.ndarray | str] = []
    for p in paths:
        try:
            out.append(load_image(p, pre))
        except BadImageError as exc:
            out.append(exc.reason)
    return out


def _pool_context() -> mp.context.BaseContext:
    # fork starts workers in milliseconds; they only run Pillow and numpy, never torch.
    return mp.get_context("fork" if sys.platform.startswith("linux") else "spawn")


def decode_paths(paths: list[str], pre: Preprocessing, workers: int | None = None,
                 threads: bool = False) -> Iterator[np.ndarray | str]:
    """Decode files in order, in parallel on ``workers`` processes; a bad file yields its reason.

    ``threads``: worker threads instead (Pillow decodes and resizes without the GIL). They
    start at once, where forking a process that holds torch costs ~0.1 s: the better choice
    for the few hundred files of a prediction (524 128-px PNGs: 0.12 s against 0.2 s); by
    default as many as :func:`decode_threads` says, and even one runs ahead of the caller.
    """
    chunks = [paths[i:i + CHUNK] for i in range(0, len(paths), CHUNK)]
    # Sized only where files are many: a one-image prediction stats nothing more.
    if len(paths) >= MIN_PARALLEL_FILES:
        workers = workers or (decode_threads(paths) if threads else os.cpu_count() or 1)
    if len(paths) < MIN_PARALLEL_FILES or (workers <= 1 and not threads):
        for chunk in chunks:
            yield from _decode_chunk((chunk, pre))
        return
    pool = (ThreadPoolExecutor(workers, thread_name_prefix="imageclf-decode") if threads
            else ProcessPoolExecutor(workers, mp_context=_pool_context()))
    with pool:
        # map submits every chunk now: with fork, the pool starts all its processes at the first.
        results = pool.map(_decode_chunk, [(c, pre) for c in chunks])
        for result in results:
            yield from result


def _cache_key(split: Split, pre: Preprocessing) -> str:
    h = hashlib.sha256(json.dumps([CACHE_VERSION, pre.to_dict()]).encode())
    if split.paths is not None:
        for p in split.paths:
            st = os.stat(p)
            h.update(f"{os.path.abspath(p)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    else:
        h.update(hashlib.sha256(np.ascontiguousarray(split.arrays)).digest())
    return h.hexdigest()[:32]


def default_cache_dir() -> Path:
    """Where decoded images are cached on disk: imageclf's cache folder itself."""
    return cache_root()


def choose_storage(n: int, pre: Preprocessing, storage: str) -> str:
    """``memory`` or ``disk``: ``auto`` keeps caches up to 2 GiB in memory."""
    if storage in ("memory", "disk"):
        return storage
    if storage != "auto":
        raise DataError(f"cache must be auto, memory or disk, got {storage!r}")
    nbytes = n * pre.size[0] * pre.size[1] * pre.channels
    return "memory" if nbytes <= 2 * 1024**3 else "disk"


def cache_split(
    split: Split,
    pre: Preprocessing,
    *,
    storage: str = "auto",
    cache_dir: Path | None = None,
    workers: int | None = None,
    skip_bad: bool = False,
    progress: Callable[[int], None] | None = None,
) -> CachedSplit:
    """Decode ``split`` at ``pre`` into uint8 images (see the module docstring).

    A bad image raises :class:`BadImageError` naming it, unless ``skip_bad``: then it is
    left out and listed in ``skipped``. ``progress(n)`` is called as images are done;
    """
    workers = workers or os.cpu_count() or 1
    n = len(split)
    h, w = pre.size
    if split.arrays is not None:
        return _cache_arrays(split, pre, progress)
    where = choose_storage(n, pre, storage)
    if where == "disk":
        return _cache_to_disk(split, pre, cache_dir or default_cache_dir(), workers, skip_bad, progress)
    images = np.empty((n, h, w, pre.channels), np.uint8)
    ok = np.zeros(n, bool)
    skipped: list[tuple[str, str]] = []
    for i, pixels in _good_images(split, pre, workers, skip_bad, skipped, progress):
        images[i] = pixels
        ok[i] = True
    keep = np.flatnonzero(ok)
    if len(keep) < n:
        images = images[keep]
    return CachedSplit(split.name, images, split.labels[keep], keep, skipped, _groups(split, keep))


def _groups(split: Split, keep: np.ndarray) -> np.ndarray | None:
    return None if split.groups is None else split.groups[keep]


def _good_images(split: Split, pre: Preprocessing, workers: int, skip_bad: bool,
                 skipped: list[tuple[str, str]], progress) -> Iterator[tuple[int, np.ndarray]]:
    """(index, pixels) of each image that decodes, in order; a bad one raises BadImageError,
    or with ``skip_bad`` is appended to ``skipped`` as (path, reason)."""
    for i, result in enumerate(decode_paths(split.paths, pre, workers)):
        if isinstance(result, str):
            if not skip_bad:
                raise BadImageError(split.paths[i], result)
            skipped.append((split.paths[i], result))
        else:
            yield i, result
        if progress:
            progress(1)


def _cache_arrays(split: Split, pre: Preprocessing, progress) -> CachedSplit:
    arrays = split.arrays
    h, w = pre.size
    fits = arrays.dtype == np.uint8 and arrays.shape[1:3] == (h, w) and (
        (arrays.ndim == 3 and pre.channels == 1) or (arrays.ndim == 4 and arrays.shape[3] == pre.channels)
    )
    if fits:
        images = arrays.reshape(len(arrays), h, w, pre.channels)
        if progress:
            progress(len(arrays))
    else:
        images = np.empty((len(arrays), h, w, pre.channels), np.uint8)
        for i, a in enumerate(arrays):
            images[i] = prepare_array(a, pre)
            if progress and (i % 256 == 255 or i == len(arrays) - 1):
                progress(256 if i % 256 == 255 else (i % 256) + 1)
    return CachedSplit(split.name, np.ascontiguousarray(images), split.labels,
                       np.arange(len(arrays)), groups=split.groups)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_dead_writers(cache_dir: Path) -> None:
    """Delete half-written cache files of processes that no longer run (a kill -9 mid-decode)."""
    for tmp in cache_dir.glob("*.tmp*"):
        pid = tmp.suffix[len(".tmp"):]
        if pid.isdigit() and not _pid_alive(int(pid)):
            tmp.unlink(missing_ok=True)


def _cache_to_disk(split, pre, cache_dir: Path, workers, skip_bad, progress) -> CachedSplit:
    cache_dir.mkdir(parents=True, exist_ok=True)
    remove_dead_writers(cache_dir)
    key = _cache_key(split, pre)
    data_path, meta_path = cache_dir / f"{key}.u8", cache_dir / f"{key}.json"
    h, w = pre.size
    if data_path.exists() and meta_path.exists():
        meta = json.loads(meta_path.read_text())
        keep = np.array(meta["keep"], dtype=np.int64)
        if skip_bad or not meta["skipped"]:
            if progress:
                progress(len(split))
            return CachedSplit(split.name, DiskImages(data_path, (len(keep), h, w, pre.channels)),
                               split.labels[keep], keep, [tuple(s) for s in meta["skipped"]],
                               _groups(split, keep))
    item = h * w * pre.channels
    tmp = data_path.with_suffix(f".tmp{os.getpid()}")
    skipped, keep = [], []
    try:
        with open(tmp, "wb") as f:
            for i, pixels in _good_images(split, pre, workers, skip_bad, skipped, progress):
                assert pixels.size == item
                f.write(pixels.tobytes())
                keep.append(i)
        os.replace(tmp, data_path)
    finally:
        if tmp.exists():
            tmp.unlink()
    atomic_write_text(meta_path, json.dumps({"keep": keep, "skipped": skipped, "pre": pre.to_dict()}))
    keep_arr = np.array(keep, dtype=np.int64)
    return CachedSplit(split.name, DiskImages(data_path, (len(keep), h, w, pre.channels)),
                       split.labels[keep_arr], keep_arr, skipped, _groups(split, keep_arr))
