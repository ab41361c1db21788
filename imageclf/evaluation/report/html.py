"""The evaluation report: one self-contained HTML page drawn from :func:`compute_figures`'s dict."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import yaml

from imageclf.evaluation.report import plots
from imageclf.evaluation.report.page import document, esc, fmt, image, key_values, table
from imageclf.evaluation.report.stats import predictive_values
from imageclf.modelfile.card import CARD_FILE

POSITIVE_NOTE = ("Sensitivity = recall of {pos}; specificity = recall of {neg}; PPV = precision of "
                 "{pos}; NPV = precision of {neg}. The image is called {pos} when p({pos}) &ge; the "
                 "threshold.")


def _summary(result, fig: dict) -> str:
    m = result.metrics
    kpis = [("images", str(m["n"])), ("accuracy", fmt(m["accuracy"])), ("ROC-AUC", fmt(m["roc_auc"]))]
    if "operating_point" in fig:
        op = fig["operating_point"]
        kpis += [("sensitivity", fmt(op["sensitivity"])), ("specificity", fmt(op["specificity"])),
                 ("threshold", fmt(op["threshold"], 3))]
    ood = m.get("ood")
    if ood:
        kpis += [("answered (within the OOD threshold)", fmt(ood["share_answered"]))]
    body = "".join(f'<span class="kpi"><b>{v}</b>{esc(k)}</span>' for k, v in kpis)
    warnings = []
    if ood and ood["outside"]:
        warnings.append(f"{ood['outside']} of {m['n']} images score past the out-of-distribution threshold "
                        f"{ood['threshold']:.4g}: at prediction they are answered 'outside what this model "
                        "was trained on' (the figures here still count them).")
    elif not ood:
        warnings.append("This model has no out-of-distribution statistics (a model folder from before "
                        "they were recorded): it answers every input with a class.")
    if result.overlap:
        warnings.append(f"{result.overlap} of {m['n']} evaluated images are pixel-identical to training "
                        "images of this model: these figures are not an honest test.")
    if result.split == "train":
        warnings.append("This is the training split: the figures say how well the model fits, "
                        "not how well it generalises.")
    elif result.split == "val":
        warnings.append("This is the validation split, which training used to pick the kept epoch "
                        "(and calibration may have used to pick the threshold): expect the test split "
                        "to score somewhat lower.")
    if result.skipped:
        warnings.append(f"{len(result.skipped)} unreadable images were skipped: "
                        + esc(", ".join(p for p, _ in result.skipped[:5])))
    return body + "".join(f'<p class="warn">{w}</p>' for w in warnings)


def _config(fig: dict) -> str:
    run = fig["run"]
    if not run:
        return '<p class="note">The model folder\'s config.json was not available.</p>'
    pre = run.get("preprocessing", {})
    pairs = [("name", run.get("name")), ("architecture", run.get("architecture")),
             ("classes", ", ".join(run.get("classes", []))),
             ("input", f"{pre.get('size')} x {pre.get('channels')} channel(s), resize {pre.get('resize')}"),
             ("threshold", run.get("threshold")), ("temperature", run.get("temperature")),
             ("test-time augmentation", ", ".join(run.get("tta") or []) or "none"),
             ("created", run.get("created")), ("weights sha256", run.get("weights_sha256")),
             ("versions", ", ".join(f"{k} {v}" for k, v in (run.get("versions") or {}).items()))]
    data = fig["data_fingerprint"]
    out = "<h3>Model</h3>" + key_values(pairs)
    if data:
        out += "<h3>Training data fingerprint</h3>" + key_values(
            [("source", data.get("source")), ("kind", data.get("kind")),
             ("split sizes", json.dumps(data.get("split_sizes"))), ("sha256", data.get("sha256"))])
    ev = fig["evaluated_on"]
    out += "<h3>Evaluated on</h3>" + key_values(
        [("source", ev["source"]), ("split", ev["split"]), ("images", ev["n"]),
         ("per class", ", ".join(f"{c} {n}" for c, n in ev["class_counts"].items())),
         ("skipped (unreadable)", ev["skipped"]),
         ("identical to training images", ev["identical_to_training"])])
    if fig["recipe"]:
        out += ("<details><summary>Full recipe (recipe.yaml)</summary><pre>"
                + esc(yaml.safe_dump(fig["recipe"], sort_keys=False)) + "</pre></details>")
    if run.get("metrics"):
        out += ("<details><summary>Training metrics (validation, at the end of training)</summary><pre>"
                + esc(json.dumps(run["metrics"], indent=2)) + "</pre></details>")
    return out


def _card(result) -> str:
    """The model folder's card (README.md), as its Markdown text."""
    path = Path(result.run or "-") / CARD_FILE
    if not path.is_file():
        return '<p class="note">The model folder has no model card (README.md).</p>'
    text = path.read_text(encoding="utf-8", errors="replace")
    return (f'<p class="note">{esc(str(path))}: intended use, training data, thresholds and known limits.</p>'
            f"<details open><summary>README.md</summary><pre>{esc(text)}</pre></details>")


