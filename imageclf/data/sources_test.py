import numpy as np
import pytest

from imageclf.core.errors import DataError
from imageclf.data import synthetic as testing
from imageclf.data.sources import evaluation_split, open_dataset, stratified_split, training_splits


def test_class_folders_sorted_like_keras(tmp_path):
    # Python's plain sort: upper case before lower case, as flow_from_directory does.
    root = testing.make_class_folders(tmp_path / "d", n=12, class_names=("b", "A", "a"))
    ds = open_dataset(root)
    assert ds.classes == ["A", "a", "b"]
    assert ds.kind == "class-folders" and set(ds.splits) == {"all"}
    split = ds.splits["all"]
    for path, label in zip(split.paths, split.labels):
        assert f"/{ds.classes[label]}/" in path


def test_split_folders(tiny_folders):
    ds = open_dataset(tiny_folders)
    assert ds.kind == "split-folders"
    assert set(ds.splits) == {"train", "val", "test"}
    assert ds.classes == ["NORMAL", "PNEUMONIA"]
    train, val = training_splits(ds)
    assert train is ds.splits["train"] and val is ds.splits["val"]
    assert evaluation_split(ds) is ds.splits["test"]


def test_csv_paths_relative_to_csv(tmp_path):
    csv_path = testing.make_csv(tmp_path / "sub" / "labels.csv", n=20)
    ds = open_dataset(csv_path)
    assert ds.classes == ["cat", "dog"]
    assert len(ds.splits["all"]) == 20
    assert all(p.startswith(str(tmp_path)) for p in ds.splits["all"].paths)


def test_csv_with_split_column(tmp_path):
    ds = open_dataset(testing.make_csv(tmp_path / "l.csv", n=20, with_split=True))
    assert set(ds.splits) == {"train", "val"}
    assert len(ds.splits["train"]) + len(ds.splits["val"]) == 20


@pytest.mark.parametrize("label_2d", [True, False])
def test_npz_medmnist_layout(tmp_path, label_2d):
    path = testing.make_npz(tmp_path / "x.npz", n_train=10, n_val=4, n_test=6, label_shape_2d=label_2d)
    ds = open_dataset(path)
    assert set(ds.splits) == {"train", "val", "test"}
    assert ds.splits["train"].labels.shape == (10,)
    assert ds.classes == ["0", "1"]
    assert open_dataset(path, class_names=["neg", "pos"]).classes == ["neg", "pos"]


def test_known_npz_names(tmp_path):
    path = testing.make_npz(tmp_path / "pneumoniamnist_small.npz", n_train=8, n_val=4)
    assert open_dataset(path).classes == ["normal", "pneumonia"]


def test_stratified_split_is_reproducible_and_stratified():
    labels = np.array([0] * 90 + [1] * 10)
    keep1, held1 = stratified_split(labels, 0.1, seed=3)
    keep2, held2 = stratified_split(labels, 0.1, seed=3)
    assert np.array_equal(held1, held2) and np.array_equal(keep1, keep2)
    assert np.bincount(labels[held1]).tolist() == [9, 1]
    assert len(np.intersect1d(keep1, held1)) == 0 and len(keep1) + len(held1) == 100
    _, held3 = stratified_split(labels, 0.1, seed=4)
    assert not np.array_equal(held1, held3)


def test_training_split_from_flat_folder(tmp_path):
    ds = open_dataset(testing.make_class_folders(tmp_path / "d", n=40))
    train, val = training_splits(ds, val_fraction=0.25, seed=0)
    assert len(train) == 30 and len(val) == 10
    assert not set(train.paths) & set(val.paths)


@pytest.mark.parametrize("case, message", [
    ("missing", "no such file or folder"),
    ("empty_class", "has no images"),
    ("one_class", "only one class"),
    ("loose", "images lie loose"),
    ("csv_missing_file", "line 3: image 'nope.png' not found"),
    ("csv_columns", "no path column (looked for path, filepath"),
    ("bad_suffix", "not a folder, .csv or .npz"),
])
def test_bad_datasets_say_what_is_wrong(tmp_path, case, message):
    if case == "missing":
        target = tmp_path / "nowhere"
    elif case == "empty_class":
        target = testing.make_class_folders(tmp_path / "d", n=8)
        (target / "EMPTY").mkdir()
    elif case == "one_class":
        target = testing.make_class_folders(tmp_path / "d", n=8, class_names=("only",))
    elif case == "loose":
        target = tmp_path / "loose"
        target.mkdir()
        (target / "a.png").write_bytes(b"x")
    elif case == "csv_missing_file":
        target = testing.make_csv(tmp_path / "l.csv", n=4)
        lines = target.read_text().splitlines()
        lines[2] = "nope.png,dog"
        target.write_text("\n".join(lines) + "\n")
    elif case == "csv_columns":
        target = tmp_path / "l.csv"
        target.write_text("name,kind\na.png,x\n")
    else:
        target = tmp_path / "data.txt"
        target.write_text("hello")
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")):
        open_dataset(target)


def test_split_folder_with_unknown_class(tmp_path):
    root = testing.make_class_folders(tmp_path / "d", n=8, splits=("train", "test"))
    (root / "test" / "EXTRA").mkdir()
    sample = next((root / "train" / "NORMAL").iterdir())
    (root / "test" / "EXTRA" / "x.png").write_bytes(sample.read_bytes())
    with pytest.raises(DataError, match="EXTRA"):
        open_dataset(root)


def test_fingerprint_changes_with_content(tmp_path):
    root = testing.make_class_folders(tmp_path / "d", n=8)
    before = open_dataset(root).fingerprint()["sha256"]
    assert open_dataset(root).fingerprint()["sha256"] == before
    victim = next((root / "NORMAL").iterdir())
    victim.write_bytes(victim.read_bytes() + b"\0")
    assert open_dataset(root).fingerprint()["sha256"] != before
