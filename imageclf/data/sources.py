"""Finding a dataset: class folders, split folders, a CSV or an .npz, into labelled splits.

Nothing here decodes pixels (that is :mod:`imageclf.data.cache`); these modules only list
items and labels, check that the layout makes sense and say clearly when it does not. The
readers are :mod:`imageclf.data.folders` (class and split folders) and
:mod:`imageclf.data.tables` (CSV, npz); :mod:`imageclf.data.groups` keeps groups of images
(``--group-by``) on one side of every split. This module opens any of them
(:func:`open_dataset`) and cuts the splits training and evaluation use.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from imageclf.core.errors import DataError
from imageclf.data.dataset import SPLIT_NAMES, Dataset, Split, item_key, split_alias
from imageclf.data.folders import open_folder
from imageclf.data.groups import attach_pattern_groups, crossing_groups, grouped_holdout
from imageclf.data.tables import KNOWN_NPZ_CLASSES, csv_columns, listed_keys, open_csv, open_npz

__all__ = ["KNOWN_NPZ_CLASSES", "SPLIT_NAMES", "Dataset", "Split", "carve_of", "evaluation_split",
           "open_dataset", "split_alias", "stratified_split", "training_splits"]


def open_dataset(source: str | Path, class_names: list[str] | None = None, *,
                 path_column: str | None = None, label_column: str | None = None,
                 group_by: str | None = None, exclude: str | Path | None = None,
                 strict_groups: bool = True) -> Dataset:
    """List a dataset's splits and labels.

    ``source`` is a folder of class subfolders, a folder with split folders (``train/``,
    ``training_set/``, ``val/``, ``test/``, ... in any subset; see
    :mod:`imageclf.data.folders`), a CSV with path and label (and optional split) columns,
    or an ``.npz`` in MedMNIST or Keras layout. ``class_names`` names the integer labels of
    an npz; ``path_column`` / ``label_column`` name a CSV's columns where their names are not
    the usual ones. ``group_by`` (a CSV column or a regular expression on the file paths;
    :mod:`imageclf.data.groups`) gives every image its group; ``strict_groups=False`` lets it
    match nothing. ``exclude`` is a CSV of images training leaves out (rows whose
    ``exclude`` column is true, or every row; see :func:`training_splits`).
    """
    path = Path(source).expanduser()
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    suffix = path.suffix.lower()
    if (path_column or label_column) and (path.is_dir() or suffix != ".csv"):
        flag = "--path-column" if path_column else "--label-column"
        raise DataError(f"{path}: {flag} names a CSV's column, and this is not a CSV")
    column = None
    if path.is_dir():
        ds = open_folder(path)
    elif suffix == ".csv":
        if group_by is not None and group_by.strip().lower() in csv_columns(path):
            column = group_by.strip().lower()
        ds = open_csv(path, path_column, label_column, column)
    elif suffix == ".npz":
        ds = open_npz(path, class_names)
    else:
        raise DataError(f"{path}: not a folder, .csv or .npz dataset")
    if column is not None:
        ds.group_by, ds.group_kind = group_by, "column"
        n_groups = len({g for s in ds.splits.values() for g in s.groups if g is not None})
        if not n_groups and strict_groups:
            raise DataError(f"{path}: --group-by column '{group_by}' is empty in every row")
        ds.layout += f"; --group-by column '{group_by}': {n_groups} groups"
    elif group_by is not None:
        attach_pattern_groups(ds, group_by, strict=strict_groups)
    for pair, shared in crossing_groups(ds).items():
        if shared:
            a, _, b = pair.partition("/")
            ds.notes.append(f"{len(shared)} groups (--group-by '{group_by}') have images in both {a} and "
                            f"{b}, e.g. {', '.join(shared[:3])}: figures on {b} are optimistic")
    if exclude is not None:
        _exclude(ds, Path(exclude))
    return ds


def _exclude(ds: Dataset, table: Path) -> None:
    """Mark the images ``table`` lists (its ``exclude`` rows, or all) as left out of training."""
    if not table.is_file():
        raise DataError(f"{table}: no such file (--exclude takes a CSV such as imageclf review's)")
    keys, _ = listed_keys(table, only_marked="exclude")
    trainable = {item_key(name) for n, s in ds.splits.items() if n != "test" for name in s.item_names()}
    found = set(keys) & trainable
    if keys and not found:
        raise DataError(f"{table}: none of its {len(keys)} listed images is a training image of {ds.source} "
                        f"(first: {keys[0]!r})")
    ds.excluded = frozenset(found)
    ds.notes.append(f"--exclude {table}: {len(found)} images left out of training"
                    + (f" ({len(set(keys)) - len(found)} listed images are not training images here)"
                       if len(set(keys)) > len(found) else ""))


def stratified_split(
    labels: np.ndarray, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Indices (keep, held_out) with ``fraction`` of each class held out, reproducibly."""
    if not 0.0 < fraction < 1.0:
        raise DataError(f"validation fraction must be between 0 and 1, got {fraction}")
    rng = np.random.default_rng(seed)
    keep, held = [], []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        rng.shuffle(idx)
        n_held = max(1, int(round(len(idx) * fraction))) if len(idx) > 1 else 0
        held.append(idx[:n_held])
        keep.append(idx[n_held:])
    return np.sort(np.concatenate(keep)), np.sort(np.concatenate(held))


