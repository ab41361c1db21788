"""CSV columns as people name them, and Keras' .npz layout beside MedMNIST's."""

import csv
import json

import numpy as np
import pytest

from imageclf.cli.testing import exit_code
from imageclf.core.errors import DataError
from imageclf.data import synthetic
from imageclf.data.sources import evaluation_split, open_dataset, training_splits


def _csv(path, header, rows):
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def _labelled_images(tmp_path, n=24):
    images, labels = synthetic.synthetic_images(n, 28)
    paths = synthetic.write_images(tmp_path / "img", images, labels, ["cat", "dog"])
    return [(p.relative_to(tmp_path).as_posix(), ["cat", "dog"][k]) for p, k in zip(paths, labels)]


@pytest.mark.parametrize("header", [["Filename", "Class"], ["IMAGE", "Target"], ["file", "label"],
                                    ["path", "labels"]])
def test_usual_column_names_in_any_case(tmp_path, header):
    table = _csv(tmp_path / "t.csv", header, _labelled_images(tmp_path))
    ds = open_dataset(table)
    assert ds.classes == ["cat", "dog"] and len(ds.splits["all"]) == 24
    assert f"path column {header[0]!r}, label column {header[1]!r}" in ds.layout


def test_column_overrides(tmp_path):
    rows = _labelled_images(tmp_path)
    table = _csv(tmp_path / "t.csv", ["img_file", "diagnosis", "label"], [(p, c, "x") for p, c in rows])
    ds = open_dataset(table, path_column="IMG_FILE", label_column="diagnosis")
    assert ds.classes == ["cat", "dog"] and "as named on the command line" in ds.layout
    with pytest.raises(DataError, match=r"no path column .*columns are \['img_file', 'diagnosis', 'label'\]"):
        open_dataset(table)
    with pytest.raises(DataError, match="no column 'nope' \\(--label-column\\)"):
        open_dataset(table, path_column="img_file", label_column="nope")
    with pytest.raises(DataError, match="--path-column names a CSV's column, and this is not a CSV"):
        open_dataset(tmp_path / "img", path_column="x")


def test_split_values_as_people_write_them(tmp_path):
    rows = _labelled_images(tmp_path)
    splits = ["Training", "VALIDATION", "test_set"]
    table = _csv(tmp_path / "t.csv", ["path", "label", "Split"],
                 [(p, c, splits[i % 3]) for i, (p, c) in enumerate(rows)])
    ds = open_dataset(table)
    assert list(ds.splits) == ["train", "val", "test"] and len(ds.splits["test"]) == 8
    bad = _csv(tmp_path / "b.csv", ["path", "label", "split"], [(p, c, "holdout") for p, c in rows])
    with pytest.raises(DataError, match=r"unknown split names \['holdout'\]"):
        open_dataset(bad)


def test_keras_npz_layout(tmp_path):
    (x_train, y_train), (x_test, y_test) = (synthetic.synthetic_images(40, 28, num_classes=10, seed=s)
                                            for s in (0, 1))
    path = tmp_path / "mnist.npz"
    np.savez(path, x_train=x_train, y_train=y_train.astype(np.uint8), x_test=x_test,
             y_test=y_test.astype(np.uint8))
    ds = open_dataset(path)
    assert list(ds.splits) == ["train", "test"] and ds.classes == [str(i) for i in range(10)]
    assert "Keras layout" in ds.layout and "x_test/y_test -> test" in ds.layout
    assert np.array_equal(ds.splits["test"].labels, y_test)
    train, val = training_splits(ds)
    assert len(train) + len(val) == 40
    assert evaluation_split(ds) is ds.splits["test"]


def test_keras_npz_with_validation_and_one_hot_labels(tmp_path):
    x, y = synthetic.synthetic_images(12, 28)
    path = tmp_path / "data.npz"
    np.savez(path, x_train=x, y_train=np.eye(2)[y], x_val=x[:4], y_val=y[:4])
    ds = open_dataset(path, class_names=["neg", "pos"])
    assert list(ds.splits) == ["train", "val"] and np.array_equal(ds.splits["train"].labels, y)


def test_npz_without_known_arrays_names_both_layouts(tmp_path):
    path = tmp_path / "odd.npz"
    np.savez(path, pixels=np.zeros((2, 4, 4), np.uint8))
    with pytest.raises(DataError, match=r"holds \['pixels'\].*MedMNIST's train_images.*Keras' x_train"):
        open_dataset(path)


def test_column_flags_reach_train_evaluate_and_inspect(tmp_path, capsys):
    rows = _labelled_images(tmp_path, 32)
    table = _csv(tmp_path / "t.csv", ["img", "kind"], rows)
    flags = ["--path-column", "img", "--label-column", "kind"]
    run = tmp_path / "run"
    assert exit_code(["train", table, "--recipe", "mnist-basic", "--epochs", "1", "--out", run, "-q",
                      "--device", "cpu", *flags]) == 0
    assert json.loads((run / "config.json").read_text())["classes"] == ["cat", "dog"]
    assert exit_code(["evaluate", run, table, "-q", *flags]) == 0
    assert "[all]: 32 images" in capsys.readouterr().out
    assert exit_code(["inspect", table, "--recipe", "mnist-basic", *flags]) == 0
    assert "label column 'kind'" in capsys.readouterr().out
    assert exit_code(["evaluate", run, table, "-q"]) == 2
    assert "no label column" in capsys.readouterr().err  # img is a path column name people use
