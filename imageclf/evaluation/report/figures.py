"""Every number the evaluation report shows, as one JSON-ready dict.

``evaluate --json`` writes this dict and ``--report`` draws it, so a plot and the JSON
beside it can never disagree. Images are referred to by index and path only.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from imageclf.core.decision import decide
from imageclf.evaluation.names import DEFAULT_BOOTSTRAP
from imageclf.evaluation.report import stats
from imageclf.evaluation.report.subgroups import subgroup_figures
from imageclf.modelfile.artifact import CONFIG_FILE, HISTORY_FILE


def read_history(run_dir: str | Path | None) -> dict[str, list[float]]:
    """RUN/history.csv as columns of floats (empty when the run has none)."""
    if not run_dir:
        return {}
    path = Path(run_dir) / HISTORY_FILE
    if not path.is_file():
        return {}
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    columns: dict[str, list[float]] = {}
    for key in rows[0] if rows else []:
        try:
            columns[key] = [float(r[key]) for r in rows]
        except (TypeError, ValueError):
            continue
    return columns


def read_run_config(run_dir: str | Path | None) -> dict[str, Any]:
    """RUN/config.json as stored (empty when unknown)."""
    if not run_dir:
        return {}
    path = Path(run_dir) / CONFIG_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def _finite(x: float | None) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else x


def image_entry(result, i: int) -> dict:
    probs = result.probs[i]
    pred = int(decide(probs[None], result.threshold)[0])
    true = int(result.labels[i])
    return {"index": int(i), "path": result.paths[i], "true": result.classes[true],
            "predicted": result.classes[pred], "p_true": float(probs[true]),
            "p_predicted": float(probs[pred]),
            **({"p_positive": float(probs[1])} if len(result.classes) == 2 else {})}


def sample_indices(n: int, count: int, seed: int) -> list[int]:
    """A seeded random choice of images for the 3 x 3 grid (sorted, so in data order)."""
    if n <= count:
        return list(range(n))
    return sorted(np.random.default_rng(seed).choice(n, count, replace=False).tolist())


def worst_errors(result, count: int) -> list[int]:
    """Misclassified images, most confidently wrong first (lowest probability of the truth)."""
    wrong = np.flatnonzero(result.predictions != result.labels)
    p_true = result.probs[wrong, result.labels[wrong]]
    return wrong[np.argsort(p_true, kind="mergesort")][:count].tolist()


def per_class_curves(labels: np.ndarray, probs: np.ndarray, classes: list[str]) -> dict:
    """One-vs-rest ROC and PR curves per class (for more than two classes)."""
    roc, pr = {}, {}
    for k, c in enumerate(classes):
        y = labels == k
        if y.any() and (~y).any():
            roc[c] = stats.roc_curve(y, probs[:, k])
            pr[c] = stats.pr_curve(y, probs[:, k])
    aucs = [v["auc"] for v in roc.values()]
    aps = [v["ap"] for v in pr.values()]
    return {"roc": roc, "pr": pr, "macro_auc": float(np.mean(aucs)) if aucs else None,
            "macro_ap": float(np.mean(aps)) if aps else None}


def prevalence_marks(result, op: dict, asked: dict[str, float] | None = None) -> dict[str, float]:
    """Prevalences to mark on the PPV/NPV curve: this evaluation's, each split's, and ``asked``."""
    marks = {f"{result.split} (this evaluation)": op["prevalence"], **(asked or {})}
    for split, counts in (getattr(result, "split_counts", None) or {}).items():
        total = sum(counts)
        if split != result.split and total and len(counts) == 2:
            marks[split] = counts[1] / total
    return marks


def compute_figures(result, *, run_dir: str | Path | None = None, n_bootstrap: int = DEFAULT_BOOTSTRAP,
                    seed: int = 0, n_samples: int = 9, n_errors: int = 12, n_bins: int = 10,
                    prevalences: dict[str, float] | None = None) -> dict:
    """All report figures for an :class:`~imageclf.evaluation.evaluate.EvaluationResult`.

    ``run_dir`` (default: the result's model folder) adds the run's config, data
    fingerprint and training history. Bootstrap intervals use ``n_bootstrap`` resamples
    drawn with ``seed``. ``prevalences`` (name -> share of the positive class) are marked
    on the PPV/NPV curve besides the splits' own, e.g. ``{"clinic": 0.1}``.
    """
    run_dir = run_dir if run_dir is not None else getattr(result, "run", "")
    y, probs, classes = result.labels, np.asarray(result.probs, np.float64), result.classes
    binary = len(classes) == 2
    config = read_run_config(run_dir)
    out: dict[str, Any] = {
        "run": {k: config.get(k) for k in ("name", "architecture", "architecture_kwargs", "classes",
                                           "preprocessing", "threshold", "temperature", "tta",
                                           "created", "versions", "weights_sha256", "metrics")
                if k in config},
        "recipe": config.get("recipe", {}),
        "data_fingerprint": config.get("data", {}),
        "evaluated_on": {"source": result.source, "split": result.split, "n": int(len(y)),
                         "class_counts": dict(zip(classes, np.bincount(y, minlength=len(classes))
                                                  .tolist())),
                         "skipped": len(result.skipped), "identical_to_training": result.overlap},
        "history": read_history(run_dir),
        "confusion": {"counts": result.metrics["confusion_matrix"],
                      "row_normalised": _row_normalise(result.metrics["confusion_matrix"])},
        "calibration": stats.reliability(y, probs, n_bins),
        "bootstrap": stats.bootstrap_ci(y, probs, stats.default_statistics(len(classes), result.threshold),
                                        n_resamples=n_bootstrap, seed=seed),
        "samples": [image_entry(result, i) for i in sample_indices(len(y), n_samples, seed)],
        "worst_errors": [image_entry(result, i) for i in worst_errors(result, n_errors)],
    }
    if binary:
        p1 = probs[:, 1]
        op = stats.operating_point(y, p1, result.threshold)
        out["positive_class"] = classes[1]
        out["operating_point"] = op
        out["roc"] = stats.roc_curve(y == 1, p1)
        out["pr"] = stats.pr_curve(y == 1, p1)
        if not (math.isnan(op["sensitivity"]) or math.isnan(op["specificity"])):
            out["prevalence"] = {**stats.prevalence_curve(op["sensitivity"], op["specificity"]),
                                 "sensitivity": op["sensitivity"], "specificity": op["specificity"],
                                 "threshold": result.threshold,
                                 "marks": prevalence_marks(result, op, prevalences)}
    if getattr(result, "subgroups", None) is not None:
        out["subgroups"] = subgroup_figures(y, probs, result.threshold, result.subgroups,
                                            n_resamples=n_bootstrap, seed=seed)
    if not binary:
        curves = per_class_curves(y, probs, classes)
        out["roc"] = {"per_class": curves["roc"], "macro_auc": curves["macro_auc"]}
        out["pr"] = {"per_class": curves["pr"], "macro_ap": curves["macro_ap"]}
        out["top_k_accuracy"] = result.metrics.get("top_k_accuracy", {})
    return _clean(out)


def _row_normalise(cm: list[list[int]]) -> list[list[float]]:
    a = np.asarray(cm, np.float64)
    rows = a.sum(1, keepdims=True)
    return np.divide(a, rows, out=np.zeros_like(a), where=rows > 0).tolist()


def _clean(x):
    """NaN and infinity become null, so the JSON is strict and the HTML shows a dash."""
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_clean(v) for v in x]
    if isinstance(x, float):
        return _finite(x) if math.isfinite(x) or math.isnan(x) else None
    if isinstance(x, np.generic):
        return _clean(x.item())
    return x