def _history(fig: dict) -> str:
    h = fig["history"]
    if not h or not any(k in h for k in ("loss", "val_loss")):
        return '<p class="note">No history.csv in the model folder.</p>'
    best = (fig["run"].get("metrics") or {}).get("best_epoch")
    return image(plots.history_plot(h, best), "training curves")


def _classification_report(result) -> str:
    m = result.metrics
    rows = [[esc(c), fmt(s["precision"]), fmt(s["recall"]), fmt(s["f1"]), str(s["support"])]
            for c, s in m["per_class"].items()]
    rows.append(["<b>accuracy</b>", "", "", fmt(m["accuracy"]), str(m["n"])])
    for key, label in (("macro_avg", "macro avg"), ("weighted_avg", "weighted avg")):
        s = m[key]
        rows.append([label, fmt(s["precision"]), fmt(s["recall"]), fmt(s["f1"]), str(m["n"])])
    extra = f"<p>ROC-AUC {fmt(m['roc_auc'])}, log loss {fmt(m['log_loss'])}.</p>"
    return table(["class", "precision", "recall", "f1-score", "support"], rows) + extra


def _operating_point(fig: dict, classes: list[str]) -> str:
    op = fig["operating_point"]
    rows = [[esc(name), fmt(op[key])] for key, name in
            (("sensitivity", "sensitivity (recall of " + classes[1] + ")"),
             ("specificity", "specificity (recall of " + classes[0] + ")"),
             ("ppv", "PPV (precision of " + classes[1] + ")"),
             ("npv", "NPV (precision of " + classes[0] + ")"), ("f1", "F1 of " + classes[1]),
             ("accuracy", "accuracy"), ("prevalence", "prevalence of " + classes[1]))]
    counts = table(["", f"predicted {classes[0]}", f"predicted {classes[1]}"],
                   [[f"true {esc(classes[0])}", f"TN {op['tn']}", f"FP {op['fp']}"],
                    [f"true {esc(classes[1])}", f"FN {op['fn']}", f"TP {op['tp']}"]])
    note = POSITIVE_NOTE.format(pos=esc(classes[1]), neg=esc(classes[0]))
    return (f"<p>At the model's threshold <b>{op['threshold']:.4f}</b> on p({esc(classes[1])}):</p>"
            + table(["figure", "value"], rows) + counts + f'<p class="note">{note}</p>')


def _per_class(result, fig: dict) -> str:
    m, classes = result.metrics, result.classes
    roc, pr = fig["roc"]["per_class"], fig["pr"]["per_class"]
    rows = [[esc(c), fmt(m["per_class"][c]["precision"]), fmt(m["per_class"][c]["recall"]),
             fmt(m["per_class"][c]["f1"]), fmt(roc.get(c, {}).get("auc")), fmt(pr.get(c, {}).get("ap")),
             str(m["per_class"][c]["support"])] for c in classes]
    rows.append(["<b>macro</b>", fmt(m["macro_avg"]["precision"]), fmt(m["macro_avg"]["recall"]),
                 fmt(m["macro_avg"]["f1"]), fmt(fig["roc"]["macro_auc"]), fmt(fig["pr"]["macro_ap"]),
                 str(m["n"])])
    topk = fig.get("top_k_accuracy") or {}
    top = table(["k", "top-k accuracy"], [["1", fmt(m["accuracy"])]]
                + [[esc(k), fmt(v)] for k, v in topk.items()])
    headers = ["class", "precision", "recall", "f1", "ROC-AUC (one vs rest)", "average precision", "support"]
    return (table(headers, rows) + image(plots.per_class_plot(m["per_class"], classes), "per-class scores")
            + "<h3>Top-k accuracy</h3>" + top)


