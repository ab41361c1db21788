"""Classification metrics in plain numpy (checked against scikit-learn in the tests)."""

from __future__ import annotations

import numpy as np

from imageclf.core.decision import decide


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts [true class, predicted class]."""
    cm = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(cm, (np.asarray(y_true, np.int64), np.asarray(y_pred, np.int64)), 1)
    return cm


def binary_roc_auc(y_true: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U with tied scores counted half); NaN if one class."""
    y = np.asarray(y_true).astype(bool)
    s = np.asarray(scores, np.float64)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), np.float64)
    sorted_s = s[order]
    # average ranks over ties
    boundaries = np.flatnonzero(np.diff(sorted_s)) + 1
    starts = np.concatenate([[0], boundaries])
    ends = np.concatenate([boundaries, [len(s)]])
    avg = (starts + ends + 1) / 2.0
    ranks[order] = np.repeat(avg, ends - starts)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def roc_auc(y_true: np.ndarray, probs: np.ndarray) -> float:
    """Binary AUC of the positive class, or macro one-vs-rest AUC over classes present."""
    probs = np.asarray(probs)
    if probs.shape[1] == 2:
        return binary_roc_auc(y_true, probs[:, 1])
    aucs = [binary_roc_auc(np.asarray(y_true) == k, probs[:, k]) for k in range(probs.shape[1])]
    aucs = [a for a in aucs if not np.isnan(a)]
    return float(np.mean(aucs)) if aucs else float("nan")


def per_class_scores(cm: np.ndarray) -> dict[str, np.ndarray]:
    """Precision, recall, F1 and support per class from a confusion matrix (0 where undefined)."""
    tp = np.diag(cm).astype(np.float64)
    predicted = cm.sum(0).astype(np.float64)
    support = cm.sum(1).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        recall = np.where(support > 0, tp / support, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    return {"precision": precision, "recall": recall, "f1": f1, "support": support.astype(np.int64)}


def top_k_accuracy(y_true: np.ndarray, probs: np.ndarray, k: int) -> float:
    top = np.argsort(-np.asarray(probs), axis=1)[:, :k]
    return float((top == np.asarray(y_true)[:, None]).any(1).mean())


def log_loss(y_true: np.ndarray, probs: np.ndarray, eps: float = 1e-7) -> float:
    p = np.clip(np.asarray(probs, np.float64)[np.arange(len(y_true)), y_true], eps, 1.0)
    return float(-np.log(p).mean())


def classification_metrics(
    y_true: np.ndarray, probs: np.ndarray, classes: list[str], threshold: float = 0.5
) -> dict:
    """The figures ``imageclf evaluate`` prints and writes as JSON."""
    y_true = np.asarray(y_true, np.int64)
    y_pred = decide(probs, threshold)
    k = len(classes)
    cm = confusion_matrix(y_true, y_pred, k)
    scores = per_class_scores(cm)
    support = scores["support"]
    total = max(int(support.sum()), 1)
    per_class = {
        c: {"precision": float(scores["precision"][i]), "recall": float(scores["recall"][i]),
            "f1": float(scores["f1"][i]), "support": int(support[i])}
        for i, c in enumerate(classes)
    }
    out = {
        "n": int(len(y_true)),
        "accuracy": float((y_pred == y_true).mean()) if len(y_true) else float("nan"),
        "roc_auc": roc_auc(y_true, probs),
        "log_loss": log_loss(y_true, probs),
        "threshold": float(threshold) if k == 2 else None,
        "confusion_matrix": cm.tolist(),
        "per_class": per_class,
        "macro_avg": {m: float(scores[m].mean()) for m in ("precision", "recall", "f1")},
        "weighted_avg": {m: float((scores[m] * support).sum() / total)
                         for m in ("precision", "recall", "f1")},
    }
    if k == 2:
        tn, fp, fn, tp = cm.ravel()
        out["sensitivity"] = float(tp / (tp + fn)) if tp + fn else float("nan")
        out["specificity"] = float(tn / (tn + fp)) if tn + fp else float("nan")
    if k > 2:
        out["top_k_accuracy"] = {str(j): top_k_accuracy(y_true, probs, j) for j in (2, 3, 5) if j < k}
    return out


def format_report(metrics: dict, classes: list[str]) -> str:
    """A text classification report in scikit-learn's layout, plus AUC and the matrix."""
    width = max(12, *(len(c) for c in classes))
    lines = [f"{'':>{width}} {'precision':>9} {'recall':>9} {'f1-score':>9} {'support':>9}", ""]
    for c in classes:
        s = metrics["per_class"][c]
        lines.append(f"{c:>{width}} {s['precision']:9.4f} {s['recall']:9.4f} {s['f1']:9.4f} "
                     f"{s['support']:9d}")
    n = metrics["n"]
    lines += ["", f"{'accuracy':>{width}} {'':>9} {'':>9} {metrics['accuracy']:9.4f} {n:9d}"]
    for key, label in (("macro_avg", "macro avg"), ("weighted_avg", "weighted avg")):
        s = metrics[key]
        lines.append(f"{label:>{width}} {s['precision']:9.4f} {s['recall']:9.4f} {s['f1']:9.4f} {n:9d}")
    lines += ["", f"ROC-AUC: {metrics['roc_auc']:.4f}" + (
        f"   (threshold {metrics['threshold']:.3f} on p({classes[1]}); sensitivity "
        f"{metrics['sensitivity']:.4f}, specificity {metrics['specificity']:.4f})"
        if metrics.get("threshold") is not None else "")]
    cm = np.array(metrics["confusion_matrix"])
    cw = max(width, *(len(str(v)) for v in cm.ravel()))
    lines += ["", "confusion matrix (rows: true, columns: predicted)",
              f"{'':>{width}} " + " ".join(f"{c:>{cw}}" for c in classes)]
    for c, row in zip(classes, cm):
        lines.append(f"{c:>{width}} " + " ".join(f"{v:>{cw}d}" for v in row))
    return "\n".join(lines)
