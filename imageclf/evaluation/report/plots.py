"""Matplotlib drawings (Agg, headless) of the report's figure dicts, returned as PNG bytes.

Each function draws one figure from the numbers :mod:`imageclf.evaluation.report.figures` computed;
none computes a statistic of its own.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

import numpy as np

# A palette chosen for contrast on white and for colour-blind readers (Okabe-Ito).
BLUE, ORANGE, GREEN, RED, PURPLE, GREY = "#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#666666"
CLASS_COLOURS = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442",
                 "#000000", "#8C564B", "#7F7F7F"]
DPI = 110


def _pyplot():
    """matplotlib.pyplot, headless, imported at the first plot: a documented lazy import of a
    heavy dependency (~0.5 s of start-up that predicting and serving never need)."""
    import matplotlib

    matplotlib.use("Agg")  # headless: no display is ever needed
    import matplotlib.pyplot as plt

    return plt


def class_colour(k: int) -> str:
    return CLASS_COLOURS[k % len(CLASS_COLOURS)]


def to_png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    _pyplot().close(fig)
    return buf.getvalue()


def _fmt(x: float | None, digits: int = 3) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def history_plot(history: dict[str, list[float]], best_epoch: int | None = None) -> bytes:
    """Loss and accuracy (and validation AUC) per epoch, training against validation; the
    epoch whose weights were kept is marked."""
    epochs = history.get("epoch") or list(range(1, len(next(iter(history.values()))) + 1))
    fig, axes = _pyplot().subplots(1, 2, figsize=(11, 3.8))
    for ax, metric, title in ((axes[0], "loss", "Loss"), (axes[1], "accuracy", "Accuracy")):
        if metric in history:
            ax.plot(epochs, history[metric], "-o", color=BLUE, label=f"training {metric}", ms=4)
        if f"val_{metric}" in history:
            ax.plot(epochs, history[f"val_{metric}"], "-s", color=ORANGE, label=f"validation {metric}",
                    ms=4)
        if metric == "accuracy" and "val_auc" in history:
            ax.plot(epochs, history["val_auc"], "--^", color=GREEN, label="validation ROC-AUC", ms=4)
        if best_epoch:
            ax.axvline(best_epoch, ls=":", color=RED, label=f"kept weights (epoch {best_epoch})")
        ax.set(title=f"{title} per epoch", xlabel="epoch", ylabel=metric if metric == "loss" else "value")
        ax.xaxis.set_major_locator(_pyplot().MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return to_png(fig)


def _heatmap(ax, values: np.ndarray, classes: list[str], fmt, title: str, cmap: str) -> None:
    im = ax.imshow(values, cmap=cmap, vmin=0, vmax=max(float(values.max()), 1e-9))
    k = len(classes)
    ax.set_xticks(range(k), classes, rotation=45 if k > 3 else 0, ha="right" if k > 3 else "center")
    ax.set_yticks(range(k), classes)
    ax.set(xlabel="predicted class", ylabel="true class", title=title)
    limit = values.max() * 0.6
    size = 10 if k <= 4 else 7
    for i in range(k):
        for j in range(k):
            ax.text(j, i, fmt(values[i, j]), ha="center", va="center", fontsize=size,
                    color="white" if values[i, j] > limit else "black")
    _pyplot().colorbar(im, ax=ax, fraction=0.046, pad=0.04)


def confusion_plot(counts: Sequence, row_normalised: Sequence, classes: list[str]) -> bytes:
    """The confusion matrix twice: counts, and each row as a fraction of its true class."""
    k = len(classes)
    side = 4.4 if k <= 4 else 6.5
    fig, axes = _pyplot().subplots(1, 2, figsize=(2 * side + 1, side))
    _heatmap(axes[0], np.asarray(counts, float), classes, lambda v: f"{int(v)}", "Counts", "Blues")
    _heatmap(axes[1], np.asarray(row_normalised, float), classes, lambda v: f"{v:.2f}",
             "Row-normalised (recall per true class)", "Oranges")
    fig.tight_layout()
    return to_png(fig)


def _roc_axes(ax, title: str) -> None:
    ax.plot([0, 1], [0, 1], ":", color=GREY, label="chance")
    ax.set(xlim=(-0.01, 1.01), ylim=(-0.01, 1.01), xlabel="false positive rate (1 - specificity)",
           ylabel="true positive rate (sensitivity)", title=title)
    ax.grid(alpha=0.3)


def curves_plot(figures: dict, classes: list[str]) -> bytes:
    """ROC and precision-recall curves side by side, the operating point marked (two classes)."""
    fig, (ax_roc, ax_pr) = _pyplot().subplots(1, 2, figsize=(11, 4.6))
    roc, pr = figures["roc"], figures["pr"]
    if "per_class" in roc:
        _roc_axes(ax_roc, f"ROC, one class vs rest (macro AUC {_fmt(roc['macro_auc'])})")
        for k, c in enumerate(classes):
            if c in roc["per_class"]:
                r = roc["per_class"][c]
                ax_roc.plot(r["fpr"], r["tpr"], color=class_colour(k), lw=1.4,
                            label=f"{c} ({_fmt(r['auc'])})")
                p = pr["per_class"][c]
                ax_pr.plot(p["recall"], p["precision"], color=class_colour(k), lw=1.4,
                           label=f"{c} ({_fmt(p['ap'])})", drawstyle="steps-pre")
        ax_pr.set_title(f"Precision-recall, one class vs rest (macro AP {_fmt(pr['macro_ap'])})")
    else:
        positive = figures.get("positive_class", classes[1])
        op = figures["operating_point"]
        _roc_axes(ax_roc, f"ROC for {positive} (AUC {_fmt(roc['auc'])})")
        ax_roc.plot(roc["fpr"], roc["tpr"], color=BLUE, lw=2, label=f"model (AUC {_fmt(roc['auc'])})")
        if op["specificity"] is not None and op["sensitivity"] is not None:
            ax_roc.plot(1 - op["specificity"], op["sensitivity"], "o", color=RED, ms=8,
                        label=f"threshold {op['threshold']:.3f}")
        # Average precision weights each recall step by the precision at its end: steps-pre.
        ax_pr.plot(pr["recall"], pr["precision"], color=BLUE, lw=2, drawstyle="steps-pre",
                   label=f"model (AP {_fmt(pr['ap'])})")
        if pr.get("prevalence") is not None:
            ax_pr.axhline(pr["prevalence"], ls=":", color=GREY, label=f"chance ({pr['prevalence']:.2f})")
        if op["ppv"] is not None and op["sensitivity"] is not None:
            ax_pr.plot(op["sensitivity"], op["ppv"], "o", color=RED, ms=8,
                       label=f"threshold {op['threshold']:.3f}")
        ax_pr.set_title(f"Precision-recall for {positive} (AP {_fmt(pr['ap'])})")
    ax_pr.set(xlim=(-0.01, 1.01), ylim=(-0.01, 1.02), xlabel="recall (sensitivity)", ylabel="precision (PPV)")
    ax_pr.grid(alpha=0.3)
    for ax in (ax_roc, ax_pr):
        ax.legend(fontsize=7 if len(classes) > 4 else 8, loc="lower left" if ax is ax_pr else "lower right")
    fig.tight_layout()
    return to_png(fig)


def reliability_plot(cal: dict, positive: str | None) -> bytes:
    """Reliability diagram (mean predicted probability against observed frequency per bin)
    above a histogram of how many images fall in each bin."""
    fig, (ax, ax_n) = _pyplot().subplots(2, 1, figsize=(5.6, 6.2), gridspec_kw={"height_ratios": [3, 1]},
                                   sharex=True)
    bins = cal["bins"]
    centres = [(b["low"] + b["high"]) / 2 for b in bins]
    width = bins[0]["high"] - bins[0]["low"]
    observed = [b["observed"] if b["observed"] is not None else 0.0 for b in bins]
    ax.bar(centres, observed, width=width * 0.9, color=BLUE, alpha=0.75, edgecolor="black",
           label="observed frequency" if positive else "accuracy")
    conf = [(b["confidence"], b["observed"]) for b in bins if b["count"]]
    if conf:
        ax.plot(*zip(*conf), "o-", color=ORANGE, label="bin mean")
    ax.plot([0, 1], [0, 1], "--", color=GREY, label="perfect calibration")
    what = f"p({positive})" if positive else "top-label confidence"
    ax.set(ylim=(0, 1), ylabel=f"fraction {positive}" if positive else "accuracy",
           title=f"Reliability of {what}\nECE {_fmt(cal['ece'])}, Brier {_fmt(cal['brier'])}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    ax_n.bar(centres, [b["count"] for b in bins], width=width * 0.9, color=GREY)
    ax_n.set(xlabel=f"predicted {what}", ylabel="images", xlim=(0, 1))
    fig.tight_layout()
    return to_png(fig)


def prevalence_plot(prev: dict, positive: str) -> bytes:
    """PPV and NPV of the fixed threshold as the share of positives in the population changes."""
    fig, ax = _pyplot().subplots(figsize=(7.5, 4.4))
    ax.plot(prev["prevalence"], prev["ppv"], color=RED, lw=2, label="PPV (positive predictive value)")
    ax.plot(prev["prevalence"], prev["npv"], color=BLUE, lw=2, label="NPV (negative predictive value)")
    styles = ["-", "--", "-.", ":"]
    for i, (name, p) in enumerate(prev["marks"].items()):
        ax.axvline(p, ls=styles[i % len(styles)], color=GREY if i else GREEN, lw=1.2,
                   label=f"{name}: {p:.1%} {positive}")
    ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel=f"prevalence of {positive}", ylabel="predictive value",
           title=f"PPV / NPV against prevalence at threshold {prev['threshold']:.3f}\n"
                 f"(sensitivity {prev['sensitivity']:.3f}, specificity {prev['specificity']:.3f} held fixed)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower center")
    return to_png(fig)


def per_class_plot(per_class: dict, classes: list[str]) -> bytes:
    """Precision, recall and F1 per class, grouped bars."""
    fig, ax = _pyplot().subplots(figsize=(max(6.0, 0.8 * len(classes) + 2), 3.8))
    x = np.arange(len(classes))
    for j, (metric, colour) in enumerate((("precision", BLUE), ("recall", ORANGE), ("f1", GREEN))):
        ax.bar(x + (j - 1) * 0.27, [per_class[c][metric] for c in classes], 0.27, color=colour, label=metric)
    many = len(classes) > 4
    ax.set_xticks(x, classes, rotation=30 if many else 0, ha="right" if many else "center")
    ax.set(ylim=(0, 1.05), ylabel="score", title="Per-class precision, recall and F1")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, ncols=3, loc="lower right")
    return to_png(fig)


def _show(ax, image: np.ndarray) -> None:
    img = np.asarray(image)
    if img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=255 if img.dtype == np.uint8 else 1)
    ax.set_xticks([])
    ax.set_yticks([])


def image_grid(images: Sequence[np.ndarray], titles: Sequence[str], *, cols: int = 3,
               title: str = "", colours: Sequence[str] | None = None, cell: float = 2.6) -> bytes:
    """Images in a grid, each with its own title (coloured, e.g. green right / red wrong)."""
    n = max(len(images), 1)
    cols = min(cols, n)
    rows = -(-n // cols)
    fig, axes = _pyplot().subplots(rows, cols, figsize=(cell * cols, cell * rows + (0.5 if title else 0)),
                             squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for i, (img, t) in enumerate(zip(images, titles)):
        ax = axes.ravel()[i]
        ax.axis("on")
        _show(ax, img)
        ax.set_title(t, fontsize=8, color=(colours[i] if colours else "black"))
        for spine in ax.spines.values():
            spine.set_edgecolor(colours[i] if colours else GREY)
            spine.set_linewidth(2 if colours else 0.5)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return to_png(fig)


def bootstrap_plot(boot: dict) -> bytes:
    """Each figure's point estimate with its bootstrap interval (a forest plot)."""
    items = list(boot["metrics"].items())
    fig, ax = _pyplot().subplots(figsize=(6.5, 0.55 * len(items) + 1.2))
    for i, (_, m) in enumerate(items):
        if m["low"] is not None and m["high"] is not None:
            ax.plot([m["low"], m["high"]], [i, i], color=BLUE, lw=3)
        if m["estimate"] is not None:
            ax.plot(m["estimate"], i, "o", color=RED, ms=7)
    ax.set_yticks(range(len(items)), [n.replace("_", " ") for n, _ in items])
    ax.invert_yaxis()
    ax.set(xlabel="value", title=f"{boot['level']:.0%} bootstrap intervals ({boot['n_resamples']} resamples)")
    ax.grid(axis="x", alpha=0.3)
    return to_png(fig)