def _bootstrap(fig: dict) -> str:
    b = fig["bootstrap"]
    rows = [[esc(k.replace("_", " ")), fmt(v["estimate"]), fmt(v["low"]), fmt(v["high"]),
             str(v["valid_resamples"])] for k, v in b["metrics"].items()]
    return (table(["figure", "estimate", f"{b['level']:.0%} CI low", "CI high", "resamples used"], rows)
            + f'<p class="note">Percentile bootstrap: {b["n_resamples"]} resamples of the evaluated images '
              f'with replacement, seed {b["seed"]}; the same resamples for every figure.</p>'
            + image(plots.bootstrap_plot(b), "bootstrap intervals"))


def _subgroups(fig: dict) -> str:
    sub = fig["subgroups"]
    names = list(sub["overall"])
    headers = ["value", "images", *(n.replace("_", " ") for n in names)]
    out = (f"<p>From <code>{esc(sub['source'])}</code>: each figure on the images of one subgroup, with "
           f"its {sub['level']:.0%} percentile-bootstrap interval ({sub['n_resamples']} resamples, seed "
           f"{sub['seed']}). <b style=\"color:#b00\">Marked</b>: the interval lies wholly below the figure "
           "on all evaluated images, more than chance in a group that small explains.</p>")
    out += table(["", "images", *headers[2:]], [["<b>all</b>", "", *(fmt(sub["overall"][n]) for n in names)]])
    for column, entries in sub["columns"].items():
        rows = []
        for e in entries:
            cells = []
            for n in names:
                m = e["metrics"][n]
                text = f"{fmt(m['estimate'], 3)} [{fmt(m['low'], 3)}, {fmt(m['high'], 3)}]"
                cells.append(f'<b style="color:#b00">{text} &#9660;</b>' if n in e["below"] else text)
            rows.append([esc(e["value"]), str(e["n"]), *cells])
        out += f"<h3>{esc(column)}</h3>" + table(headers, rows)
    if sub["missing"]:
        out += f'<p class="note">{sub["missing"]} evaluated images have no row in the groups table.</p>'
    return out


def _calibration(fig: dict, result) -> str:
    cal = fig["calibration"]
    positive = fig.get("positive_class")
    temperature = (fig["run"] or {}).get("temperature", 1.0)
    what = f"p({esc(positive)}) against the observed fraction of {esc(positive)}" if positive else \
        "the top-label confidence against accuracy"
    rows = [[f"{b['low']:.1f}&ndash;{b['high']:.1f}", str(b["count"]), fmt(b["confidence"]),
             fmt(b["observed"])] for b in cal["bins"]]
    return (f"<p>Expected calibration error <b>{fmt(cal['ece'])}</b>, Brier score <b>{fmt(cal['brier'])}</b> "
            f"({cal['n_bins']} equal-width bins of {what}; temperature {fmt(temperature, 3)}).</p>"
            + image(plots.reliability_plot(cal, positive), "reliability diagram")
            + "<details><summary>Bins</summary>"
            + table(["bin", "images", "mean predicted", "observed"], rows) + "</details>")


def _prevalence(fig: dict) -> str:
    prev, pos = fig["prevalence"], fig["positive_class"]
    where: dict[float, list[str]] = {p: [] for p in (0.05, 0.1, 0.25, 0.5)}
    for name, p in prev["marks"].items():
        where.setdefault(round(p, 4), []).append(name)
    picks = sorted(where)
    ppv, npv = predictive_values(prev["sensitivity"], prev["specificity"], np.array(picks))
    rows = [[f"{p:.1%}", esc(", ".join(where[p])), fmt(float(a)), fmt(float(b))]
            for p, a, b in zip(picks, ppv, npv)]
    return (f"<p>The same threshold keeps its sensitivity and specificity in another population, but its "
            f"PPV and NPV move with the share of {esc(pos)}. The split prevalences are marked; a clinic "
            f"with a different mix should read the curve at its own prevalence.</p>"
            + image(plots.prevalence_plot(prev, pos), "PPV and NPV against prevalence")
            + table([f"prevalence of {pos}", "where", "PPV", "NPV"], rows, left=2))


