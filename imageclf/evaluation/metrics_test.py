import numpy as np
import pytest
from sklearn import metrics as skm

from imageclf.evaluation.metrics import (
    binary_roc_auc,
    classification_metrics,
    confusion_matrix,
    format_report,
    roc_auc,
    top_k_accuracy,
)


@pytest.fixture
def binary_case():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    p1 = np.clip(y * 0.3 + rng.random(200) * 0.7, 0, 1).round(2)  # ties on purpose
    return y, np.stack([1 - p1, p1], 1).astype(np.float64)


def test_auc_matches_sklearn_with_ties(binary_case):
    y, probs = binary_case
    assert binary_roc_auc(y, probs[:, 1]) == pytest.approx(skm.roc_auc_score(y, probs[:, 1]), abs=1e-12)


def test_auc_undefined_for_one_class():
    assert np.isnan(binary_roc_auc(np.ones(5), np.linspace(0, 1, 5)))


def test_multiclass_auc_matches_sklearn_ovr_macro():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 4, 300)
    logits = rng.normal(size=(300, 4)) + np.eye(4)[y] * 1.5
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    assert roc_auc(y, probs) == pytest.approx(skm.roc_auc_score(y, probs, multi_class="ovr"), abs=1e-12)
    for k in (2, 3):
        assert top_k_accuracy(y, probs, k) == pytest.approx(skm.top_k_accuracy_score(y, probs, k=k))


def test_confusion_and_per_class_match_sklearn(binary_case):
    y, probs = binary_case
    m = classification_metrics(y, probs, ["neg", "pos"], threshold=0.6)
    pred = (probs[:, 1] >= 0.6).astype(int)
    assert m["confusion_matrix"] == skm.confusion_matrix(y, pred).tolist()
    p, r, f, s = skm.precision_recall_fscore_support(y, pred)
    for i, c in enumerate(["neg", "pos"]):
        assert m["per_class"][c]["precision"] == pytest.approx(p[i])
        assert m["per_class"][c]["recall"] == pytest.approx(r[i])
        assert m["per_class"][c]["f1"] == pytest.approx(f[i])
        assert m["per_class"][c]["support"] == s[i]
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert m["sensitivity"] == pytest.approx(r[1]) and m["specificity"] == pytest.approx(r[0])
    assert m["log_loss"] == pytest.approx(skm.log_loss(y, np.clip(probs[:, 1], 1e-7, 1 - 1e-7)), rel=1e-6)


def test_threshold_is_on_class_one():
    probs = np.array([[0.4, 0.6], [0.7, 0.3]])
    assert classification_metrics([1, 0], probs, ["a", "b"], 0.5)["accuracy"] == 1.0
    assert classification_metrics([1, 0], probs, ["a", "b"], 0.65)["accuracy"] == 0.5


def test_confusion_matrix_counts():
    assert confusion_matrix([0, 1, 2, 2], [0, 2, 2, 1], 3).tolist() == [[1, 0, 0], [0, 0, 1], [0, 1, 1]]


def test_report_text_has_every_class_and_the_matrix(binary_case):
    y, probs = binary_case
    text = format_report(classification_metrics(y, probs, ["NORMAL", "PNEUMONIA"]), ["NORMAL", "PNEUMONIA"])
    for word in ("precision", "recall", "f1-score", "support", "NORMAL", "PNEUMONIA", "ROC-AUC",
                 "confusion matrix", "macro avg", "weighted avg"):
        assert word in text
