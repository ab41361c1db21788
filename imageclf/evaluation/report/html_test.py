"""The evaluation report: every section present, nothing fetched from a network, same numbers as JSON."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

import imageclf
from imageclf.cli import main
from imageclf.evaluation.evaluate import EvaluationResult
from imageclf.evaluation.metrics import classification_metrics

BINARY_SECTIONS = ["summary", "config", "history", "classification-report", "confusion-matrix", "roc-pr",
                   "operating-point", "bootstrap", "calibration", "prevalence", "samples", "worst-errors"]


def _no_network(page: str) -> None:
    assert not re.search(r"https?://", page)
    assert "<script" not in page and "<link" not in page
    srcs = re.findall(r'src="([^"]*)"', page)
    assert srcs and all(s.startswith("data:image/png;base64,") for s in srcs)


@pytest.fixture(scope="module")
def binary_result(trained_run, tiny_folders):
    return imageclf.load(trained_run, device="cpu").evaluate(tiny_folders, split="test", keep_images=True)


def test_binary_report_has_every_section(binary_result, tmp_path):
    binary_result.figures(n_bootstrap=100)
    page = binary_result.to_html(tmp_path / "r.html")
    assert (tmp_path / "r.html").read_text() == page
    for anchor in BINARY_SECTIONS:
        assert f'<section id="{anchor}">' in page, anchor
    assert "PNEUMONIA" in page and "catsdogs-2conv" in page
    assert page.count("data:image/png;base64,") >= 7  # one per figure (errors only if any)
    _no_network(page)


def test_json_holds_the_report_figures(binary_result):
    d = json.loads(binary_result.to_json())
    fig = d["figures"]
    assert fig["roc"]["auc"] == pytest.approx(d["roc_auc"])
    assert fig["confusion"]["counts"] == d["confusion_matrix"]
    op = fig["operating_point"]
    assert op["sensitivity"] == pytest.approx(d["sensitivity"])
    assert op["tp"] + op["fn"] == d["per_class"]["PNEUMONIA"]["support"]
    assert len(fig["samples"]) == 9
    assert all(e["true"] != e["predicted"] for e in fig["worst_errors"])
    epochs = (binary_result.run and (Path(binary_result.run) / "history.csv").read_text().count("\n") - 1)
    assert fig["history"]["epoch"] == [float(e) for e in range(1, epochs + 1)]
    assert fig["data_fingerprint"]["sha256"]
    assert "test (this evaluation)" in fig["prevalence"]["marks"]


def test_multiclass_report_has_per_class_and_top_k():
    rng = np.random.default_rng(0)
    classes = ["cat", "dog", "bird", "fish"]
    y = np.arange(80) % 4
    logits = rng.normal(0, 1, (80, 4))
    logits[np.arange(80), y] += 1.5
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    images = rng.integers(0, 255, (80, 16, 16, 3), dtype=np.uint8)
    result = EvaluationResult(classes, y, probs, 0.5, [f"img{i}.png" for i in range(80)],
                              classification_metrics(y, probs, classes), "test", "synthetic", images)
    result.figures(n_bootstrap=50)
    page = result.to_html()
    for anchor in ("per-class", "roc-pr", "bootstrap", "calibration", "samples", "worst-errors"):
        assert f'<section id="{anchor}">' in page, anchor
    assert 'id="prevalence"' not in page and 'id="operating-point"' not in page
    assert "Top-k accuracy" in page and "macro" in page
    fig = result.figures()
    assert set(fig["roc"]["per_class"]) == set(classes)
    assert set(fig["bootstrap"]["metrics"]) == {"accuracy", "roc_auc", "macro_recall", "macro_f1"}
    assert fig["top_k_accuracy"]["2"] >= result.metrics["accuracy"]
    _no_network(page)


def test_report_without_images_says_so(binary_result):
    bare = EvaluationResult(binary_result.classes, binary_result.labels, binary_result.probs, 0.5,
                            binary_result.paths, binary_result.metrics, "test", "x")
    page = bare.to_html(n_bootstrap=20)
    assert "keep_images=True" in page


def test_evaluate_cli_writes_report_and_json(trained_run, tiny_folders, tmp_path):
    report, js = tmp_path / "r.html", tmp_path / "r.json"
    main(["evaluate", str(trained_run), str(tiny_folders), "--split", "test", "--report", str(report),
          "--json", str(js), "--bootstrap", "50", "--prevalence", "clinic=0.1", "-q"])
    assert '<section id="worst-errors">' in report.read_text()
    d = json.loads(js.read_text())
    assert d["figures"]["bootstrap"]["n_resamples"] == 50
    assert d["figures"]["prevalence"]["marks"]["clinic"] == 0.1


@pytest.mark.parametrize("argv", [["evaluate", "{run}", "{data}", "--prevalence", "2"],
                                  ["evaluate", "{tmp}/nothing", "{data}", "--report", "{tmp}/r.html"]])
def test_evaluate_cli_errors_exit_2(argv, trained_run, tiny_folders, tmp_path):
    args = [a.format(run=trained_run, data=tiny_folders, tmp=tmp_path) for a in argv]
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 2
