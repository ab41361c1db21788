"""Ranking images by how likely their given label is wrong, from out-of-fold probabilities.

Confident learning (Northcutt et al. 2021): with `cleanlab <https://github.com/cleanlab/cleanlab>`_
installed (the ``review`` extra), its label-quality scores and ``find_label_issues``; without it,
the same self-confidence / normalized-margin scores and the confident-joint rule written out
here. Plain numpy (no torch), so ``imageclf review --help`` can name the rankings quickly;
:mod:`imageclf.training.review` computes the probabilities it ranks.
"""

from __future__ import annotations

import numpy as np

from imageclf.core.errors import ConfigError
from imageclf.evaluation.names import RANKINGS


def label_quality(labels: np.ndarray, probs: np.ndarray, rank_by: str = "self_confidence") -> np.ndarray:
    """Per image, how well its probabilities support its given label (0..1, low = suspect):
    ``self_confidence`` p(given), or ``normalized_margin`` (p(given) - max p(other) + 1) / 2."""
    if rank_by not in RANKINGS:
        raise ConfigError(f"--rank-by must be one of {', '.join(RANKINGS)}, got {rank_by!r}")
    labels = np.asarray(labels, np.int64)
    given = probs[np.arange(len(labels)), labels]
    if rank_by == "self_confidence":
        return given
    others = probs.copy()
    others[np.arange(len(labels)), labels] = -np.inf
    return (given - others.max(1) + 1) / 2


def confident_joint_issues(labels: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Confident learning's rule: class ``j``'s threshold is the mean p(j) of the images labelled
    ``j``; an image is an issue when, among the classes whose threshold it reaches, the most
    probable is not its given label."""
    labels = np.asarray(labels, np.int64)
    k = probs.shape[1]
    thresholds = np.array([probs[labels == j, j].mean() if (labels == j).any() else 1.0 for j in range(k)])
    confident = np.where(probs >= thresholds - 1e-12, probs, -1.0)
    has = confident.max(1) >= 0
    return has & (confident.argmax(1) != labels)


def rank_label_issues(labels: np.ndarray, probs: np.ndarray, rank_by: str = "self_confidence"
                      ) -> tuple[np.ndarray, np.ndarray, str]:
    """(label-quality score, is-an-issue mask, how) from out-of-fold probabilities: cleanlab's
    when it is installed, else the same ranking and :func:`confident_joint_issues`."""
    labels = np.asarray(labels, np.int64)
    probs = np.asarray(probs, np.float64)
    probs = probs / probs.sum(1, keepdims=True)
    try:  # cleanlab is optional (the 'review' extra)
        import cleanlab
        from cleanlab.filter import find_label_issues
        from cleanlab.rank import get_label_quality_scores
    except ImportError:
        return (label_quality(labels, probs, rank_by), confident_joint_issues(labels, probs),
                f"built-in confident learning (confident joint), ranked by {rank_by}")
    scores = get_label_quality_scores(labels, probs, method=rank_by)
    issues = find_label_issues(labels, probs, filter_by="prune_by_noise_rate")
    return (np.asarray(scores, np.float64), np.asarray(issues, bool),
            f"cleanlab {cleanlab.__version__} find_label_issues (prune_by_noise_rate), ranked by {rank_by}")
