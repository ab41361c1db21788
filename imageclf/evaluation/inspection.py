"""Looking at a dataset before training on it: ``imageclf.inspect("data/")``.

Which layout was recognised and why, class counts per split, the spread of image sizes,
modes and bit depths, unreadable files with their reasons, exact and near-duplicate
images (within a split and across splits: a test image that is also a training image makes
the test dishonest), sample images per class, and training images augmented exactly as a
recipe will augment them. With ``--group-by``, the groups per split and those that cross
splits (a leak); without it, a word when the file names look grouped (many files share a
``person123_``-like prefix).
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import sys
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from imageclf.core.errors import BadImageError
from imageclf.core.io import atomic_write_text
from imageclf.data import hashing
from imageclf.data.cache import cache_split
from imageclf.data.groups import crossing_groups, looks_grouped
from imageclf.data.images import Preprocessing, load_image, open_image, prepare_array, to_mode
from imageclf.data.sources import Dataset, Split, open_dataset
from imageclf.data.transforms import augment, to_float
from imageclf.evaluation.report.inspection_html import inspection_html
from imageclf.recipes.schema import Recipe, resolve_recipe

# Bits per pixel of each Pillow mode (all channels).
MODE_BITS = {"1": 1, "L": 8, "P": 8, "LA": 16, "RGB": 24, "RGBA": 32, "CMYK": 32, "YCbCr": 24,
             "I;16": 16, "I;16B": 16, "I;16L": 16, "I": 32, "F": 32}
SAMPLES_PER_CLASS = 8
DISPLAY = 128  # sample grid cell size in pixels
EXAMPLE_PAIRS = 8
# Near-duplicates within a split cost n^2 / 2 comparisons: searched up to this size.
WITHIN_SPLIT_LIMIT = 20_000


@dataclass
class SplitInfo:
    """What one split holds: labels, sizes (w, h) of readable images, formats and failures."""

    name: str
    labels: np.ndarray
    sizes: np.ndarray
    modes: Counter
    unreadable: list[tuple[str, str]]
    names: list[str]
    readable: np.ndarray  # indices into the split of the images that decoded

    def class_counts(self, k: int) -> list[int]:
        return np.bincount(self.labels, minlength=k).tolist()


@dataclass
class Duplicates:
    """Exact (pixel-identical) and near-duplicate pairs, as (split a, index a, split b, index b, ...)."""

    exact: dict[str, list[tuple[int, int]]] = field(default_factory=dict)
    near: dict[str, list[tuple[int, int, int, float]]] = field(default_factory=dict)
    max_distance: int = hashing.DEFAULT_MAX_DISTANCE
    min_correlation: float = hashing.DEFAULT_MIN_CORRELATION


@dataclass
class InspectionResult:
    """Everything ``imageclf inspect`` reports; ``to_html`` draws it, ``to_json`` writes it."""

    source: str
    kind: str
    classes: list[str]
    splits: dict[str, SplitInfo]
    duplicates: Duplicates
    samples: dict[str, list[tuple[str, int, np.ndarray]]]
    augmented: list[tuple[str, np.ndarray, list[np.ndarray]]]
    recipe: str
    augment_settings: dict
    pair_images: dict[str, list[tuple[str, np.ndarray, str, np.ndarray, str]]] = field(default_factory=dict)
    layout: str = ""
    groups: dict | None = None  # see group_report

    def to_dict(self) -> dict:
        k = len(self.classes)
        splits = {}
        for name, s in self.splits.items():
            uniq, counts = (np.unique(s.sizes, axis=0, return_counts=True) if len(s.sizes)
                            else (np.zeros((0, 2), int), np.zeros(0, int)))
            splits[name] = {
                "images": int(len(s.labels)), "class_counts": dict(zip(self.classes, s.class_counts(k))),
                "sizes": [[int(w), int(h), int(c)] for (w, h), c in zip(uniq, counts)],
                "mean_size": s.sizes.mean(0).round(1).tolist() if len(s.sizes) else None,
                "modes": {m: int(c) for m, c in s.modes.items()},
                "bit_depths": {str(MODE_BITS.get(m.split(" ")[0], 0)): int(c) for m, c in s.modes.items()},
                "unreadable": [list(u) for u in s.unreadable],
            }
        dup = self.duplicates

        def named(pairs_key: str, pairs: list) -> list[dict]:
            a, _, b = pairs_key.partition("/")
            return [{"a": self.splits[a].names[p[0]], "b": self.splits[b].names[p[1]],
                     **({"distance": p[2], "correlation": round(p[3], 4)} if len(p) > 2 else {})}
                    for p in pairs]

        return {
            "source": self.source, "kind": self.kind, "layout": self.layout, "classes": self.classes,
            "splits": splits, "groups": self.groups,
            "duplicates": {
                "method": {"exact": "identical decoded pixels",
                           "near": f"pHash within {dup.max_distance} of 64 bits and 32x32 thumbnail "
                                   f"correlation >= {dup.min_correlation}, identical pairs excluded; "
                                   f"searched across splits and within splits of up to "
                                   f"{WITHIN_SPLIT_LIMIT:,} images"},
                "exact_counts": {k: len(v) for k, v in dup.exact.items()},
                "near_counts": {k: len(v) for k, v in dup.near.items()},
                "exact_examples": {k: named(k, v[:EXAMPLE_PAIRS]) for k, v in dup.exact.items()},
                "near_examples": {k: named(k, v[:EXAMPLE_PAIRS]) for k, v in dup.near.items()},
            },
            "samples": {c: [self.splits[s].names[i] for s, i, _ in v] for c, v in self.samples.items()},
            "augmentation": {"recipe": self.recipe, "settings": self.augment_settings,
                             "images": [name for name, _, _ in self.augmented]},
        }

    def to_json(self, path: str | Path | None = None) -> str:
        text = json.dumps(self.to_dict(), indent=2) + "\n"
        if path is not None:
            atomic_write_text(path, text)
        return text

    def to_html(self, path: str | Path | None = None) -> str:

        page = inspection_html(self)
        if path is not None:
            atomic_write_text(path, page)
        return page

    def summary(self) -> str:
        d = self.to_dict()
        lines = [f"{self.source} ({self.kind}): {len(self.classes)} classes {self.classes}",
                 f"  layout: {self.layout}"]
        for name, s in d["splits"].items():
            counts = ", ".join(f"{c} {n}" for c, n in s["class_counts"].items())
            sizes = s["sizes"]
            size_text = (f"all {sizes[0][0]}x{sizes[0][1]}" if len(sizes) == 1 else
                         f"{len(sizes)} sizes, mean {s['mean_size'][0]:.0f}x{s['mean_size'][1]:.0f}")
            modes = ", ".join(f"{m} {n}" for m, n in s["modes"].items())
            lines.append(f"  {name}: {s['images']} images ({counts}); {size_text}; modes {modes}; "
                         f"{len(s['unreadable'])} unreadable")
            for p, why in s["unreadable"][:10]:
                lines.append(f"    unreadable {p}: {why}")
        dup = d["duplicates"]
        for key in sorted(set(dup["exact_counts"]) | set(dup["near_counts"])):
            near = dup["near_counts"].get(key)
            lines.append(f"  duplicates {key}: {dup['exact_counts'].get(key, 0)} identical pairs"
                         + (f", {near} near-duplicate pairs" if near is not None else ""))
            for ex in (dup["exact_examples"].get(key, []) + dup["near_examples"].get(key, []))[:3]:
                lines.append(f"    {ex['a']}  ~  {ex['b']}")
        lines += group_lines(self.groups)
        return "\n".join(lines)


def group_report(ds: Dataset) -> dict | None:
    """Groups per split and the groups in more than one split (``--group-by``); without it,
    whether the file names look grouped. None when there is nothing to say."""
    if ds.group_by is not None:
        crossing = crossing_groups(ds)
        return {"group_by": ds.group_by,
                "per_split": {n: len({g for g in s.groups if g is not None}) for n, s in ds.splits.items()
                              if s.groups is not None},
                "crossing": {k: {"count": len(v), "examples": v[:EXAMPLE_PAIRS]}
                             for k, v in crossing.items()}}
    paths = [p for s in ds.splits.values() if s.paths is not None for p in s.paths]
    hint = looks_grouped(paths) if paths else None
    return {"group_by": None, "looks_grouped": hint} if hint else None


def group_lines(groups: dict | None) -> list[str]:
    if not groups:
        return []
    if groups["group_by"] is None:
        h = groups["looks_grouped"]
        return [f"  file names look grouped: {h['files']:,} of {h['of']:,} files share a prefix with another "
                f"({h['prefixes']:,} prefixes, e.g. {', '.join(h['examples'])}). If each is one patient or "
                f"subject, keep them on one side of every split: --group-by '{h['suggest']}'"]
    per = ", ".join(f"{n} {c}" for n, c in groups["per_split"].items())
    lines = [f"  groups (--group-by '{groups['group_by']}'): {per}"]
    for key, v in groups["crossing"].items():
        a, _, b = key.partition("/")
        if v["count"]:
            lines.append(f"  {v['count']} groups are in both {a} and {b} (e.g. "
                         f"{', '.join(v['examples'][:5])}): {b} images of patients {a} has seen make its "
                         "figures optimistic")
        else:
            lines.append(f"  no group is in both {a} and {b}")
    return lines


def _inspect_file(path: str) -> tuple | str:
    """(w, h, mode, exact key, 32x32 thumbnail) of one file, or why it cannot be read."""
    try:
        img = open_image(path)
        w, h = img.size
        mode = img.mode
        img = ImageOps.exif_transpose(img)
        img.load()
        key = hashing.pixel_key(np.asarray(img))
        gray = to_mode(img, 1).resize((hashing.THUMB, hashing.THUMB), Image.BILINEAR)
        return w, h, mode, key, np.asarray(gray, np.float32)
    except BadImageError as exc:
        return exc.reason
    except (OSError, ValueError, SyntaxError) as exc:
        return f"cannot be decoded ({exc})"


def _inspect_chunk(paths: list[str]) -> list:
    return [_inspect_file(p) for p in paths]


def _map_files(paths: list[str], workers: int) -> list:
    chunks = [paths[i:i + 32] for i in range(0, len(paths), 32)]
    if workers <= 1 or len(paths) < 64:
        return [r for c in chunks for r in _inspect_chunk(c)]
    ctx = mp.get_context("fork" if sys.platform.startswith("linux") else "spawn")
    with ProcessPoolExecutor(workers, mp_context=ctx) as pool:
        return [r for result in pool.map(_inspect_chunk, chunks) for r in result]


def _scan_split(split: Split, workers: int) -> tuple[SplitInfo, hashing.Hashes]:
    names = [split.item_name(i) for i in range(len(split))]
    if split.arrays is not None:
        arr = split.arrays
        h, w = arr.shape[1:3]
        mode = "L" if arr.ndim == 3 or arr.shape[3] == 1 else ("RGB" if arr.shape[3] == 3 else "RGBA")
        mode = mode if arr.dtype == np.uint8 else f"{mode} ({arr.dtype})"
        info = SplitInfo(split.name, split.labels, np.tile([w, h], (len(arr), 1)), Counter({mode: len(arr)}),
                         [], names, np.arange(len(arr)))
        keys = [hashing.pixel_key(a) for a in arr]
        return info, hashing.Hashes.of_thumbnails(hashing.thumbnails(arr), keys)
    results = _map_files(split.paths, workers)
    ok = [i for i, r in enumerate(results) if not isinstance(r, str)]
    sizes = np.array([results[i][:2] for i in ok], np.int64).reshape(-1, 2)
    thumbs = np.stack([results[i][4] for i in ok]) if ok else np.zeros((0, hashing.THUMB, hashing.THUMB))
    info = SplitInfo(split.name, split.labels[ok], sizes, Counter(results[i][2] for i in ok),
                     [(split.paths[i], r) for i, r in enumerate(results) if isinstance(r, str)],
                     [names[i] for i in ok], np.array(ok, np.int64))
    return info, hashing.Hashes.of_thumbnails(thumbs, [results[i][3] for i in ok])


def find_duplicates(hashes: dict[str, hashing.Hashes], max_distance: int = hashing.DEFAULT_MAX_DISTANCE,
                    min_correlation: float = hashing.DEFAULT_MIN_CORRELATION) -> Duplicates:
    """Identical images within and across splits; near-duplicates across splits (a leak), and
    within splits of up to ``WITHIN_SPLIT_LIMIT`` images."""
    dup = Duplicates(max_distance=max_distance, min_correlation=min_correlation)
    names = list(hashes)
    for i, a in enumerate(names):
        dup.exact[f"{a}/{a}"] = hashing.exact_pairs(hashes[a], hashes[a], same=True)
        if len(hashes[a]) <= WITHIN_SPLIT_LIMIT:
            # A split that training divides further (train -> train + val) can leak inside itself.
            known = set(dup.exact[f"{a}/{a}"])
            near = hashing.near_pairs(hashes[a], hashes[a], max_distance, min_correlation, same=True)
            dup.near[f"{a}/{a}"] = [p for p in near if (p[0], p[1]) not in known]
        for b in names[i + 1:]:
            exact = hashing.exact_pairs(hashes[a], hashes[b])
            dup.exact[f"{a}/{b}"] = exact
            known = set(exact)
            near = hashing.near_pairs(hashes[a], hashes[b], max_distance, min_correlation)
            dup.near[f"{a}/{b}"] = [p for p in near if (p[0], p[1]) not in known]
    return dup


def _display(split: Split, index: int, channels: int) -> np.ndarray:
    pre = Preprocessing((DISPLAY, DISPLAY), channels, resize="pad")
    if split.arrays is not None:
        return prepare_array(split.arrays[index], pre)
    return load_image(split.paths[index], pre)


def _pick(info: SplitInfo, k: int, seed: int) -> dict[int, list[int]]:
    rng = np.random.default_rng(seed)
    out = {}
    for c in range(k):
        idx = np.flatnonzero(info.labels == c)
        out[c] = sorted(rng.choice(idx, min(SAMPLES_PER_CLASS, len(idx)), replace=False).tolist())
    return out


def augmented_grid(split: Split, recipe: Recipe, classes: list[str], seed: int = 0, images: int = 4,
                   draws: int = 3) -> list[tuple[str, np.ndarray, list[np.ndarray]]]:
    """(title, original, [augmented...]) for a few training images, decoded with the recipe's
    preprocessing and augmented by :func:`imageclf.data.transforms.augment`, the training path."""
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(len(split), min(images, len(split)), replace=False))
    cached = cache_split(split.subset(chosen), recipe.preprocessing(), storage="memory", workers=1,
                         skip_bad=True)
    if not len(cached):
        return []
    x = to_float(torch.from_numpy(np.ascontiguousarray(cached.images)))
    g = torch.Generator().manual_seed(seed)
    outs = [(augment(x.clone(), recipe.augment, g) * 255 + 0.5).clamp(0, 255).to(torch.uint8)
            .permute(0, 2, 3, 1).numpy() for _ in range(draws)]
    return [(f"{split.item_name(int(chosen[j]))} ({classes[int(cached.labels[i])]})", cached.images[i],
             [o[i] for o in outs]) for i, j in enumerate(cached.source_index)]


def inspect(data: str | Path | Dataset, recipe: str | Recipe = "xray-5block", *, img_size: int | None = None,
            class_names: list[str] | None = None, workers: int | None = None, seed: int = 0,
            max_distance: int = hashing.DEFAULT_MAX_DISTANCE,
            min_correlation: float = hashing.DEFAULT_MIN_CORRELATION, path_column: str | None = None,
            label_column: str | None = None, group_by: str | None = None) -> InspectionResult:
    """Inspect a dataset (see the module docstring); ``recipe`` decides the augmented grid.
    ``path_column``, ``label_column`` and ``group_by`` read it as training would
    (:func:`~imageclf.data.sources.open_dataset`).

    >>> imageclf.inspect("data/chest_xray").to_html("inspect.html")  # doctest: +SKIP
    """

    ds = data if isinstance(data, Dataset) else open_dataset(
        data, class_names, path_column=path_column, label_column=label_column, group_by=group_by)
    r = resolve_recipe(recipe, {"img_size": img_size} if img_size else {})
    workers = workers or os.cpu_count() or 1
    infos, hashes = {}, {}
    for name, split in ds.splits.items():
        infos[name], hashes[name] = _scan_split(split, workers)
    dup = find_duplicates(hashes, max_distance, min_correlation)
    first = "train" if "train" in ds.splits else next(iter(ds.splits))
    info, split = infos[first], ds.splits[first]
    colour = any(m.split(" ")[0] not in ("1", "L", "I;16", "I;16B", "I;16L", "I", "F", "LA")
                 for s in infos.values() for m in s.modes)
    samples = {ds.classes[c]: [(first, i, _display(split, int(info.readable[i]), 3 if colour else 1))
                               for i in idx] for c, idx in _pick(info, ds.num_classes, seed).items()}
    train_split = split.subset(info.readable) if len(info.readable) < len(split) else split
    return InspectionResult(ds.source, ds.kind, ds.classes, infos, dup, samples,
                            augmented_grid(train_split, r, ds.classes, seed), r.name, r.augment.to_dict(),
                            _pair_images(ds, infos, dup, 3 if colour else 1), ds.layout, group_report(ds))


def _pair_images(ds: Dataset, infos: dict[str, SplitInfo], dup: Duplicates, channels: int) -> dict:
    """Display images of the first example pairs of each kind, for the HTML page."""
    out: dict[str, list] = {}
    for kind, groups in (("identical", dup.exact), ("near-duplicate", dup.near)):
        for key, pairs in groups.items():
            a, _, b = key.partition("/")
            for p in pairs[:EXAMPLE_PAIRS]:
                ia, ib = int(infos[a].readable[p[0]]), int(infos[b].readable[p[1]])
                note = kind if len(p) == 2 else f"{kind}: pHash distance {p[2]}, correlation {p[3]:.3f}"
                out.setdefault(key, []).append(
                    (infos[a].names[p[0]], _display(ds.splits[a], ia, channels),
                     infos[b].names[p[1]], _display(ds.splits[b], ib, channels), note))
    return out
