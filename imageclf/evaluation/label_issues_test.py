"""Label-issue ranking from out-of-fold probabilities: by hand, and cleanlab against the built-in rule."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from imageclf.evaluation.label_issues import confident_joint_issues, label_quality, rank_label_issues

PROBS = np.array([[0.9, 0.1, 0.0],   # label 0: fine
                  [0.2, 0.75, 0.05],  # label 0: the model says 1
                  [0.1, 0.8, 0.1],   # label 1: fine
                  [0.3, 0.6, 0.1],   # label 1: fine, less sure
                  [0.1, 0.1, 0.8],   # label 2: fine
                  [0.5, 0.1, 0.4]])  # label 2: the model leans to 0
LABELS = np.array([0, 0, 1, 1, 2, 2])


def test_scores_by_hand():
    assert label_quality(LABELS, PROBS).tolist() == [0.9, 0.2, 0.8, 0.6, 0.8, 0.4]
    # (p(given) - max p(other) + 1) / 2
    margin = label_quality(LABELS, PROBS, "normalized_margin")
    assert margin == pytest.approx([0.9, 0.225, 0.85, 0.65, 0.85, 0.45])


def test_confident_joint_by_hand():
    # Thresholds: mean p(j) over images labelled j: 0.55, 0.7, 0.6.
    # Image 1 (label 0): reaches class 1's 0.7 (0.75), not class 0's -> issue.
    # Image 5 (label 2): 0.5 < 0.55 and 0.4 < 0.6: no confident class, not an issue.
    # Image 3 (label 1): 0.6 < 0.7 and 0.3 < 0.55: nothing reached, not an issue.
    assert confident_joint_issues(LABELS, PROBS).tolist() == [False, True, False, False, False, False]


def test_cleanlab_and_the_built_in_rule_agree_on_clear_cases(monkeypatch):
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1, 2], 100)
    probs = np.full((300, 3), 0.05)
    probs[np.arange(300), labels] = 0.9
    wrong = rng.choice(300, 12, replace=False)
    probs[wrong] = 0.05
    probs[wrong, (labels[wrong] + 1) % 3] = 0.9
    probs += rng.uniform(0, 0.02, probs.shape)
    scores, issues, how = rank_label_issues(labels, probs)
    assert how.startswith("cleanlab")
    assert set(np.flatnonzero(issues)) == set(wrong)
    assert set(np.argsort(scores)[:12]) == set(wrong)
    monkeypatch.setitem(sys.modules, "cleanlab", None)  # as if not installed
    scores2, issues2, how2 = rank_label_issues(labels, probs)
    assert how2.startswith("built-in")
    assert np.allclose(scores, scores2) and np.array_equal(issues, issues2)
