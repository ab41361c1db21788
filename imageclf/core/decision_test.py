"""The shared decision rule: a threshold on p1 for two classes, the most probable class otherwise."""

from __future__ import annotations

import numpy as np

from imageclf.core.decision import decide, num_outputs


def test_two_classes_are_positive_from_the_threshold_on():
    probs = np.array([[0.7, 0.3], [0.6, 0.4], [0.2, 0.8]])
    assert decide(probs).tolist() == [0, 0, 1]
    assert decide(probs, threshold=0.3).tolist() == [1, 1, 1]  # p1 == threshold counts as positive
    assert decide(probs, threshold=0.9).tolist() == [0, 0, 0]


def test_more_classes_take_the_most_probable_whatever_the_threshold():
    probs = np.array([[0.2, 0.5, 0.3], [0.6, 0.1, 0.3]])
    assert decide(probs, threshold=0.99).tolist() == [1, 0]


def test_two_classes_are_one_output_more_are_one_each():
    assert [num_outputs(k) for k in (2, 3, 10)] == [1, 3, 10]