def feature_grid(maps: np.ndarray, title: str, max_channels: int = 32) -> bytes:
    """The first ``max_channels`` channels of one layer's activations (C, h, w), each scaled to
    its own range (as the seed articles' feature-map plots)."""
    c = min(len(maps), max_channels)
    cols = min(8, c)
    rows = -(-c // cols)
    fig, axes = _pyplot().subplots(rows, cols, figsize=(1.5 * cols, 1.5 * rows + 0.6), squeeze=False)
    for i, ax in enumerate(axes.ravel()):
        ax.axis("off")
        if i < c:
            ax.imshow(maps[i], cmap="viridis")
            ax.set_title(f"ch {i}", fontsize=7)
    fig.suptitle(title + (f" - first {c} shown" if c < len(maps) else ""), fontsize=9)
    fig.tight_layout()
    return to_png(fig)


def class_counts_plot(counts: dict[str, dict[str, int]], classes: list[str]) -> bytes:
    """Images per class, one group of bars per split, with the count on each bar."""
    splits = list(counts)
    fig, ax = _pyplot().subplots(figsize=(max(6.0, 1.1 * len(classes) * max(1, len(splits)) / 2 + 3), 3.8))
    x = np.arange(len(classes))
    width = 0.8 / max(len(splits), 1)
    for j, s in enumerate(splits):
        values = [counts[s].get(c, 0) for c in classes]
        bars = ax.bar(x + (j - (len(splits) - 1) / 2) * width, values, width, color=class_colour(j), label=s)
        ax.bar_label(bars, fontsize=7)
    many = len(classes) > 4
    ax.set_xticks(x, classes, rotation=30 if many else 0, ha="right" if many else "center")
    ax.set(ylabel="images", title="Images per class and split")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, title="split")
    return to_png(fig)


