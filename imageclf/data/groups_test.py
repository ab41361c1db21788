"""Group-aware splits: every patient on one side of the validation carve and of every fold."""

import csv
import json
import re

import numpy as np
import pytest

from imageclf.cli.testing import exit_code
from imageclf.core.errors import ConfigError, DataError
from imageclf.data import synthetic
from imageclf.data.groups import assign_bins, group_of, looks_grouped
from imageclf.data.sources import open_dataset, training_splits
from imageclf.evaluation.inspection import inspect
from imageclf.training.folds import fold_assignment


def test_the_group_a_pattern_names():
    assert group_of(re.compile(r"person(\d+)_"), "NORMAL/person12_3.png") == "12"
    assert group_of(re.compile(r"(?P<side>[LR])_(?P<patient>p\d+)"), "L_p7.png") == "L"  # first named
    assert group_of(re.compile(r"IM-\d+"), "IM-0115-0001.jpeg") == "IM-0115"  # whole match
    assert group_of(re.compile(r"person(\d+)_"), "IM-0115.jpeg") is None


def test_bins_take_whole_groups_stratified_and_seeded():
    rng = np.random.default_rng(0)
    sizes = rng.integers(1, 6, 200)
    groups = np.repeat([f"p{i}" for i in range(200)], sizes).astype(object)
    labels = np.repeat(np.arange(200) % 3, sizes)
    bins = assign_bins(labels, groups, [0.8, 0.2], seed=1)
    for g in np.unique(groups):
        assert len(set(bins[groups == g])) == 1
    for c in range(3):
        share = (bins[labels == c] == 1).mean()
        assert abs(share - 0.2) < 0.03, (c, share)
    assert np.array_equal(bins, assign_bins(labels, groups, [0.8, 0.2], seed=1))
    assert not np.array_equal(bins, assign_bins(labels, groups, [0.8, 0.2], seed=2))
    folds = fold_assignment(labels, 5, 0, groups)
    for g in np.unique(groups):
        assert len(set(folds[groups == g])) == 1
    assert np.bincount(folds).min() > 0.15 * len(labels)


def test_validation_carve_keeps_each_patient_on_one_side(tmp_path):
    root = synthetic.make_grouped_folders(tmp_path / "d", groups=40, per_group=3)
    ds = open_dataset(root, group_by=r"person(\d+)_")
    assert ds.group_by == r"person(\d+)_" and "40 groups in 120 of 120 files" in ds.layout
    train, val = training_splits(ds, 0.2, seed=0)
    assert not set(train.groups) & set(val.groups)
    assert len(val) == 24 and sorted(np.bincount(val.labels).tolist()) == [12, 12]
    # The plain stratified carve puts some patients on both sides.
    plain_train, plain_val = training_splits(open_dataset(root), 0.2, seed=0)
    names = [{p.rsplit("/", 1)[1].split("_")[0] for p in s.paths} for s in (plain_train, plain_val)]
    assert names[0] & names[1]


def test_group_column_of_a_csv(tmp_path):
    images, labels = synthetic.synthetic_images(30, 28)
    paths = synthetic.write_images(tmp_path / "img", images, labels, ["a", "b"])
    table = tmp_path / "t.csv"
    with table.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "Patient"])
        w.writerows((p.relative_to(tmp_path), "ab"[k], f"x{i // 3}")
                    for i, (p, k) in enumerate(zip(paths, labels)))
    ds = open_dataset(table, group_by="patient")
    assert "--group-by column 'patient': 10 groups" in ds.layout
    train, val = training_splits(ds, 0.3, seed=0)
    assert not set(train.groups) & set(val.groups)


def test_bad_group_by_says_what_is_wrong(tmp_path):
    root = synthetic.make_grouped_folders(tmp_path / "d", groups=4)
    with pytest.raises(DataError, match=r"--group-by 'subject\(\\d\+\)' matches none of its 12 files"):
        open_dataset(root, group_by=r"subject(\d+)")
    with pytest.raises(ConfigError, match="neither a column of the CSV nor a regular expression"):
        open_dataset(root, group_by="person(")
    with pytest.raises(DataError, match="an .npz has none"):
        open_dataset(synthetic.make_npz(tmp_path / "x.npz"), group_by="x")
    run = tmp_path / "run"
    assert exit_code(["train", root, "--group-by", r"subject(\d+)", "--out", run, "--recipe",
                      "mnist-basic", "-q"]) == 2
    assert not run.exists()  # refused before anything is written