def _grid_titles(entries: list[dict], binary: bool, positive: str | None) -> tuple[list[str], list[str]]:
    titles, colours = [], []
    for e in entries:
        right = e["true"] == e["predicted"]
        head = (f"p({positive}) = {e['p_positive']:.3f}" if binary
                else f"{e['predicted']} ({e['p_predicted']:.3f})")
        titles.append(f"{head}\ntrue: {e['true']}")
        colours.append(plots.GREEN if right else plots.RED)
    return titles, colours


def _images(result, entries: list[dict], fig: dict, title: str, cols: int, empty: str) -> str:
    if result.images is None:
        return '<p class="note">Images were not kept: evaluate with keep_images=True (the CLI does).</p>'
    if not entries:
        return f'<p class="note">{empty}</p>'
    binary = len(result.classes) == 2
    titles, colours = _grid_titles(entries, binary, fig.get("positive_class"))
    imgs = [result.images[e["index"]] for e in entries]
    names = table(["#", "file", "true", "predicted", "p(true class)"],
                  [[str(i + 1), esc(e["path"]), esc(e["true"]), esc(e["predicted"]), fmt(e["p_true"])]
                   for i, e in enumerate(entries)], left=2)
    return (image(plots.image_grid(imgs, titles, cols=cols, title=title, colours=colours), title)
            + "<details><summary>Files</summary>" + names + "</details>")


def evaluation_html(result, fig: dict) -> str:
    """The whole report page for an evaluation result and its figures."""
    classes = result.classes
    binary = len(classes) == 2
    sections = [("summary", "Summary", _summary(result, fig)),
                ("config", "Run configuration and data", _config(fig)),
                ("model-card", "Model card", _card(result)),
                ("history", "Training curves", _history(fig)),
                ("classification-report", "Classification report", _classification_report(result)),
                ("confusion-matrix", "Confusion matrix",
                 image(plots.confusion_plot(fig["confusion"]["counts"], fig["confusion"]["row_normalised"],
                                            classes), "confusion matrix")),
                ("roc-pr", "ROC and precision-recall curves",
                 image(plots.curves_plot(fig, classes), "ROC and PR"))]
    if binary:
        sections.append(("operating-point", "Operating point", _operating_point(fig, classes)))
    else:
        sections.append(("per-class", "Per-class and macro figures, top-k accuracy", _per_class(result, fig)))
    sections += [("bootstrap", "Bootstrap 95% confidence intervals", _bootstrap(fig))]
    if fig.get("subgroups"):
        sections.append(("subgroups", "Subgroups", _subgroups(fig)))
    sections.append(("calibration", "Calibration", _calibration(fig, result)))
    if binary and "prevalence" in fig:
        sections.append(("prevalence", "PPV and NPV against prevalence", _prevalence(fig)))
    pos = fig.get("positive_class")
    grid_title = (f"Each image: p({pos}) and the true class (green right, red wrong)" if binary
                  else "Each image: predicted class (probability) and the true class")
    sections += [("samples", "Test images",
                  _images(result, fig["samples"], fig, grid_title, 3, "No images.")),
                 ("worst-errors", "Worst errors",
                  _images(result, fig["worst_errors"], fig, "Most confidently wrong first (lowest "
                          "probability of the true class)", 4,
                          "No errors: every image is classified correctly."))]
    name = (fig["run"] or {}).get("name") or "model"
    subtitle = (f"{esc(name)} on {esc(result.source)} [{esc(result.split)}], {result.metrics['n']} images. "
                "Every figure here is also in the JSON written by <code>imageclf evaluate --json</code>.")
    return document(f"Evaluation report: {name}", subtitle, sections)