def size_scatter(sizes: dict[str, list[list[int]]]) -> bytes:
    """Width against height of every image (point area by how many share a size), mean marked."""
    fig, ax = _pyplot().subplots(figsize=(6.5, 5.2))
    all_w, all_h, all_n = [], [], []
    for j, (split, rows) in enumerate(sizes.items()):
        if not rows:
            continue
        a = np.asarray(rows, np.float64)
        ax.scatter(a[:, 0], a[:, 1], s=np.clip(6 * np.sqrt(a[:, 2]), 6, 200), alpha=0.45,
                   color=class_colour(j), label=f"{split} ({int(a[:, 2].sum())} images)", edgecolors="none")
        all_w += a[:, 0].tolist()
        all_h += a[:, 1].tolist()
        all_n += a[:, 2].tolist()
    if all_n:
        n = np.asarray(all_n)
        mw, mh = np.average(all_w, weights=n), np.average(all_h, weights=n)
        ax.plot(mw, mh, "X", color=RED, ms=14, mec="black", label=f"mean {mw:.0f} x {mh:.0f}")
    ax.set(xlabel="width (px)", ylabel="height (px)", title="Image sizes")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return to_png(fig)


def lr_find_plot(lrs: Sequence[float], losses: Sequence[float], suggestion: float) -> bytes:
    """The learning-rate finder's smoothed loss against the learning rate (log axis), the
    suggested rate marked (fastai's lr_find plot)."""
    fig, ax = _pyplot().subplots(figsize=(6.5, 4.0))
    ax.plot(lrs, losses, color=BLUE)
    ax.axvline(suggestion, color=ORANGE, linestyle="--", label=f"suggested {suggestion:.2e}")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss (smoothed)")
    ax.legend()
    ax.grid(alpha=0.3)
    return to_png(fig)