def test_looks_grouped_suggests_a_group_by():
    names = [f"PNEUMONIA/person{g}_bacteria_{i}.jpeg" for g in range(30) for i in range(3)]
    hint = looks_grouped(names + [f"NORMAL/IM-{i:04d}-0001.jpeg" for i in range(50)])
    assert hint["files"] == 90 and hint["prefixes"] == 30 and hint["suggest"] == r"person(\d+)"
    assert looks_grouped([f"{i:05d}.png" for i in range(100)]) is None
    assert looks_grouped([f"img{i}.png" for i in range(100)]) is None


def test_inspect_reports_groups_across_splits_and_grouped_names(tmp_path):
    root = tmp_path / "d"
    synthetic.make_grouped_folders(root / "train", groups=10, per_group=2)
    synthetic.make_grouped_folders(root / "test", groups=6, per_group=2, start=7, seed=1)  # 7, 8, 9 in both
    text = inspect(root, "mnist-basic").summary()
    assert "file names look grouped" in text and r"--group-by 'person(\d+)'" in text
    result = inspect(open_dataset(root, group_by=r"person(\d+)"), "mnist-basic")
    text = result.summary()
    assert "groups (--group-by 'person(\\d+)'): train 10, test 6" in text
    assert "3 groups are in both train and test (e.g. 7, 8, 9)" in text
    assert result.to_dict()["groups"]["crossing"]["train/test"]["count"] == 3
    assert "Groups (patients, subjects) across splits" in result.to_html()


def test_training_records_groups_and_evaluation_warns_on_shared_patients(tmp_path, capsys):
    root = synthetic.make_grouped_folders(tmp_path / "d", groups=16, per_group=3)
    run = tmp_path / "run"
    assert exit_code(["train", root, "--group-by", r"person(\d+)_", "--recipe", "mnist-basic",
                      "--epochs", "1", "--out", run, "-q", "--device", "cpu", "--val-fraction", "0.25"]) == 0
    saved = json.loads((run / "train_groups.json").read_text())
    assert saved["group_by"] == r"person(\d+)_"
    train_groups = set(saved["groups"])
    assert len(saved["groups"]) == json.loads((run / "metrics.json").read_text())["train_images"]
    capsys.readouterr()
    # The carved validation split holds only patients the model never trained on.
    assert exit_code(["evaluate", run, root, "--split", "val", "-q", "--json", tmp_path / "v.json"]) == 0
    assert "trained on" not in capsys.readouterr().err
    val = json.loads((tmp_path / "v.json").read_text())
    assert val["train_group_overlap"]["images"] == 0 and val["n"] == 12
    # All of it: the training patients are flagged.
    assert exit_code(["evaluate", run, root, "-q", "--json", tmp_path / "a.json"]) == 0
    err = capsys.readouterr().err
    assert f"{3 * len(train_groups)} of 48 evaluation images belong to {len(train_groups)} groups" in err
    # New patients in the same layout: no warning.
    fresh = synthetic.make_grouped_folders(tmp_path / "new", groups=4, per_group=2, start=100)
    assert exit_code(["evaluate", run, fresh, "-q"]) == 0
    assert "trained on" not in capsys.readouterr().err


def test_resume_keeps_the_grouping(tmp_path, capsys):
    root = synthetic.make_grouped_folders(tmp_path / "d", groups=12, per_group=2)
    run = tmp_path / "run"
    base = ["train", root, "--recipe", "mnist-basic", "--out", run, "-q", "--device", "cpu"]
    assert exit_code([*base, "--epochs", "1", "--group-by", r"person(\d+)"]) == 0
    assert exit_code([*base, "--epochs", "2", "--resume"]) == 0  # no --group-by: the saved one
    assert json.loads((run / "train_groups.json").read_text())["group_by"] == r"person(\d+)"
    assert exit_code([*base, "--epochs", "3", "--resume", "--group-by", "(person)"]) == 2
    assert "not the grouping this run started with" in capsys.readouterr().err
