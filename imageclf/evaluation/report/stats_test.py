"""The report's statistics against scikit-learn and against hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from imageclf.evaluation.report import stats


@pytest.fixture
def scored():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 300)
    # Rounded scores make ties, the case where curves most often go wrong.
    s = np.round(np.clip(0.35 * y + rng.normal(0.35, 0.2, 300), 0, 1), 2)
    return y, s


def test_roc_curve_and_auc_match_sklearn(scored):
    y, s = scored
    roc = stats.roc_curve(y, s)
    fpr, tpr, _ = skm.roc_curve(y, s)
    np.testing.assert_allclose(roc["fpr"], fpr)
    np.testing.assert_allclose(roc["tpr"], tpr)
    assert roc["auc"] == pytest.approx(skm.roc_auc_score(y, s))
    assert roc["auc"] == pytest.approx(np.trapezoid(roc["tpr"], roc["fpr"]))


def test_average_precision_matches_sklearn(scored):
    y, s = scored
    pr = stats.pr_curve(y, s)
    assert pr["ap"] == pytest.approx(skm.average_precision_score(y, s))
    assert pr["prevalence"] == pytest.approx(y.mean())
    assert pr["recall"][0] == 0 and pr["recall"][-1] == 1


def test_auc_by_hand():
    # positives 0.8, 0.4; negatives 0.6, 0.2: of the 4 pairs, 3 ranked right.
    roc = stats.roc_curve([1, 1, 0, 0], [0.8, 0.4, 0.6, 0.2])
    assert roc["auc"] == pytest.approx(0.75)
    # precision at recall 0.5 is 1, at recall 1 is 2/3: AP = 0.5 * 1 + 0.5 * 2/3
    assert stats.average_precision([1, 1, 0, 0], [0.8, 0.4, 0.6, 0.2]) == pytest.approx(5 / 6)


def test_operating_point_by_hand():
    y = np.array([1, 1, 1, 0, 0, 0, 0])
    p = np.array([0.9, 0.6, 0.3, 0.7, 0.2, 0.1, 0.4])
    op = stats.operating_point(y, p, 0.5)
    assert (op["tp"], op["fn"], op["fp"], op["tn"]) == (2, 1, 1, 3)
    assert op["sensitivity"] == pytest.approx(2 / 3)
    assert op["specificity"] == pytest.approx(3 / 4)
    assert op["ppv"] == pytest.approx(2 / 3)
    assert op["npv"] == pytest.approx(3 / 4)
    assert op["f1"] == pytest.approx(skm.f1_score(y, p >= 0.5))


def test_predictive_values_follow_bayes():
    ppv, npv = stats.predictive_values(0.9, 0.8, np.array([0.1, 0.5]))
    assert ppv[0] == pytest.approx(0.09 / (0.09 + 0.18))
    assert npv[0] == pytest.approx(0.72 / (0.72 + 0.01))
    assert ppv[1] == pytest.approx(0.9 / 1.1)
    # At the sample's own prevalence the curve gives the sample's PPV.
    y = np.r_[np.ones(30), np.zeros(70)]
    p = np.r_[np.linspace(0.3, 1, 30), np.linspace(0, 0.6, 70)]
    op = stats.operating_point(y, p, 0.5)
    ppv, npv = stats.predictive_values(op["sensitivity"], op["specificity"], np.array([0.3]))
    assert ppv[0] == pytest.approx(op["ppv"]) and npv[0] == pytest.approx(op["npv"])


def test_ece_and_brier_by_hand_and_sklearn():
    y = np.array([1, 0, 1, 1])
    p1 = np.array([0.05, 0.15, 0.95, 0.85])
    cal = stats.reliability(y, np.c_[1 - p1, p1], n_bins=2)
    # bin [0, .5): confidence 0.1, observed 0.5; bin [.5, 1]: confidence 0.9, observed 1.0
    assert cal["ece"] == pytest.approx(0.5 * 0.4 + 0.5 * 0.1)
    assert cal["brier"] == pytest.approx(skm.brier_score_loss(y, p1))
    assert [b["count"] for b in cal["bins"]] == [2, 2]


def test_multiclass_calibration_is_top_label():
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.6, 0.3, 0.1]])
    y = np.array([0, 2, 1])
    cal = stats.reliability(y, probs, n_bins=10)
    assert cal["kind"] == "top-label"
    # bins: 0.6 (wrong), 0.7 (right), 0.8 (wrong)
    assert cal["ece"] == pytest.approx((0.6 + 0.3 + 0.8) / 3)
    assert cal["brier"] == pytest.approx(np.mean(((probs - np.eye(3)[y]) ** 2).sum(1)))


def test_bootstrap_contains_estimate_and_is_reproducible(scored):
    y, s = scored
    probs = np.c_[1 - s, s]
    fns = stats.default_statistics(2, 0.5)
    a = stats.bootstrap_ci(y, probs, fns, n_resamples=200, seed=7)
    b = stats.bootstrap_ci(y, probs, fns, n_resamples=200, seed=7)
    c = stats.bootstrap_ci(y, probs, fns, n_resamples=200, seed=8)
    assert a == b
    assert a != c
    assert set(a["metrics"]) == {"accuracy", "roc_auc", "sensitivity", "specificity"}
    for m in a["metrics"].values():
        assert m["low"] <= m["estimate"] <= m["high"]
        assert m["high"] - m["low"] < 0.3
    assert a["metrics"]["roc_auc"]["estimate"] == pytest.approx(skm.roc_auc_score(y, s))


def test_multiclass_bootstrap_statistics():
    rng = np.random.default_rng(0)
    y = np.arange(90) % 3
    probs = rng.dirichlet(np.ones(3), 90)
    probs[np.arange(90), y] += 1
    probs /= probs.sum(1, keepdims=True)
    out = stats.bootstrap_ci(y, probs, stats.default_statistics(3, 0.5), n_resamples=50)
    assert out["metrics"]["macro_recall"]["estimate"] == pytest.approx(
        skm.balanced_accuracy_score(y, probs.argmax(1)))
    assert out["metrics"]["macro_f1"]["estimate"] == pytest.approx(
        skm.f1_score(y, probs.argmax(1), average="macro"))
