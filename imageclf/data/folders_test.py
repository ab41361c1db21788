"""Folder layouts as people have them: split folders under their usual names, in any subset."""

import json
import shutil

import pytest

from imageclf.cli.testing import exit_code
from imageclf.core.errors import DataError
from imageclf.data import synthetic
from imageclf.data.sources import evaluation_split, open_dataset, training_splits


def test_seed_003_layout_trains_on_training_set_and_evaluates_on_test_set(tmp_path):
    root = synthetic.make_class_folders(tmp_path / "dataset", n=20, class_names=("cats", "dogs"),
                                        splits=("training_set", "test_set"))
    ds = open_dataset(root)
    assert ds.kind == "split-folders" and list(ds.splits) == ["train", "test"]
    assert ds.classes == ["cats", "dogs"]
    assert "training_set/ -> train" in ds.layout and "test_set/ -> test" in ds.layout
    train, val = training_splits(ds, 0.25, 0)
    assert all("/training_set/" in p for p in train.paths + val.paths)
    assert len(train) + len(val) == 20
    assert all("/test_set/" in p for p in evaluation_split(ds).paths)


def test_split_names_in_any_case(tmp_path):
    root = synthetic.make_class_folders(tmp_path / "d", n=8, splits=("Training", "VALID", "Testing"))
    ds = open_dataset(root)
    assert list(ds.splits) == ["train", "val", "test"]
    train, val = training_splits(ds)
    assert "/Training/" in train.paths[0] and "/VALID/" in val.paths[0]


def test_a_test_only_tree_is_an_evaluation_set(tmp_path):
    root = synthetic.make_class_folders(tmp_path / "d", n=8, class_names=("cats", "dogs"), splits=("test",))
    ds = open_dataset(root)
    assert list(ds.splits) == ["test"] and ds.classes == ["cats", "dogs"]
    assert "evaluation set" in ds.layout
    assert evaluation_split(ds) is ds.splits["test"]
    with pytest.raises(DataError, match="is an evaluation set"):
        training_splits(ds)


def test_evaluation_set_classes_are_the_union_of_its_splits(tmp_path):
    root = tmp_path / "d"
    synthetic.make_class_folders(root / "val", n=4, class_names=("a", "b"))
    synthetic.make_class_folders(root / "test", n=6, class_names=("a", "b", "c"))
    assert open_dataset(root).classes == ["a", "b", "c"]


def test_two_folders_for_one_split_are_refused(tmp_path):
    root = synthetic.make_class_folders(tmp_path / "d", n=4, splits=("train", "training"))
    with pytest.raises(DataError, match="both train/ and training/ name the train split"):
        open_dataset(root)


def test_split_folders_with_unknown_names_are_refused_with_what_to_do(tmp_path):
    root = synthetic.make_class_folders(tmp_path / "d", n=4, class_names=("cats", "dogs"),
                                        splits=("fold_a", "fold_b"))
    with pytest.raises(DataError) as exc:
        open_dataset(root)
    message = str(exc.value)
    assert "fold_a/, fold_b/ hold no images, only the folders ['cats', 'dogs']" in message
    assert "training_set" in message and f"pass one of them as DATA, e.g. {root / 'fold_a'}" in message
    # What it says to pass works.
    assert open_dataset(root / "fold_a").classes == ["cats", "dogs"]


def test_one_unknown_split_folder_is_refused_too(tmp_path):
    # Before, this was read as one class 'mydata' and refused for having only one class.
    root = synthetic.make_class_folders(tmp_path / "d", n=4, class_names=("cats", "dogs"), splits=("mydata",))
    with pytest.raises(DataError, match="split folders whose names"):
        open_dataset(root)


def test_nested_class_folders_are_still_read_whole(tmp_path):
    # Class folders holding per-patient folders (different names in each class) are classes.
    root = tmp_path / "d"
    synthetic.make_class_folders(root / "NORMAL", n=4, class_names=("p1", "p2"))
    synthetic.make_class_folders(root / "PNEUMONIA", n=4, class_names=("p3", "p4"))
    ds = open_dataset(root)
    assert ds.kind == "class-folders" and ds.classes == ["NORMAL", "PNEUMONIA"]
    assert len(ds.splits["all"]) == 8


def test_a_class_named_like_a_split_holding_images_is_a_class(tmp_path):
    root = synthetic.make_class_folders(tmp_path / "d", n=8, class_names=("test", "other"))
    ds = open_dataset(root)
    assert ds.kind == "class-folders" and ds.classes == ["other", "test"]


def test_evaluate_and_inspect_on_a_test_only_tree(tmp_path, tiny_folders, trained_run, capsys):
    root = tmp_path / "only_test"
    shutil.copytree(tiny_folders / "test", root / "test")
    assert exit_code(["evaluate", trained_run, root, "--quiet", "--json", tmp_path / "e.json"]) == 0
    out = capsys.readouterr().out
    assert "[test]: 64 images" in out
    assert exit_code(["inspect", root, "--recipe", "catsdogs-2conv", "--img-size", "32"]) == 0
    out = capsys.readouterr().out
    assert "layout: split folders: test/ -> test" in out and "evaluation set" in out


def test_train_then_evaluate_the_seed_003_layout_with_no_flags(tmp_path, capsys):
    root = synthetic.make_class_folders(tmp_path / "dataset", n=24, class_names=("cats", "dogs"),
                                        splits=("training_set", "test_set"), seed=3)
    run = tmp_path / "run"
    assert exit_code(["train", root, "--recipe", "catsdogs-2conv", "--img-size", "32", "--epochs", "1",
                      "--out", run, "-q", "--device", "cpu"]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["train_images"] + metrics["val_images"] == 24  # training_set only
    assert exit_code(["evaluate", run, root, "-q"]) == 0
    assert "[test]: 24 images" in capsys.readouterr().out
