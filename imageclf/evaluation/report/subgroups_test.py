"""Subgroup figures against a hand computation, and ``evaluate --groups`` end to end."""

import json

import numpy as np
import pytest

from imageclf.cli.testing import exit_code
from imageclf.core.errors import DataError
from imageclf.data.dataset import Dataset, Split
from imageclf.evaluation.report.subgroups import Subgroups, read_subgroups, subgroup_figures

# Eight images, p(positive) at threshold 0.5. Site A: all four right. Site B: all four wrong.
LABELS = np.array([1, 1, 0, 0, 1, 1, 0, 0])
P1 = np.array([0.9, 0.8, 0.2, 0.1, 0.3, 0.4, 0.6, 0.7])
PROBS = np.stack([1 - P1, P1], 1)
SITE = ["A"] * 4 + ["B"] * 4
SEX = ["M", "F"] * 4


def test_figures_per_group_by_hand():
    fig = subgroup_figures(LABELS, PROBS, 0.5, Subgroups("meta.csv", {"site": SITE, "sex": SEX}, 0),
                           n_resamples=300, seed=0)
    # All images: 4 of 8 right; 2 of 4 positives, 2 of 4 negatives; 12 of 16 (pos, neg) pairs ordered.
    assert fig["overall"] == pytest.approx({"accuracy": 0.5, "roc_auc": 0.75, "sensitivity": 0.5,
                                            "specificity": 0.5})
    a, b = fig["columns"]["site"]
    assert (a["value"], a["n"], a["class_counts"]) == ("A", 4, [2, 2])
    assert {k: v["estimate"] for k, v in a["metrics"].items()} == {
        "accuracy": 1.0, "roc_auc": 1.0, "sensitivity": 1.0, "specificity": 1.0}
    assert {k: v["estimate"] for k, v in b["metrics"].items()} == {
        "accuracy": 0.0, "roc_auc": 0.0, "sensitivity": 0.0, "specificity": 0.0}
    # Every resample of site B is as wrong: intervals [0, 0], wholly below every overall figure.
    assert all(v["low"] == v["high"] == 0.0 for v in b["metrics"].values())
    assert sorted(b["below"]) == ["accuracy", "roc_auc", "sensitivity", "specificity"] and a["below"] == []
    # M: images 0, 2, 4, 6 (right, right, wrong, wrong); pairs (0.9, 0.3) vs (0.2, 0.6): 3 of 4.
    female, male = fig["columns"]["sex"]
    assert male["value"] == "M" and {k: v["estimate"] for k, v in male["metrics"].items()} == pytest.approx(
        {"accuracy": 0.5, "roc_auc": 0.75, "sensitivity": 0.5, "specificity": 0.5})
    assert female["below"] == [] and male["below"] == []  # four images: wide intervals


def test_groups_table_is_matched_to_the_images(tmp_path):
    ds = Dataset("x.npz", "npz", ["a", "b"], {"test": Split("test", [0, 1, 0], arrays=np.zeros((3, 4, 4)))})
    table = tmp_path / "meta.csv"
    table.write_text("Image,Site,label\ntest[0],north,a\ntest[2],south,a\n")
    sub = read_subgroups(table, ds, ["test[0]", "test[1]", "test[2]"])
    assert sub.columns == {"Site": ["north", None, "south"]} and sub.missing == 1  # 'label' is no subgroup
    table.write_text("path,site\ntest[0],north\ntest[7],south\n")
    with pytest.raises(DataError, match=r"1 of its paths are not images of x.npz \(first: 'test\[7\]'"):
        read_subgroups(table, ds, ["test[0]"])


def test_evaluate_with_groups(tmp_path, tiny_folders, trained_run, capsys):
    files = sorted((tiny_folders / "test").rglob("*.png"))
    meta = tmp_path / "meta.csv"
    meta.write_text("file,site,age band\n" + "".join(
        f"{p},{'north' if i % 2 else 'south'},{'<50' if i % 3 else '50+'}\n" for i, p in enumerate(files)))
    assert exit_code(["evaluate", trained_run, tiny_folders, "--groups", meta, "--json", tmp_path / "e.json",
                      "--report", tmp_path / "r.html", "--bootstrap", "200", "-q"]) == 0
    out = capsys.readouterr().out
    assert "subgroups (" in out and "site:" in out and "age band:" in out
    sub = json.loads((tmp_path / "e.json").read_text())["figures"]["subgroups"]
    assert [e["value"] for e in sub["columns"]["site"]] == ["north", "south"]
    assert sum(e["n"] for e in sub["columns"]["site"]) == 64 and sub["missing"] == 0
    assert 'id="subgroups"' in (tmp_path / "r.html").read_text()
    # A row naming an image that is not in the data: one line, exit 2, nothing written.
    meta.write_text(meta.read_text() + "elsewhere/ghost.png,north,<50\n")
    assert exit_code(["evaluate", trained_run, tiny_folders, "--groups", meta, "--json", tmp_path / "f.json",
                      "-q"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "1 of its paths are not images of" in err[0] and "ghost.png" in err[0]
    assert not (tmp_path / "f.json").exists()
