"""The statistics behind the report, in plain numpy (each checked against scikit-learn in tests).

Curves (ROC, precision-recall), the operating point at a threshold, bootstrap confidence
intervals, calibration (reliability bins, ECE, Brier) and what a fixed threshold's PPV and
NPV become at another prevalence.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from imageclf.core.decision import decide
from imageclf.evaluation.metrics import binary_roc_auc, roc_auc

# Curves are stored in the JSON and drawn; beyond this many points a line looks the same.
MAX_CURVE_POINTS = 600


def _ranked(y_true: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cumulative (tp, fp) at each distinct score, highest score first, and those scores."""
    y = np.asarray(y_true).astype(bool)
    s = np.asarray(scores, np.float64)
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]
    tp = np.cumsum(y)[last_of_tie]
    fp = np.cumsum(~y)[last_of_tie]
    return tp.astype(np.float64), fp.astype(np.float64), s[last_of_tie]


def _thin(*arrays: np.ndarray, limit: int = MAX_CURVE_POINTS) -> list[np.ndarray]:
    n = len(arrays[0])
    if n <= limit:
        return list(arrays)
    keep = np.unique(np.r_[np.linspace(0, n - 1, limit).round().astype(int), n - 1])
    return [a[keep] for a in arrays]


def roc_curve(y_true: np.ndarray, scores: np.ndarray) -> dict:
    """ROC points (fpr, tpr, threshold) from (0, 0) to (1, 1) and the AUC.

    Collinear points are dropped (as scikit-learn's ``drop_intermediate``); a score ``s``
    is a threshold in the ``p >= s`` sense.
    """
    tp, fp, thr = _ranked(y_true, scores)
    if len(tp) > 2:
        keep = np.r_[True, np.logical_or(np.diff(fp, 2) != 0, np.diff(tp, 2) != 0), True]
        tp, fp, thr = tp[keep], fp[keep], thr[keep]
    n_pos, n_neg = tp[-1] if len(tp) else 0.0, fp[-1] if len(fp) else 0.0
    tpr = np.r_[0.0, tp / n_pos] if n_pos else np.r_[0.0, np.zeros_like(tp)]
    fpr = np.r_[0.0, fp / n_neg] if n_neg else np.r_[0.0, np.zeros_like(fp)]
    thr = np.r_[np.inf, thr]
    fpr, tpr, thr = _thin(fpr, tpr, thr)
    return {"fpr": fpr.tolist(), "tpr": tpr.tolist(),
            "thresholds": [None if np.isinf(t) else float(t) for t in thr],
            "auc": binary_roc_auc(y_true, scores)}


def average_precision(y_true: np.ndarray, scores: np.ndarray) -> float:
    """Area under the precision-recall curve as a step sum (scikit-learn's average precision)."""
    tp, fp, _ = _ranked(y_true, scores)
    if not len(tp) or tp[-1] == 0:
        return float("nan")
    precision = tp / (tp + fp)
    recall = tp / tp[-1]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def pr_curve(y_true: np.ndarray, scores: np.ndarray) -> dict:
    """Precision-recall points (recall rising), average precision and the positive rate."""
    tp, fp, thr = _ranked(y_true, scores)
    y = np.asarray(y_true).astype(bool)
    if not len(tp) or tp[-1] == 0:
        return {"recall": [], "precision": [], "thresholds": [], "ap": float("nan"),
                "prevalence": float(y.mean()) if len(y) else float("nan")}
    precision = np.r_[1.0, tp / (tp + fp)]
    recall = np.r_[0.0, tp / tp[-1]]
    thr = np.r_[np.inf, thr]
    recall, precision, thr = _thin(recall, precision, thr)
    return {"recall": recall.tolist(), "precision": precision.tolist(),
            "thresholds": [None if np.isinf(t) else float(t) for t in thr],
            "ap": average_precision(y_true, scores), "prevalence": float(y.mean())}


def _ratio(a: float, b: float) -> float:
    return float(a / b) if b else float("nan")


def operating_point(y_true: np.ndarray, p1: np.ndarray, threshold: float) -> dict:
    """Counts and rates when ``p1 >= threshold`` calls an image positive (class 1)."""
    y = np.asarray(y_true).astype(bool)
    pred = np.asarray(p1) >= threshold
    tp, fp = int((pred & y).sum()), int((pred & ~y).sum())
    fn, tn = int((~pred & y).sum()), int((~pred & ~y).sum())
    sens, ppv = _ratio(tp, tp + fn), _ratio(tp, tp + fp)
    return {"threshold": float(threshold), "tp": tp, "fp": fp, "tn": tn, "fn": fn,
            "sensitivity": sens, "specificity": _ratio(tn, tn + fp), "ppv": ppv,
            "npv": _ratio(tn, tn + fn), "f1": _ratio(2 * tp, 2 * tp + fp + fn),
            "accuracy": _ratio(tp + tn, len(y)), "prevalence": _ratio(int(y.sum()), len(y))}


