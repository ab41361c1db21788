"""Stratified, reproducible K-fold cross-validation."""

from __future__ import annotations

import json

import numpy as np
import pytest

import imageclf
from imageclf.cli import main
from imageclf.core.errors import ImageclfError
from imageclf.training.folds import cross_validate, fold_assignment
from imageclf.training.options import TrainOptions

# steps_per_epoch 'none' (a None override is ignored): whole passes over the tiny data.
FAST = dict(img_size=32, channels=1, epochs=1, steps_per_epoch="none", batch_size=32)
CPU = TrainOptions(device="cpu")


def test_folds_are_stratified_and_reproducible():
    labels = np.array([0] * 30 + [1] * 71 + [2] * 9)
    a = fold_assignment(labels, 3, seed=0)
    assert np.array_equal(a, fold_assignment(labels, 3, seed=0))
    assert not np.array_equal(a, fold_assignment(labels, 3, seed=1))
    sizes = np.bincount(a)
    assert sizes.max() - sizes.min() <= 1
    for c in range(3):
        per_fold = np.bincount(a[labels == c], minlength=3)
        assert per_fold.max() - per_fold.min() <= 1


def test_cross_validation_writes_folds_and_summary(tmp_path, tiny_npz, capsys):
    out = tmp_path / "cv"
    cv = cross_validate(tiny_npz, "catsdogs-2conv", out, folds=2, options=CPU, **FAST)
    saved = json.loads((out / "cv.json").read_text())
    assert saved["complete"] and saved["k"] == 2 and len(saved["folds"]) == 2
    accs = [f["val_accuracy"] for f in saved["folds"]]
    assert saved["mean"]["val_accuracy"] == pytest.approx(np.mean(accs))
    assert saved["std"]["val_accuracy"] == pytest.approx(np.std(accs, ddof=1))
    # The pool is train + val (96 + 32), never the 32 test images; each image validated once.
    assert sum(f["val_images"] for f in saved["folds"]) == 128
    assert all(f["train_images"] + f["val_images"] == 128 for f in saved["folds"])
    assert "±" in cv.summary()
    model = imageclf.load(out / "fold-2")
    assert model.classes == ["0", "1"]
    # Through the CLI, --resume keeps finished folds instead of training them again.
    mtime = (out / "fold-1" / "model.safetensors").stat().st_mtime_ns
    main(["train", str(tiny_npz), "--recipe", "catsdogs-2conv", "--folds", "2", "--out", str(out),
          "--img-size", "32", "--channels", "1", "--epochs", "1", "--batch-size", "16",
          "--set", "steps_per_epoch=none", "--device", "cpu", "-q", "--resume"])
    assert "2-fold cross-validation" in capsys.readouterr().out
    assert (out / "fold-1" / "model.safetensors").stat().st_mtime_ns == mtime
    with pytest.raises(ImageclfError, match="already exists"):
        cross_validate(tiny_npz, "catsdogs-2conv", out, folds=2, options=CPU, **FAST)
    with pytest.raises(ImageclfError, match="at least 2"):
        cross_validate(tiny_npz, "catsdogs-2conv", tmp_path / "x", folds=1)


def test_folds_keep_groups_whole_and_leave_exclusions_out_of_training(tmp_path, monkeypatch):
    from pathlib import Path

    from imageclf.data import synthetic
    from imageclf.training import folds as folds_module
    from imageclf.training.loop import FitResult

    root = synthetic.make_grouped_folders(tmp_path / "d", groups=20, per_group=3)
    victim = sorted((root / "NORMAL").iterdir())[0]
    (tmp_path / "ex.csv").write_text(f"path\n{victim}\n")
    seen = []

    def fit(data, recipe, out, options=None, **_):
        seen.append(data)
        figures = {"val_loss": 0.5, "val_accuracy": 0.5, "val_auc": 0.5, "best_epoch": 1}
        return FitResult(Path(out), 1, figures, "cpu")

    monkeypatch.setattr(folds_module, "fit", fit)
    options = TrainOptions(device="cpu", group_by=r"person(\d+)_", exclude=str(tmp_path / "ex.csv"))
    cv = cross_validate(root, "mnist-basic", tmp_path / "cv", folds=4, options=options)
    assert json.loads((cv.path / "cv.json").read_text())["group_by"] == r"person(\d+)_"
    validated = []
    for ds in seen:
        train, val = ds.splits["train"], ds.splits["val"]
        assert not set(train.groups) & set(val.groups)
        assert str(victim) not in train.paths
        validated += val.paths
    assert sorted(validated) == sorted(str(p) for p in root.rglob("*.png"))  # each image validated once
