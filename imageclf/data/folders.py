"""Folder layouts: one subfolder per class, or split folders (``train/``, ``training_set/``,
``test/``, ...) each holding class subfolders, in any subset.

Split folders are known by the names people use (:data:`~imageclf.data.dataset.SPLIT_ALIASES`,
any case). A folder holding only ``test/`` (or only ``val/``) is an evaluation set. Folders
that hold no images of their own, only the same subfolders, are split folders under a
name imageclf does not know: refused, with what to do, instead of being read as classes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from imageclf.core.errors import DataError
from imageclf.data.dataset import SPLIT_NAMES, Dataset, Split, known_split_names, split_alias
from imageclf.data.images import image_files, is_image_file


def visible_dirs(root: Path) -> list[Path]:
    # Keras' flow_from_directory sorts class folder names with Python's plain sort.
    return sorted((p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")),
                  key=lambda p: p.name)


def _holds_images(folder: Path) -> bool:
    return any(is_image_file(p) for p in folder.iterdir())


def _is_split_folder(folder: Path) -> bool:
    """Class subfolders and no images of its own."""
    return bool(visible_dirs(folder)) and not _holds_images(folder)


def _list_class_folder(root: Path, classes: list[str], split_name: str) -> Split:
    paths: list[str] = []
    labels: list[int] = []
    for label, name in enumerate(classes):
        folder = root / name
        if not folder.is_dir():
            continue
        files = image_files(folder)
        if not files:
            raise DataError(f"{folder}: class folder {name!r} has no images")
        paths += files
        labels += [label] * len(files)
    if not paths:
        raise DataError(f"{root}: no images found in its class folders")
    return Split(split_name, np.array(labels), paths=paths)


def check_classes(root: Path, classes: list[str]) -> None:
    if not classes:
        loose = [p for p in root.iterdir() if is_image_file(p)]
        hint = " (images lie loose in it: put each class in its own subfolder)" if loose else ""
        raise DataError(f"{root}: no class subfolders found{hint}")
    if len(classes) < 2:
        raise DataError(f"{root}: only one class ({classes[0]!r}); a classifier needs at least two")


def _refuse_unnamed_splits(root: Path, dirs: list[Path]) -> None:
    """Class folders that hold only the same folders are split folders with unknown names."""
    if not dirs or any(not _is_split_folder(d) for d in dirs):
        return
    inner = [{p.name for p in visible_dirs(d)} for d in dirs]
    common = sorted(set.intersection(*inner))
    if len(common) < 2:
        return  # e.g. NORMAL/patient1/, PNEUMONIA/patient7/: nested class folders, read whole
    names = ", ".join(f"{d.name}/" for d in dirs)
    raise DataError(
        f"{root}: {names} hold no images, only the folders {common}: split folders whose names "
        f"imageclf does not know, not classes. Rename them after their splits ({known_split_names()}; "
        f"any case), or pass one of them as DATA, e.g. {dirs[0]}")


def open_folder(root: Path) -> Dataset:
    """Class folders, or split folders in any subset (see the module docstring)."""
    dirs = visible_dirs(root)
    split_dirs: dict[str, Path] = {}
    for d in dirs:
        split = split_alias(d.name)
        if split is None or not _is_split_folder(d):
            continue
        if split in split_dirs:
            raise DataError(f"{root}: both {split_dirs[split].name}/ and {d.name}/ name the {split} split; "
                            "keep one")
        split_dirs[split] = d
    if split_dirs:
        split_dirs = {s: split_dirs[s] for s in SPLIT_NAMES if s in split_dirs}
        return _open_split_folders(root, split_dirs, [d for d in dirs if d not in split_dirs.values()])
    _refuse_unnamed_splits(root, dirs)
    classes = [p.name for p in dirs]
    check_classes(root, classes)
    layout = (f"class folders: {len(classes)} subfolders of {root.name or root}/, one per class "
              "(no split folders, so validation is carved out of them)")
    return Dataset(str(root), "class-folders", classes, {"all": _list_class_folder(root, classes, "all")},
                   layout=layout)


def _open_split_folders(root: Path, split_dirs: dict[str, Path], others: list[Path]) -> Dataset:
    if "train" in split_dirs:
        classes = [p.name for p in visible_dirs(split_dirs["train"])]
        for d in split_dirs.values():
            extra = sorted({p.name for p in visible_dirs(d)} - set(classes))
            if extra:
                raise DataError(f"{d}: class folders {extra} are not in {split_dirs['train']}")
        check_classes(split_dirs["train"], classes)
    else:  # an evaluation set: the classes of all its splits
        classes = sorted({p.name for d in split_dirs.values() for p in visible_dirs(d)})
        check_classes(next(iter(split_dirs.values())), classes)
    splits = {n: _list_class_folder(d, classes, n) for n, d in split_dirs.items()}
    mapping = ", ".join(f"{d.name}/ -> {s}" for s, d in split_dirs.items())
    layout = f"split folders: {mapping}, each with class subfolders"
    if "train" not in split_dirs:
        layout += " (no training split: an evaluation set)"
    elif "val" not in split_dirs:
        layout += " (no validation split: training carves one out of train)"
    if others:
        layout += f"; other folders ignored: {', '.join(d.name + '/' for d in others)}"
    return Dataset(str(root), "split-folders", classes, splits, layout=layout)