def training_splits(ds: Dataset, val_fraction: float = 0.1, seed: int = 0) -> tuple[Split, Split]:
    """The (train, val) pair to train on: the dataset's own, or a stratified split of it.

    With groups (``--group-by``) the carve keeps every group on one side
    (:func:`~imageclf.data.groups.grouped_holdout`). Images the dataset excludes
    (``--exclude``) are left out of the training side only, after the carve: validation
    keeps every image, so it is the same with and without exclusions.
    """
    if "train" in ds.splits and "val" in ds.splits:
        train, val = ds.splits["train"], ds.splits["val"]
    else:
        base = ds.splits.get("train") or ds.splits.get("all")
        if base is None:
            found = ", ".join(ds.splits)
            raise DataError(f"{ds.source}: no training data (found splits: {found}); a folder with only "
                            f"{found} is an evaluation set: evaluate a model on it, train on data with a "
                            "train split or class folders")
        if base.groups is not None:
            keep, held = grouped_holdout(base, val_fraction, seed)
        else:
            keep, held = stratified_split(base.labels, val_fraction, seed)
        train, val = base.subset(keep, "train"), base.subset(held, "val")
    if ds.excluded:
        kept = np.array([item_key(n) not in ds.excluded for n in train.item_names()], bool)
        train = train.subset(np.flatnonzero(kept), "train")
    counts = train.counts(ds.num_classes)
    if (counts == 0).any():
        empty = [c for c, n in zip(ds.classes, counts) if n == 0]
        raise DataError(f"{ds.source}: no training images left for classes {empty}")
    return train, val


def carve_of(recipe: dict) -> tuple[float, int]:
    """(val_fraction, seed) with which training carved validation data out of ``recipe``'s data."""
    seed = recipe.get("split_seed")
    return float(recipe.get("val_fraction", 0.1)), int(recipe.get("seed", 0) if seed is None else seed)


def evaluation_split(ds: Dataset, split: str | None = None, recipe: dict | None = None) -> Split:
    """The split to evaluate on: the one asked for, else test, else all, else val.

    ``val`` on data without a val split of its own is the hold-out training carved with
    ``recipe``'s val_fraction and seed, so a model is judged on exactly the images it
    never trained on.
    """
    if split is not None:
        if split == "val" and split not in ds.splits and recipe is not None:
            return training_splits(ds, *carve_of(recipe))[1]
        if split not in ds.splits:
            raise DataError(f"{ds.source}: no split {split!r} (found: {', '.join(ds.splits)})")
        return ds.splits[split]
    for name in ("test", "all", "val"):
        if name in ds.splits:
            return ds.splits[name]
    raise DataError(f"{ds.source}: nothing to evaluate on (found: {', '.join(ds.splits)})")
