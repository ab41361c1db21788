"""Optuna tuning: trials, pruning by the time budget, and a best recipe one can train from."""

from __future__ import annotations

import json

import pytest

from imageclf.cli import main
from imageclf.core.errors import ConfigError
from imageclf.data.transforms import Augment
from imageclf.recipes.schema import get_recipe
from imageclf.training.options import TrainOptions
from imageclf.training.tune import scale_augment, tune

BASE = dict(img_size=32, channels=1, epochs=2, steps_per_epoch="none", batch_size=32)
CPU = TrainOptions(device="cpu")


def test_scale_augment():
    aug = Augment(rotation=10, zoom=0.2, brightness=(0.8, 1.2), horizontal_flip=True, erasing=0.6)
    half = scale_augment(aug, 0.5)
    assert half.rotation == 5 and half.zoom == pytest.approx(0.1) and half.horizontal_flip
    assert half.brightness == pytest.approx((0.9, 1.1))
    assert scale_augment(aug, 3.0).erasing == 1.0
    assert not scale_augment(Augment(rotation=10), 0.0).active


def test_tune_writes_a_trainable_best_recipe(tmp_path, tiny_npz):
    out = tmp_path / "tune"
    result = tune(tiny_npz, "catsdogs-2conv", out, trials=3, sizes=[28, 32], batch_sizes=[16, 32],
                  options=CPU, **BASE)
    saved = json.loads((out / "tune.json").read_text())
    assert len(saved["trials"]) == 3 and saved["metric"] == "val_auc"
    # The first trial is the recipe as written.
    assert saved["trials"][0]["params"]["lr"] == get_recipe("catsdogs-2conv").lr
    best = get_recipe(str(result.best_recipe))
    assert best.img_size in (28, 32) and best.batch_size in (16, 32)
    assert best.lr == pytest.approx(result.best_params["lr"])
    assert result.best_value == max(t["value"] for t in saved["trials"] if t["state"] == "COMPLETE")


def test_time_budget_stops_trials(tmp_path, tiny_npz):
    with pytest.raises(ConfigError, match="no trial finished"):
        tune(tiny_npz, "catsdogs-2conv", tmp_path / "t", trials=5, time_budget=0.01, options=CPU, **BASE)
    saved = json.loads((tmp_path / "t" / "tune.json").read_text())
    assert [t["state"] for t in saved["trials"]] == ["PRUNED"]


def test_cli_tune(tmp_path, tiny_npz, capsys):
    out = tmp_path / "cli"
    main(["tune", str(tiny_npz), "--recipe", "catsdogs-2conv", "--trials", "1", "--out", str(out),
          "--epochs", "1", "--sizes", "32", "--batch-sizes", "32", "--device", "cpu", "-q",
          "--set", "channels=1", "--set", "steps_per_epoch=none"])
    text = capsys.readouterr().out
    assert "1 trials (1 complete" in text and str(out / "best.yaml") in text
    assert (out / "best.yaml").is_file()
