"""The same images as an .npz, as PNG class folders and as a CSV give the same classes and model."""

import csv
from pathlib import Path

import numpy as np
import pytest

import imageclf
from imageclf.data.cache import cache_split
from imageclf.data.hashing import pixel_hashes
from imageclf.data.images import Preprocessing
from imageclf.data.sources import open_dataset, training_splits
from imageclf.data.synthetic import write_images

SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "pneumoniamnist_trainval.npz"


@pytest.fixture(scope="module")
def three_layouts(tmp_path_factory):
    root = tmp_path_factory.mktemp("layouts")
    full = np.load(SAMPLE)
    arrays = {}
    for split, n in (("train", 400), ("val", 120)):
        arrays[f"{split}_images"] = full[f"{split}_images"][:n]
        arrays[f"{split}_labels"] = full[f"{split}_labels"][:n]
    npz = root / "pneumoniamnist_slice.npz"
    np.savez(npz, **arrays)
    rows = []
    for split in ("train", "val"):
        paths = write_images(root / "folders" / split, arrays[f"{split}_images"],
                             arrays[f"{split}_labels"].ravel(), ["normal", "pneumonia"])
        rows += [(p, label, split) for p, label in zip(paths, arrays[f"{split}_labels"].ravel())]
    table = root / "folders" / "labels.csv"
    with table.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label", "split"])
        for p, label, split in rows:
            writer.writerow([p.relative_to(table.parent), ["normal", "pneumonia"][label], split])
    return {"npz": npz, "folders": root / "folders", "csv": table}


def test_same_class_map_and_same_pixels(three_layouts):
    pre = Preprocessing(size=(28, 28), channels=1)
    seen = {}
    for kind, source in three_layouts.items():
        ds = open_dataset(source)
        assert ds.classes == ["normal", "pneumonia"], kind
        train, _ = training_splits(ds)
        cached = cache_split(train, pre, storage="memory")
        # PNG is lossless: each layout decodes to exactly the same (image, label) pairs.
        seen[kind] = sorted(zip(pixel_hashes(cached.images).tolist(), cached.labels.tolist()))
    assert seen["npz"] == seen["folders"] == seen["csv"]


def test_comparable_auc(three_layouts, tmp_path):
    auc = {}
    for kind, source in three_layouts.items():
        model = imageclf.train(source, "mnist-basic", tmp_path / kind, device="cpu", epochs=2)
        auc[kind] = model.config.metrics["val_auc"]
    assert min(auc.values()) > 0.85
    assert max(auc.values()) - min(auc.values()) < 0.06
