"""Tables and arrays: a CSV of paths and labels, an .npz in MedMNIST or Keras layout, and the
path lists (``--exclude``, ``--groups``) that name a dataset's images.

A CSV's columns are found under the names people write (``path``/``file``/``filename``/
``image``, ``label``/``class``/``target``, any case) or named with ``--path-column`` /
``--label-column``; its paths are relative to the CSV's folder.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np

from imageclf.core.errors import DataError
from imageclf.data.dataset import (
    SPLIT_NAMES,
    Dataset,
    Split,
    is_array_name,
    item_key,
    known_split_names,
    split_alias,
)

# Column names, in the order they are preferred when a table has several.
PATH_COLUMNS = ("path", "filepath", "file_path", "image_path", "file", "filename", "file_name",
                "image", "image_name", "img")
LABEL_COLUMNS = ("label", "labels", "class", "class_name", "target", "category")
SPLIT_COLUMNS = ("split", "subset")

# MedMNIST and friends store no class names; these are the data sets' documented labels,
# matched on the start of the .npz file's name.
KNOWN_NPZ_CLASSES: dict[str, list[str]] = {
    "pneumoniamnist": ["normal", "pneumonia"],
    "fashion_mnist": ["tshirt_top", "trouser", "pullover", "dress", "coat",
                      "sandal", "shirt", "sneaker", "bag", "ankle_boot"],
    "fashion-mnist": ["tshirt_top", "trouser", "pullover", "dress", "coat",
                      "sandal", "shirt", "sneaker", "bag", "ankle_boot"],
    "mnist": [str(i) for i in range(10)],
}
# Keras' array names (keras.datasets.*.load_data saves x_train, y_train, x_test, y_test).
KERAS_SPLITS = {"train": ("train",), "val": ("val", "valid", "validation"), "test": ("test",)}
TRUE_WORDS = {"1", "true", "yes", "y", "x", "exclude"}


class Table:
    """A CSV read whole: its header as written, and rows keyed by lower-case column name."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            with path.open(newline="", encoding="utf-8-sig") as f:
                reader = csv.DictReader(f)
                self.header = [c.strip() for c in reader.fieldnames or [] if c is not None]
                self.rows = [{k.strip().lower(): (v or "").strip() for k, v in r.items() if k}
                             for r in reader]
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise DataError(f"{path}: not a readable CSV ({exc})") from None
        self.fields = [c.lower() for c in self.header]

    def column(self, candidates: tuple[str, ...], given: str | None, what: str, flag: str,
               required: bool = True) -> str | None:
        """The lower-case name of the column ``given`` names (any case), else the first of
        ``candidates`` present; a missing one is an error that lists the columns."""
        if given is not None:
            if given.strip().lower() not in self.fields:
                raise DataError(f"{self.path}: no column {given!r} ({flag}); its columns are {self.header}")
            return given.strip().lower()
        found = next((c for c in candidates if c in self.fields), None)
        if found is None and required:
            raise DataError(f"{self.path}: no {what} column (looked for {', '.join(candidates)}, any case; "
                            f"its columns are {self.header}); name it with {flag}")
        return found

    def header_name(self, field: str) -> str:
        return self.header[self.fields.index(field)]


def resolve_listed(base: Path, name: str) -> str:
    """The key (:func:`~imageclf.data.dataset.item_key`) of a path a table lists: relative to
    the table's folder, else to the working directory; an array item's name as it is."""
    if os.path.isabs(name) or is_array_name(name):
        return item_key(name)
    beside = base / name
    return item_key(str(beside) if beside.exists() or not Path(name).exists() else name)


def open_csv(path: Path, path_column: str | None = None, label_column: str | None = None,
             group_column: str | None = None) -> Dataset:
    """A CSV of image paths and labels (and an optional split column); ``group_column``
    gives each image's group."""
    table = Table(path)
    pcol = table.column(PATH_COLUMNS, path_column, "path", "--path-column")
    lcol = table.column(LABEL_COLUMNS, label_column, "label", "--label-column")
    scol = table.column(SPLIT_COLUMNS, None, "split", "", required=False)
    rows = table.rows
    if not rows:
        raise DataError(f"{path}: the CSV has no rows")
    base = path.parent
    files = []
    for lineno, row in enumerate(rows, start=2):
        file = (base / row[pcol]).resolve()
        if not row[pcol] or not file.is_file():
            raise DataError(f"{path}, line {lineno}: image {row[pcol]!r} not found")
        if not row[lcol]:
            raise DataError(f"{path}, line {lineno}: empty label")
        files.append(str(file))
    classes = sorted({r[lcol] for r in rows})
    if len(classes) < 2:
        raise DataError(f"{path}: only one class ({classes[0]!r}); a classifier needs at least two")
    index = {c: i for i, c in enumerate(classes)}
    if scol is not None:
        unknown = sorted({r[scol] for r in rows if split_alias(r[scol]) is None})
        if unknown:
            raise DataError(f"{path}: unknown split names {unknown} in column {table.header_name(scol)!r} "
                            f"(use {known_split_names()})")
        which = [split_alias(r[scol]) for r in rows]
    else:
        which = ["all"] * len(rows)
    splits: dict[str, Split] = {}
    for name in (SPLIT_NAMES if scol is not None else ("all",)):
        chosen = [i for i, w in enumerate(which) if w == name]
        if chosen:
            groups = (np.array([rows[i][group_column] or None for i in chosen], dtype=object)
                      if group_column else None)
            splits[name] = Split(name, np.array([index[rows[i][lcol]] for i in chosen]),
                                 paths=[files[i] for i in chosen], groups=groups)
    named = [f"{what} column {table.header_name(c)!r}" for what, c in (("path", pcol), ("label", lcol),
                                                                        ("split", scol)) if c]
    how = ("as named on the command line" if path_column or label_column else
           "found under the names people use; --path-column / --label-column name others")
    layout = f"CSV: {', '.join(named)} ({how}); paths relative to the CSV's folder"
    return Dataset(str(path), "csv", classes, splits, layout=layout)