def predictive_values(sensitivity: float, specificity: float, prevalence: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray]:
    """PPV and NPV at ``prevalence`` for a test of fixed sensitivity and specificity (Bayes)."""
    p = np.asarray(prevalence, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        ppv = sensitivity * p / (sensitivity * p + (1 - specificity) * (1 - p))
        npv = specificity * (1 - p) / (specificity * (1 - p) + (1 - sensitivity) * p)
    return ppv, npv


def prevalence_curve(sensitivity: float, specificity: float, points: int = 99) -> dict:
    grid = np.linspace(0.01, 0.99, points)
    ppv, npv = predictive_values(sensitivity, specificity, grid)
    return {"prevalence": grid.round(4).tolist(), "ppv": np.nan_to_num(ppv, nan=0.0).tolist(),
            "npv": np.nan_to_num(npv, nan=0.0).tolist()}


def reliability(y_true: np.ndarray, probs: np.ndarray, n_bins: int = 10) -> dict:
    """Reliability bins, expected calibration error and Brier score.

    Two classes: ``p(class 1)`` against the observed fraction of class 1, and the Brier
    score ``mean((p1 - y)^2)`` (scikit-learn's ``brier_score_loss``). More classes: the
    top-label confidence against accuracy (Guo et al. 2017), and the multi-class Brier
    score ``mean(sum_k (p_k - y_k)^2)``. Equal-width bins, the last one closed.
    """
    y = np.asarray(y_true, np.int64)
    probs = np.asarray(probs, np.float64)
    if probs.shape[1] == 2:
        conf, hit = probs[:, 1], (y == 1).astype(np.float64)
        brier = float(np.mean((conf - hit) ** 2)) if len(y) else float("nan")
        kind = "positive"
    else:
        conf, hit = probs.max(1), (probs.argmax(1) == y).astype(np.float64)
        onehot = np.eye(probs.shape[1])[y]
        brier = float(np.mean(((probs - onehot) ** 2).sum(1))) if len(y) else float("nan")
        kind = "top-label"
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1], right=False), 0, n_bins - 1)
    bins, ece = [], 0.0
    for b in range(n_bins):
        inside = which == b
        n = int(inside.sum())
        mean_conf = float(conf[inside].mean()) if n else None
        frac = float(hit[inside].mean()) if n else None
        if n:
            ece += n / len(y) * abs(mean_conf - frac)
        bins.append({"low": float(edges[b]), "high": float(edges[b + 1]), "count": n,
                     "confidence": mean_conf, "observed": frac})
    return {"kind": kind, "n_bins": n_bins, "bins": bins,
            "ece": float(ece) if len(y) else float("nan"), "brier": brier}


Statistic = Callable[[np.ndarray, np.ndarray], float]


def bootstrap_ci(y_true: np.ndarray, probs: np.ndarray, statistics: dict[str, Statistic], *,
                 n_resamples: int = 1000, level: float = 0.95, seed: int = 0) -> dict:
    """Percentile bootstrap intervals: resample images with replacement, recompute each figure.

    The same resamples serve every statistic, so the intervals are comparable; the same
    seed gives the same intervals. Resamples where a figure is undefined (e.g. no positive
    image drawn) are left out of that figure's interval.
    """
    y = np.asarray(y_true)
    probs = np.asarray(probs)
    rng = np.random.default_rng(seed)
    n = len(y)
    values = {k: np.empty(n_resamples) for k in statistics}
    for r in range(n_resamples):
        idx = rng.integers(0, n, n)
        for k, fn in statistics.items():
            values[k][r] = fn(y[idx], probs[idx])
    alpha = (1 - level) / 2
    out = {}
    for k, fn in statistics.items():
        v = values[k][~np.isnan(values[k])]
        low, high = (np.quantile(v, [alpha, 1 - alpha]) if len(v) else (np.nan, np.nan))
        out[k] = {"estimate": float(fn(y, probs)), "low": float(low), "high": float(high),
                  "valid_resamples": int(len(v))}
    return {"n_resamples": n_resamples, "level": level, "seed": seed, "metrics": out}


def default_statistics(num_classes: int, threshold: float) -> dict[str, Statistic]:
    """The figures the report gives intervals for: accuracy and AUC, plus sensitivity and
    specificity (two classes) or macro recall and macro F1 (more)."""

    def accuracy(y, p):
        return float((decide(p, threshold) == y).mean())

    def auc(y, p):
        return roc_auc(y, p)

    stats: dict[str, Statistic] = {"accuracy": accuracy, "roc_auc": auc}
    if num_classes == 2:
        def sensitivity(y, p):
            pos = y == 1
            return float((p[pos, 1] >= threshold).mean()) if pos.any() else float("nan")

        def specificity(y, p):
            neg = y == 0
            return float((p[neg, 1] < threshold).mean()) if neg.any() else float("nan")

        stats.update(sensitivity=sensitivity, specificity=specificity)
    else:
        def _counts(y, p):
            k = p.shape[1]
            pred = p.argmax(1)
            tp = np.bincount(y[pred == y], minlength=k)
            return tp, np.bincount(pred, minlength=k), np.bincount(y, minlength=k)

        def macro_recall(y, p):
            tp, _, support = _counts(y, p)
            present = support > 0
            return float(np.mean(tp[present] / support[present]))

        def macro_f1(y, p):
            tp, predicted, support = _counts(y, p)
            denom = predicted + support
            return float(np.mean(np.divide(2 * tp, denom, out=np.zeros(len(tp)), where=denom > 0)))

        stats.update(macro_recall=macro_recall, macro_f1=macro_f1)
    return stats
