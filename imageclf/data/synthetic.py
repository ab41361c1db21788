"""Small synthetic datasets for tests and examples: learnable in seconds, written in every layout.

Class ``k`` of ``synthetic_images`` is a bright disc of a class-specific size at a random place
on a noisy background: flips, shifts and rotations keep the class, and a tiny CNN separates
the classes within a few dozen steps.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image


def synthetic_images(n: int, size: int = 32, channels: int = 1, num_classes: int = 2,
                     seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (n, size, size) or (n, size, size, 3), labels int64 (n,)), classes balanced."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % num_classes
    rng.shuffle(labels)
    yy, xx = np.mgrid[0:size, 0:size] / size
    images = rng.normal(60, 20, (n, size, size))
    for i, k in enumerate(labels):
        radius = 0.1 + 0.22 * k / max(1, num_classes - 1)
        cy, cx = rng.uniform(0.3, 0.7, 2)
        disc = ((yy - cy) ** 2 + (xx - cx) ** 2) < radius**2
        images[i][disc] += 140
    images = np.clip(images, 0, 255).astype(np.uint8)
    if channels == 3:
        images = np.stack([images, images // 2 + 40, 255 - images], -1)
    return images, labels.astype(np.int64)


def make_npz(path: str | Path, n_train: int = 64, n_val: int = 16, n_test: int = 0, size: int = 28,
             num_classes: int = 2, seed: int = 0, label_shape_2d: bool = True) -> Path:
    """An .npz in MedMNIST layout (labels shaped (N, 1) like MedMNIST, or (N,))."""
    path = Path(path)
    arrays = {}
    for i, (split, n) in enumerate((("train", n_train), ("val", n_val), ("test", n_test))):
        if n:
            images, labels = synthetic_images(n, size, 1, num_classes, seed + i)
            arrays[f"{split}_images"] = images
            arrays[f"{split}_labels"] = labels.reshape(-1, 1) if label_shape_2d else labels
    np.savez_compressed(path, **arrays)
    return path


def write_images(folder: Path, images: np.ndarray, labels: np.ndarray, class_names: list[str],
                 fmt: str = "png", start: int = 0) -> list[Path]:
    """Write images as ``folder/<class>/<index>.<fmt>``; returns the paths in order."""
    paths = []
    for i, (img, k) in enumerate(zip(images, labels)):
        out = folder / class_names[k] / f"{start + i:05d}.{fmt}"
        out.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(out)
        paths.append(out)
    for name in class_names:
        (folder / name).mkdir(parents=True, exist_ok=True)
    return paths


def make_class_folders(root: str | Path, n: int = 48, size: int = 32, channels: int = 1,
                       class_names: tuple[str, ...] = ("NORMAL", "PNEUMONIA"), fmt: str = "png",
                       splits: tuple[str, ...] | None = None, seed: int = 0) -> Path:
    """Class folders (``root/<class>/``) or split folders (``root/<split>/<class>/``)."""
    root = Path(root)
    for i, split in enumerate(splits or ("",)):
        images, labels = synthetic_images(n, size, channels, len(class_names), seed + i)
        write_images(root / split if split else root, images, labels, list(class_names), fmt)
    return root


def make_csv(path: str | Path, n: int = 48, size: int = 32, class_names: tuple[str, ...] = ("cat", "dog"),
             with_split: bool = False, seed: int = 0) -> Path:
    """A CSV with ``path,label`` (and ``split``) columns; images in ``<csv folder>/images/``."""
    path = Path(path)
    images, labels = synthetic_images(n, size, 1, len(class_names), seed)
    paths = write_images(path.parent / "images", images, labels, list(class_names))
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label"] + (["split"] if with_split else []))
        for i, (p, k) in enumerate(zip(paths, labels)):
            split = ["train" if i % 4 else "val"] if with_split else []
            writer.writerow([str(p.relative_to(path.parent)), class_names[k], *split])
    return path


def make_grouped_folders(root: str | Path, groups: int = 12, per_group: int = 3, size: int = 28,
                         class_names: tuple[str, ...] = ("NORMAL", "PNEUMONIA"), prefix: str = "person",
                         start: int = 0, seed: int = 0) -> Path:
    """Class folders whose files are named like the Kaggle chest X-rays, ``person12_3.png``:
    ``per_group`` images of each of ``groups`` subjects (numbered from ``start``), subject
    ``g`` all of class ``g % len(class_names)``."""
    root = Path(root)
    k = len(class_names)
    for name in class_names:
        (root / name).mkdir(parents=True, exist_ok=True)
    for g in range(groups):
        subject = start + g
        label = subject % k
        for i in range(per_group):
            # One image of each class (labels are a permutation of 0..k-1); keep this class's.
            images, labels = synthetic_images(k, size, 1, k, seed * 100_003 + subject * 101 + i)
            img = images[int(np.flatnonzero(labels == label)[0])]
            Image.fromarray(img).save(root / class_names[label] / f"{prefix}{subject}_{i}.png")
    return root
