"""Threshold targets, temperature scaling, storing them in the model file, and refusing test data."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

import imageclf
from imageclf.cli import main
from imageclf.core.errors import ConfigError, DataError, ModelFileError
from imageclf.evaluation.calibrate import (
    calibrate,
    choose_threshold,
    fit_temperature,
    parse_target,
    temperature_nll,
    threshold_rates,
)
from imageclf.evaluation.report.stats import operating_point
from imageclf.modelfile.artifact import read_config, update_config


@pytest.fixture
def scores():
    rng = np.random.default_rng(5)
    y = np.r_[np.ones(60, int), np.zeros(40, int)]
    p = np.clip(np.r_[rng.normal(0.65, 0.2, 60), rng.normal(0.35, 0.2, 40)], 0, 1).astype(np.float32)
    return y, p


@pytest.mark.parametrize("target", [0.95, 0.9, 0.8, 0.5])
def test_sensitivity_target_is_met_with_best_specificity(scores, target):
    y, p = scores
    t = choose_threshold(y, p, f"sensitivity={target}")
    op = operating_point(y, p, t)
    assert op["sensitivity"] >= target
    # Any higher threshold that still meets the target would be one with no better specificity:
    # the next distinct positive score above t drops sensitivity below the target.
    higher = np.sort(p[y == 1][p[y == 1] > t])
    if len(higher):
        above = np.nextafter(higher[0], np.float32(2))
        assert operating_point(y, p, above)["sensitivity"] < target
    # Stored as JSON and read back as float32 scores, the decisions do not change.
    assert operating_point(y, p.astype(np.float64), json.loads(json.dumps(t)))["tp"] == op["tp"]


def test_specificity_youden_and_f1_by_brute_force(scores):
    y, p = scores
    grid = np.r_[0.0, np.unique(p), 1.0]
    ops = [operating_point(y, p, t) for t in grid]
    t = choose_threshold(y, p, "specificity=0.9")
    op = operating_point(y, p, t)
    assert op["specificity"] >= 0.9
    assert op["sensitivity"] == max(o["sensitivity"] for o in ops if o["specificity"] >= 0.9)
    best_j = max(o["sensitivity"] + o["specificity"] for o in ops)
    op = operating_point(y, p, choose_threshold(y, p, "youden"))
    assert op["sensitivity"] + op["specificity"] == pytest.approx(best_j)
    op = operating_point(y, p, choose_threshold(y, p, "f1"))
    assert op["f1"] == pytest.approx(max(o["f1"] for o in ops))


def test_threshold_rates_agree_with_operating_point(scores):
    y, p = scores
    t = np.array([0.2, 0.5, 0.77])
    r = threshold_rates(y, p, t)
    for i, ti in enumerate(t):
        op = operating_point(y, p, ti)
        assert r["sensitivity"][i] == pytest.approx(op["sensitivity"])
        assert r["specificity"][i] == pytest.approx(op["specificity"])


@pytest.mark.parametrize("bad", ["sensitivity", "sensitivity=1.5", "youden=1", "recall=0.9"])
def test_bad_targets(bad):
    with pytest.raises(ConfigError):
        parse_target(bad)


def test_temperature_scaling_reduces_nll():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 400)
    clean = rng.normal(0, 1, (400, 3))
    clean[np.arange(400), y] += 1.0
    logits = (clean * 4.0)[None].astype(np.float32)          # overconfident by a factor of 4
    t = fit_temperature(logits, y)
    assert 2.5 < t < 6.0
    assert temperature_nll(logits, y, t) < temperature_nll(logits, y, 1.0) - 0.1
    binary = (clean[:, :1] * 3.0)[None].astype(np.float32)
    yb = (clean[:, 0] + rng.normal(0, 1, 400) > 0).astype(int)
    tb = fit_temperature(binary, yb)
    assert temperature_nll(binary, yb, tb) < temperature_nll(binary, yb, 1.0)


@pytest.fixture
def run_copy(trained_run, tmp_path):
    return shutil.copytree(trained_run, tmp_path / "run")


def test_calibrate_stores_threshold_used_by_predict_and_evaluate(run_copy, tiny_folders):
    before = read_config(run_copy)
    result = calibrate(imageclf.load(run_copy, device="cpu"), tiny_folders, target="sensitivity=0.95",
                       temperature=True)
    assert result.split == "val" and result.n == len(list((tiny_folders / "val").rglob("*.png")))
    assert result.nll_after <= result.nll_before + 1e-9
    model = imageclf.load(run_copy, device="cpu")           # the weights hash still matches
    assert model.threshold == pytest.approx(result.threshold)
    assert model.config.temperature == pytest.approx(result.temperature)
    assert model.config.weights_sha256 == before.weights_sha256
    assert model.config.metrics["calibration"]["target"] == "sensitivity=0.95"
    ev = model.evaluate(tiny_folders, split="val")
    assert ev.metrics["sensitivity"] >= 0.95
    assert ev.metrics["sensitivity"] == pytest.approx(result.at_threshold["sensitivity"])
    preds = model.predict([str(p) for p in sorted((tiny_folders / "val").rglob("*.png"))])
    assert preds.threshold == model.threshold
    assert (preds.indices == ev.predictions).all()


def test_temperature_alone_keeps_the_decisions(run_copy, tiny_folders):
    before = imageclf.load(run_copy, device="cpu").evaluate(tiny_folders, split="val").predictions
    calibrate(imageclf.load(run_copy, device="cpu"), tiny_folders, temperature=True)
    after = imageclf.load(run_copy, device="cpu").evaluate(tiny_folders, split="val").predictions
    assert (before == after).all()


def test_calibrate_refuses_test_split(run_copy, tiny_folders):
    with pytest.raises(DataError, match="test split"):
        calibrate(imageclf.load(run_copy, device="cpu"), tiny_folders, split="test", target="youden")
    assert read_config(run_copy).threshold == 0.5


def test_calibrate_finds_the_training_val_split_of_unsplit_data(tmp_path):
    from imageclf.data import synthetic as testing

    data = testing.make_class_folders(tmp_path / "flat", n=40, size=32)
    run = tmp_path / "r"
    imageclf.train(data, "catsdogs-2conv", run, device="cpu", img_size=32, channels=1, epochs=1,
                   steps_per_epoch=None, val_fraction=0.25)
    result = calibrate(imageclf.load(run, device="cpu"), data, target="f1", save=False)
    assert result.n == 10 and not result.saved                # a quarter of 40, as in training
    assert read_config(run).threshold == 0.5
    # evaluate --split val judges the model on that same carve: training's own val figures.
    ev = imageclf.load(run, device="cpu").evaluate(data, split="val")
    assert len(ev.labels) == 10
    assert ev.metrics["accuracy"] == pytest.approx(read_config(run).metrics["val_accuracy"])


def test_split_seed_keeps_the_validation_carve_while_the_seed_changes(tmp_path):
    from imageclf.data import synthetic as testing
    from imageclf.data.sources import carve_of, open_dataset, training_splits
    from imageclf.recipes.schema import get_recipe

    ds = open_dataset(testing.make_class_folders(tmp_path / "flat", n=40, size=32))
    base = get_recipe("photo-resnet")
    vals = {}
    for seed, split_seed in ((0, None), (1, None), (1, 0), (5, 0)):
        recipe = base.override({"seed": seed, "split_seed": split_seed})
        assert carve_of(recipe.to_dict()) == (recipe.val_fraction, recipe.carve_seed)
        val = training_splits(ds, *carve_of(recipe.to_dict()))[1]
        vals[seed, split_seed] = [val.item_name(i) for i in range(len(val))]
    assert vals[0, None] != vals[1, None]              # the seed moves the carve ...
    assert vals[0, None] == vals[1, 0] == vals[5, 0]   # ... unless split_seed pins it


def test_update_config_validates(run_copy):
    update_config(run_copy, threshold=0.25)
    assert read_config(run_copy).threshold == 0.25
    with pytest.raises(ModelFileError):
        update_config(run_copy, threshold=1.5)
    with pytest.raises(ModelFileError):
        update_config(run_copy, classes=["a", "b"])
    with pytest.raises(ModelFileError):
        update_config(run_copy, colour="blue")
    assert read_config(run_copy).threshold == 0.25


def test_cli_exit_codes(run_copy, tiny_folders, capsys):
    main(["calibrate", str(run_copy), str(tiny_folders), "--target", "youden", "--device", "cpu", "-q"])
    assert "threshold 0.500000 ->" in capsys.readouterr().out
    for argv in (["--split", "test", "--target", "youden"], ["--target", "sens=2"], []):
        with pytest.raises(SystemExit) as exc:
            main(["calibrate", str(run_copy), str(tiny_folders), *argv, "-q"])
        assert exc.value.code == 2
