"""Label review: out-of-fold probabilities ranked by how likely each label is wrong."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from imageclf.cli.testing import exit_code
from imageclf.data import synthetic


@pytest.fixture(scope="module")
def noisy(tmp_path_factory):
    """300 two-class images with 15 labels flipped (seeded)."""
    root = tmp_path_factory.mktemp("noisy")
    x, y = synthetic.synthetic_images(300, 28, seed=0)
    flipped = np.random.default_rng(1).choice(300, 15, replace=False)
    y = y.copy()
    y[flipped] = 1 - y[flipped]
    np.savez(root / "noisy.npz", train_images=x, train_labels=y)
    return root / "noisy.npz", {f"train[{i}]" for i in flipped}


def test_review_finds_flipped_labels_and_train_excludes_them(noisy, tmp_path, capsys):
    data, flipped = noisy
    out = tmp_path / "review"
    assert exit_code(["review", data, "--recipe", "mnist-basic", "--folds", "3", "--epochs", "3",
                      "--out", out, "-q", "--device", "cpu", "--top", "20"]) == 0
    assert "likely label issues" in capsys.readouterr().out
    rows = list(csv.DictReader((out / "review.csv").open()))
    assert len(rows) == 300 and [int(r["rank"]) for r in rows] == list(range(1, 301))
    top = {r["path"] for r in rows[:30]}
    assert len(top & flipped) >= 12  # at least 80 % of the flipped labels in the top 10 %
    flagged = [r for r in rows if r["exclude"] == "true"]
    assert flagged and all(r["suggested"] != r["given"] for r in flagged)
    page = (out / "review.html").read_text()
    assert page.count("data:image/png;base64,") == 20 and rows[0]["path"] in page
    written = sorted(p.name for p in out.iterdir())
    assert written == ["fold-1", "fold-2", "fold-3", "review.csv", "review.html"]
    run = tmp_path / "run"
    assert exit_code(["train", data, "--recipe", "mnist-basic", "--epochs", "1", "--out", run, "-q",
                      "--device", "cpu", "--exclude", out / "review.csv"]) == 0
    fingerprint = json.loads((run / "config.json").read_text())["data"]
    assert fingerprint["excluded"]["images"] == len(flagged)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["val_images"] == 30 and metrics["train_images"] < 270


def test_exclude_without_an_exclude_column_takes_every_listed_path(tmp_path):
    from imageclf.data.sources import open_dataset, training_splits

    root = synthetic.make_class_folders(tmp_path / "d", n=20)
    victims = sorted((root / "NORMAL").iterdir())[:3]
    listing = tmp_path / "drop.csv"
    listing.write_text("file\n" + "\n".join(str(p.relative_to(tmp_path)) for p in victims) + "\n")
    ds = open_dataset(root, exclude=listing)
    train, val = training_splits(ds, 0.2, 0)
    victims = {str(v) for v in victims}
    assert not victims & set(train.paths)
    assert val.paths == training_splits(open_dataset(root), 0.2, 0)[1].paths  # validation unchanged
    assert len(train) + len(val) == 20 - len(victims - set(val.paths))


@pytest.mark.parametrize("case, fragment", [
    ("one_class", "every training image is labelled 'a'"),
    ("too_few", "fewer than 5 folds"),
    ("not_empty", "already exists and is not empty"),
    ("no_match", "none of its 1 listed images"),
])
def test_bad_reviews_are_one_line_and_write_nothing(case, fragment, tmp_path, capsys):
    x, y = synthetic.synthetic_images(12, 28)
    data = tmp_path / "d.npz"
    out = tmp_path / "out"
    args = ["review", data, "--recipe", "mnist-basic", "--out", out, "--epochs", "1", "-q"]
    if case == "one_class":
        np.savez(data, train_images=x, train_labels=np.zeros(12, int))
        args += ["--class-names", "a,b"]
    else:
        np.savez(data, train_images=x, train_labels=y)
    if case == "too_few":
        args += ["--folds", "5"]
        np.savez(data, train_images=x, train_labels=np.r_[np.zeros(9, int), np.ones(3, int)])
    if case == "not_empty":
        out.mkdir()
        (out / "keep.txt").write_text("mine")
    if case == "no_match":
        (tmp_path / "x.csv").write_text("path\ntrain[99]\n")
        args = ["train", data, "--recipe", "mnist-basic", "--out", out, "--exclude", tmp_path / "x.csv"]
    assert exit_code(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and fragment in err[0]
    assert (not out.exists()) if case != "not_empty" else [p.name for p in out.iterdir()] == ["keep.txt"]