def csv_columns(path: Path) -> list[str]:
    """A CSV's lower-case column names (none when it cannot be read)."""
    try:
        return Table(path).fields
    except DataError:
        return []


def _labels(array: np.ndarray) -> np.ndarray:
    """Integer labels from (N,), (N, 1) or one-hot (N, K) arrays."""
    if array.ndim == 2 and array.shape[1] > 1 and set(np.unique(array).tolist()) <= {0, 1} \
            and (array.sum(1) == 1).all():
        return array.argmax(1)
    return array.reshape(-1)


def open_npz(path: Path, class_names: list[str] | None) -> Dataset:
    """MedMNIST's ``<split>_images`` / ``<split>_labels`` or Keras' ``x_<split>`` / ``y_<split>``."""
    try:
        npz = np.load(path, allow_pickle=False)
        files = list(npz.files)
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable .npz ({exc})") from None
    pairs: dict[str, tuple[str, str]] = {}
    for name in SPLIT_NAMES:
        if f"{name}_images" in files:
            pairs[name] = (f"{name}_images", f"{name}_labels")
    layout = "MedMNIST"
    if not pairs:
        layout = "Keras"
        for name, aliases in KERAS_SPLITS.items():
            found = [a for a in aliases if f"x_{a}" in files]
            if len(found) > 1:
                raise DataError(f"{path}: both {', '.join('x_' + a for a in found)} name the {name} split")
            if found:
                pairs[name] = (f"x_{found[0]}", f"y_{found[0]}")
    if not pairs:
        raise DataError(f"{path}: no image arrays found (it holds {files}); an .npz needs MedMNIST's "
                        "train_images/train_labels (val_, test_) or Keras' x_train/y_train (x_val, x_test)")
    splits: dict[str, Split] = {}
    for name, (xs, ys) in pairs.items():
        if ys not in files:
            raise DataError(f"{path}: has {xs} but no {ys}")
        images = npz[xs]
        if images.ndim not in (3, 4):
            raise DataError(f"{path}: {xs} has shape {images.shape}, not (N, H, W[, C])")
        splits[name] = Split(name, _labels(npz[ys]), arrays=images)
    n_labels = int(max(s.labels.max() for s in splits.values())) + 1
    if class_names is None and "class_names" in files:
        class_names = [str(c) for c in npz["class_names"]]
    if class_names is None:
        stem = path.stem.lower()
        for prefix, names in KNOWN_NPZ_CLASSES.items():
            if stem.startswith(prefix) and len(names) >= n_labels:
                class_names = names
                break
    if class_names is None:
        class_names = [str(i) for i in range(n_labels)]
    if len(class_names) < n_labels:
        raise DataError(f"{path}: labels go up to {n_labels - 1} but only {len(class_names)} class names")
    if len(class_names) < 2:
        raise DataError(f"{path}: only one class; a classifier needs at least two")
    arrays = ", ".join(f"{x}/{y} -> {s}" for s, (x, y) in pairs.items())
    return Dataset(str(path), "npz", list(class_names), splits, layout=f"npz, {layout} layout: {arrays}")


def listed_keys(path: Path, only_marked: str | None = None) -> tuple[list[str], list[int]]:
    """The item keys a CSV lists in its path column, with their line numbers.

    ``only_marked``: a column that, when the table has it, keeps only the rows where it is
    true (1, true, yes, y, x); e.g. ``exclude`` in a review table.
    """
    table = Table(Path(path))
    pcol = table.column(PATH_COLUMNS, None, "path", "a path column")
    keys, lines = [], []
    marked = only_marked if only_marked and only_marked in table.fields else None
    for lineno, row in enumerate(table.rows, start=2):
        if not row[pcol] or (marked and row[marked].lower() not in TRUE_WORDS):
            continue
        keys.append(resolve_listed(Path(path).parent, row[pcol]))
        lines.append(lineno)
    return keys, lines
