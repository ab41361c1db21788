"""Groups of images that must stay on one side of a split: ``--group-by REGEX`` or ``COLUMN``.

Several X-rays of one patient, photos of one person, frames of one video: a model
validated on a patient it trained on is judged on an easier problem than the one it will
meet. ``--group-by`` names each image's group, either with a regular expression searched
in its path relative to the dataset (a named group, else the first group, else the whole
match: ``person(\\d+)_``) or with a CSV column. Files the expression does not match are
groups of their own.

:func:`assign_bins` deals whole groups into bins (train / validation, or K folds) with each
class spread as evenly as the groups allow; :func:`looks_grouped` says when file names
suggest groups nobody named.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import numpy as np

from imageclf.core.errors import ConfigError, DataError
from imageclf.data.dataset import Dataset, Split


def compile_group_pattern(group_by: str) -> re.Pattern:
    try:
        return re.compile(group_by)
    except re.error as exc:
        raise ConfigError(f"--group-by '{group_by}' is neither a column of the CSV nor a regular "
                          f"expression ({exc})") from None


def _relative(path: str, root: Path) -> str:
    try:
        return Path(path).resolve().relative_to(root).as_posix()
    except ValueError:
        return Path(path).as_posix()


def group_of(pattern: re.Pattern, text: str) -> str | None:
    """The group ``pattern`` finds in ``text``: its first named group, else its first group,
    else the whole match; None when it does not match."""
    m = pattern.search(text)
    if m is None:
        return None
    if pattern.groupindex:
        value = m.group(min(pattern.groupindex.values()))
    elif pattern.groups:
        value = m.group(1)
    else:
        value = m.group(0)
    return value or None


def dataset_root(ds: Dataset) -> Path:
    """The folder paths are taken relative to for ``--group-by``: the data folder, or the
    CSV's folder."""
    root = Path(ds.source).resolve()
    return root if root.is_dir() else root.parent


def attach_pattern_groups(ds: Dataset, group_by: str, strict: bool = True) -> Dataset:
    """Give every split's items their group from the regular expression ``group_by``.

    ``strict``: an expression that matches no file is an error (at training), not an
    empty grouping (at evaluation, on other data).
    """
    pattern = compile_group_pattern(group_by)
    if any(s.paths is None for s in ds.splits.values()):
        if not strict:
            return ds
        raise DataError(f"{ds.source}: --group-by '{group_by}' searches file paths, and an .npz has none; "
                        "use a CSV with a group column")
    root = dataset_root(ds)
    matched = 0
    for split in ds.splits.values():
        split.groups = np.array([group_of(pattern, _relative(p, root)) for p in split.paths], dtype=object)
        matched += sum(g is not None for g in split.groups)
    total = sum(len(s) for s in ds.splits.values())
    if strict and not matched:
        example = _relative(next(iter(ds.splits.values())).paths[0], root)
        raise DataError(f"{ds.source}: --group-by '{group_by}' matches none of its {total} files "
                        f"(searched in paths such as {example!r})")
    ds.group_by, ds.group_kind = group_by, "pattern"
    n_groups = len({g for s in ds.splits.values() for g in s.groups if g is not None})
    ds.layout += f"; --group-by '{group_by}': {n_groups} groups in {matched} of {total} files"
    if matched < total:
        ds.notes.append(f"--group-by '{group_by}' matched {matched} of {total} files; "
                        "each of the other files is a group of its own")
    return ds


def group_ids(groups: np.ndarray) -> np.ndarray:
    """An integer per item, equal for items of one group; an item without a group is alone."""
    ids = np.empty(len(groups), np.int64)
    seen: dict[str, int] = {}
    for i, g in enumerate(groups):
        if g is None:
            ids[i] = len(groups) + i  # unique, and never a group's id (those stay below len(groups))
        else:
            ids[i] = seen.setdefault(g, len(seen))
    return np.unique(ids, return_inverse=True)[1]


def assign_bins(labels: np.ndarray, groups: np.ndarray, fractions: list[float], seed) -> np.ndarray:
    """The bin of each item, whole groups at a time, each bin's class counts as near
    ``fractions`` of the class totals as the groups allow.

    Groups are dealt largest first (ties in a seeded random order); each goes to the bin
    whose classes are furthest below their targets, weighted by the group's own classes:
    the choice that most reduces the squared distance from the targets.
    """
    labels = np.asarray(labels, np.int64)
    ids = group_ids(groups)
    n_groups, k = int(ids.max()) + 1 if len(ids) else 0, int(labels.max()) + 1 if len(labels) else 1
    per_group = np.zeros((n_groups, k))
    np.add.at(per_group, (ids, labels), 1)
    target = np.outer(np.asarray(fractions, np.float64), per_group.sum(0))
    have = np.zeros_like(target)
    rng = np.random.default_rng(seed)
    order = rng.permutation(n_groups)
    order = order[np.argsort(-per_group[order].sum(1), kind="stable")]
    bin_of_group = np.empty(n_groups, np.int64)
    for g in order:
        v = per_group[g]
        b = int(np.argmin((have - target) @ v))
        bin_of_group[g] = b
        have[b] += v
    return bin_of_group[ids]


def grouped_holdout(split: Split, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (keep, held_out) with about ``fraction`` held out, whole groups only."""
    held = assign_bins(split.labels, split.groups, [1 - fraction, fraction], seed) == 1
    n_groups = len(np.unique(group_ids(split.groups)))
    if not held.any() or held.all():
        raise DataError(f"{split.name}: its {len(split)} images form only {n_groups} group(s) under "
                        "--group-by: too few to hold out validation groups")
    return np.flatnonzero(~held), np.flatnonzero(held)


def crossing_groups(ds: Dataset) -> dict[str, list[str]]:
    """Groups found in more than one split, by pair of splits (``train/test``): a leak."""
    names = [n for n, s in ds.splits.items() if s.groups is not None]
    sets = {n: {g for g in ds.splits[n].groups if g is not None} for n in names}
    out = {}
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            out[f"{a}/{b}"] = sorted(sets[a] & sets[b])
    return out


_PREFIX = re.compile(r"^(\D*?)(\d+)")


def looks_grouped(paths: list[str], min_share: float = 0.2) -> dict | None:
    """Whether file names suggest groups: many files share a ``person123``-like prefix
    (letters then the first number of the name). None when they do not; else the share,
    example prefixes and a ``--group-by`` to try."""
    keys = []
    for p in paths:
        m = _PREFIX.match(Path(p).name)
        keys.append((m.group(1), m.group(1) + m.group(2)) if m and m.group(1).strip("_- .") else None)
    counts = Counter(k[1] for k in keys if k is not None)
    shared = {k for k, c in counts.items() if c > 1}
    n_shared = sum(counts[k] for k in shared)
    if len(shared) < 2 or n_shared < min_share * max(1, len(paths)):
        return None
    words = Counter(k[0] for k in keys if k is not None and k[1] in shared)
    word = words.most_common(1)[0][0]
    examples = [k for k, _ in counts.most_common(3) if k in shared]
    return {"files": n_shared, "of": len(paths), "prefixes": len(shared), "examples": examples,
            "suggest": re.escape(word) + r"(\d+)"}
