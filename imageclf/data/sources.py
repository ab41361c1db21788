"""Finding a dataset: class folders, split folders, a CSV or an .npz, into labelled splits.

Nothing here decodes pixels (that is :mod:`imageclf.data.cache`); this module only lists items
and labels, checks that the layout makes sense and says clearly when it does not.
"""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from imageclf.core.errors import DataError
from imageclf.data.images import is_image_file

SPLIT_NAMES = ("train", "val", "test")

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


@dataclass
class Split:
    """One split: either file paths or in-memory uint8 images, with integer labels."""

    name: str
    labels: np.ndarray
    paths: list[str] | None = None
    arrays: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
        n = len(self.paths) if self.paths is not None else len(self.arrays)
        if n != len(self.labels):
            raise DataError(f"split {self.name!r}: {n} images but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: np.ndarray, name: str | None = None) -> Split:
        index = np.asarray(index, dtype=np.int64)
        return Split(
            name=name or self.name,
            labels=self.labels[index],
            paths=[self.paths[i] for i in index] if self.paths is not None else None,
            arrays=self.arrays[index] if self.arrays is not None else None,
        )

    def counts(self, num_classes: int) -> np.ndarray:
        return np.bincount(self.labels, minlength=num_classes)

    def item_name(self, i: int) -> str:
        return self.paths[i] if self.paths is not None else f"{self.name}[{i}]"


@dataclass
class Dataset:
    """Labelled splits found at ``source``; ``classes[i]`` names label ``i``."""

    source: str
    kind: str
    classes: list[str]
    splits: dict[str, Split] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def describe(self) -> str:
        parts = []
        for name, split in self.splits.items():
            counts = split.counts(self.num_classes)
            per_class = ", ".join(f"{c} {n}" for c, n in zip(self.classes, counts))
            parts.append(f"{name}: {len(split)} ({per_class})")
        return "; ".join(parts)

    def fingerprint(self) -> dict:
        """A cheap identity of the data: item names, file sizes and labels, hashed."""
        h = hashlib.sha256()
        h.update(json.dumps(self.classes).encode())
        for name in sorted(self.splits):
            split = self.splits[name]
            h.update(name.encode())
            h.update(split.labels.tobytes())
            if split.paths is not None:
                for p in split.paths:
                    size = Path(p).stat().st_size if Path(p).exists() else -1
                    h.update(f"{Path(p).name}:{size}".encode())
            else:
                h.update(hashlib.sha256(np.ascontiguousarray(split.arrays)).digest())
        return {
            "source": self.source,
            "kind": self.kind,
            "classes": self.classes,
            "split_sizes": {k: len(v) for k, v in self.splits.items()},
            "sha256": h.hexdigest(),
        }


def _class_dirs(root: Path) -> list[Path]:
    # Keras' flow_from_directory sorts class folder names with Python's plain sort.
    return sorted(
        (p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")),
        key=lambda p: p.name,
    )


def _list_class_folder(root: Path, classes: list[str], split_name: str) -> Split:
    paths: list[str] = []
    labels: list[int] = []
    for label, name in enumerate(classes):
        folder = root / name
        if not folder.is_dir():
            continue
        files = sorted(p for p in folder.rglob("*") if is_image_file(p))
        if not files:
            raise DataError(f"{folder}: class folder {name!r} has no images")
        paths += [str(p) for p in files]
        labels += [label] * len(files)
    if not paths:
        raise DataError(f"{root}: no images found in its class folders")
    return Split(split_name, np.array(labels), paths=paths)


def _open_folder(root: Path) -> Dataset:
    split_dirs = {s: root / s for s in SPLIT_NAMES if (root / s).is_dir()}
    if "train" in split_dirs:
        classes = [p.name for p in _class_dirs(split_dirs["train"])]
        for _name, d in split_dirs.items():
            extra = sorted(set(p.name for p in _class_dirs(d)) - set(classes))
            if extra:
                raise DataError(f"{d}: class folders {extra} are not in {split_dirs['train']}")
        _check_classes(root / "train", classes)
        splits = {n: _list_class_folder(d, classes, n) for n, d in split_dirs.items()}
        return Dataset(str(root), "split-folders", classes, splits)
    classes = [p.name for p in _class_dirs(root)]
    _check_classes(root, classes)
    return Dataset(str(root), "class-folders", classes, {"all": _list_class_folder(root, classes, "all")})


def _check_classes(root: Path, classes: list[str]) -> None:
    if not classes:
        loose = [p for p in root.iterdir() if is_image_file(p)]
        hint = " (images lie loose in it: put each class in its own subfolder)" if loose else ""
        raise DataError(f"{root}: no class subfolders found{hint}")
    if len(classes) < 2:
        raise DataError(f"{root}: only one class ({classes[0]!r}); a classifier needs at least two")


def _open_csv(path: Path) -> Dataset:
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        fields = [c.strip().lower() for c in reader.fieldnames or []]
        if "path" not in fields or "label" not in fields:
            raise DataError(f"{path}: a CSV needs the columns 'path' and 'label' (found {fields})")
        rows = [{k.strip().lower(): (v or "").strip() for k, v in r.items() if k} for r in reader]
    if not rows:
        raise DataError(f"{path}: the CSV has no rows")
    base = path.parent
    for lineno, row in enumerate(rows, start=2):
        file = (base / row["path"]).resolve()
        if not row["path"] or not file.is_file():
            raise DataError(f"{path}, line {lineno}: image {row['path']!r} not found")
        if not row["label"]:
            raise DataError(f"{path}, line {lineno}: empty label")
        row["file"] = str(file)
    classes = sorted({r["label"] for r in rows})
    if len(classes) < 2:
        raise DataError(f"{path}: only one class ({classes[0]!r}); a classifier needs at least two")
    index = {c: i for i, c in enumerate(classes)}
    has_split = "split" in fields
    splits: dict[str, Split] = {}
    for name in (SPLIT_NAMES if has_split else ("all",)):
        chosen = [r for r in rows if not has_split or r["split"] == name]
        if chosen:
            splits[name] = Split(name, np.array([index[r["label"]] for r in chosen]),
                                 paths=[r["file"] for r in chosen])
    if has_split:
        unknown = sorted({r["split"] for r in rows} - set(SPLIT_NAMES))
        if unknown:
            raise DataError(f"{path}: unknown split names {unknown} (use train, val, test)")
    return Dataset(str(path), "csv", classes, splits)


def _open_npz(path: Path, class_names: list[str] | None) -> Dataset:
    try:
        npz = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable .npz ({exc})") from None
    splits: dict[str, Split] = {}
    for name in SPLIT_NAMES:
        if f"{name}_images" in npz.files:
            if f"{name}_labels" not in npz.files:
                raise DataError(f"{path}: has {name}_images but no {name}_labels")
            images = npz[f"{name}_images"]
            if images.ndim not in (3, 4):
                raise DataError(f"{path}: {name}_images has shape {images.shape}, not (N, H, W[, C])")
            splits[name] = Split(name, npz[f"{name}_labels"].reshape(-1), arrays=images)
    if not splits:
        raise DataError(f"{path}: no '<split>_images' arrays (MedMNIST layout: train_images, ...)")
    n_labels = int(max(s.labels.max() for s in splits.values())) + 1
    if class_names is None and "class_names" in npz.files:
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
    return Dataset(str(path), "npz", list(class_names), splits)


def open_dataset(source: str | Path, class_names: list[str] | None = None) -> Dataset:
    """List a dataset's splits and labels.

    ``source`` is a folder of class subfolders, a folder with ``train/`` (``val/``,
    ``test/``) split folders, a CSV with ``path,label`` (and optional ``split``) columns,
    or an ``.npz`` in MedMNIST layout. ``class_names`` names the integer labels of an npz.
    """
    path = Path(source).expanduser()
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    if path.is_dir():
        return _open_folder(path)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return _open_csv(path)
    if suffix == ".npz":
        return _open_npz(path, class_names)
    raise DataError(f"{path}: not a folder, .csv or .npz dataset")


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
    """The (train, val) pair to train on: the dataset's own, or a stratified split of it."""
    if "train" in ds.splits and "val" in ds.splits:
        return ds.splits["train"], ds.splits["val"]
    base = ds.splits.get("train") or ds.splits.get("all")
    if base is None:
        raise DataError(f"{ds.source}: no training data (found splits: {', '.join(ds.splits)})")
    keep, held = stratified_split(base.labels, val_fraction, seed)
    train, val = base.subset(keep, "train"), base.subset(held, "val")
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
