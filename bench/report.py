"""The benchmark's outputs: ratios and targets, the JSON record, the BENCHMARKS.md table.

Every ratio compares figures from the same ``python -m bench`` run (side by side on the
same machine, minutes apart), never figures from different runs.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from .machine import summary

SECTION = "## Speed"
SECTION_INTRO = """\
Written by `python -m bench` (see docs/performance.md): each run appends its table below.
Train img/s is the whole `imageclf train` command (start-up, decoding, caching, every epoch's
validation, saving) divided into the images trained on; Keras' figure is its `fit` alone
(keras_seed.py). Predict img/s is `load_backend(RUN, B).predict(paths)` (what `imageclf predict
--backend B` runs) on the test folder in a fresh process, decoding included, as Keras' `predict`
on its generator, after `imageclf export RUN --int8`; the variant's row shows `auto`'s (the
fastest backend that export measured equal), the rows below it each backend's. Accuracy is on
the same test images for both. The ceiling (peers' cpu_ceiling.py) runs twice, as shipped and with
the process settings imageclf makes for itself (THP_MEM_ALLOC_ENABLE=1, glibc's malloc thresholds);
ratios use the higher. Ratios are from the same run; the load average says how busy the shared
machine was.
"""


def _ratio(a, b) -> float | None:
    return round(a / b, 2) if a and b else None


def ratios(entry: dict, variant: str) -> dict:
    """This variant's figures over Keras' and the ceiling's, from the same run."""
    run = entry["imageclf"][variant]
    train, pred = run.get("train") or {}, run.get("predict") or {}
    keras, ceil = entry.get("keras") or {}, entry.get("ceiling") or {}
    out = {
        "train_vs_keras": _ratio(train.get("train_img_per_s"), keras.get("train_img_per_s")),
        "train_vs_ceiling": _ratio(train.get("train_img_per_s"), ceil.get("train")),
        "loop_vs_ceiling": _ratio(train.get("loop_img_per_s"), ceil.get("train")),
        "predict_vs_keras": _ratio(pred.get("img_per_s"), keras.get("predict_img_per_s")),
        "first_epoch_vs_keras_epoch": _ratio(keras.get("mean_epoch_s"), train.get("first_epoch_end_s")),
    }
    if pred.get("accuracy") is not None and keras.get("test_acc") is not None:
        out["accuracy_minus_keras"] = round(pred["accuracy"] - keras["test_acc"], 4)
    return out


def check_targets(entry: dict, variant: str, targets: dict[str, float]) -> list[dict]:
    """Each of the workload's targets with the measured value and whether it was met."""
    r = ratios(entry, variant)
    train = entry["imageclf"][variant].get("train") or {}
    checks = []
    for name, goal in targets.items():
        if name == "peak_rss_mb_max":
            # The process tree's real footprint (PSS: shared pages split, not counted per worker).
            value = train.get("peak_pss_mb")
            met = value is not None and value <= goal
        else:
            value = r.get(name.removesuffix("_moonshot"))
            met = value is not None and value >= goal
        checks.append({"target": name, "goal": goal, "value": value, "met": bool(met)})
    if "accuracy_minus_keras" in r:
        checks.append({"target": "accuracy_vs_keras", "goal": 0.0, "value": r["accuracy_minus_keras"],
                       "met": r["accuracy_minus_keras"] >= 0})
    return checks


def _f(x, digits: int = 0) -> str:
    if x is None:
        return "–"
    return f"{x:,.{digits}f}"


def _x(x) -> str:
    return "–" if x is None else f"{x:.2f}x"


def _error(e: str) -> str:
    """An error for one table cell: its last line (a traceback's exception), on one line."""
    return e.strip().splitlines()[-1][:160] if e.strip() else "?"


def _acc(p: dict) -> str:
    """Accuracy of the classes answered, and the share the OOD score would refuse."""
    refused = p.get("refused")
    return _f(p.get("accuracy"), 4) + ("" if refused is None else f" ({100 * refused:.1f} % OOD)")


def _backend_rows(run: dict, keras_predict: float | None) -> list[str]:
    """One row per backend the run predicted on (fresh process each; auto names its choice)."""
    rows = []
    for backend, p in (run.get("predict_backends") or {}).items():
        if "error" in p:
            rows.append(f"| | predict on {backend} | error: {_error(p['error'])} |||||||||")
            continue
        chosen = f" → {p.get('backend')}" if backend == "auto" else ""
        torch_note = "" if p.get("torch_imported", True) else ", no torch"
        rows.append(f"| | predict on {backend}{chosen}{torch_note} | | | {_f(p.get('img_per_s'))} "
                    f"| {_acc(p)} | {_f(p.get('peak_rss_mb'))} | | "
                    f"| {_x(_ratio(p.get('img_per_s'), keras_predict))} |")
    return rows


def table(record: dict) -> str:
    """The run's markdown block: header lines, one table, the targets."""
    m = record["machine"]
    lines = [f"### {m['date']}{' (quick)' if record['quick'] else ''}", "",
             f"`{record['command']}`", "",
             f"Machine: {summary(m)}. Load average (1/5/15 min) at start {m['load_at_start']}, "
             f"at end {record.get('load_at_end')}.", "",
             "| workload | run | train img/s | decoded / 1st epoch done / later epoch s "
             "| predict img/s | test acc (OOD-flagged share) | peak MB: process RSS / tree PSS "
             "| train ×Keras | train ×ceiling | predict ×Keras |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    checks = []
    for name, e in record["workloads"].items():
        first = True
        for variant, run in e.get("imageclf", {}).items():
            label = name if first else ""
            first = False
            if "error" in run:
                lines.append(f"| {label} | imageclf {variant} | error: {_error(run['error'])} |||||||||")
                continue
            t, p = run["train"], run.get("predict") or {}
            r = ratios(e, variant)
            lines.append(
                f"| {label} | imageclf {variant} | {_f(t['train_img_per_s'])} "
                f"(loop {_f(t['loop_img_per_s'])}) | {_f(t['decode_done_s'], 1)} / "
                f"{_f(t['first_epoch_end_s'], 1)} / {_f(t['later_epoch_s'], 1)} | {_f(p.get('img_per_s'))} "
                f"| {_acc(p)} | {_f(t.get('main_peak_rss_mb'))} / {_f(t['peak_pss_mb'])} "
                f"| {_x(r['train_vs_keras'])} "
                f"| {_x(r['train_vs_ceiling'])} | {_x(r['predict_vs_keras'])} |")
            lines += _backend_rows(run, (e.get("keras") or {}).get("predict_img_per_s"))
            checks += [(name, variant, c) for c in check_targets(e, variant, e.get("targets", {}))]
        k = e.get("keras")
        if k and "error" not in k:
            lines.append(f"| | Keras peer (TF {k.get('tf')}) | {_f(k['train_img_per_s'])} | – / "
                         f"{_f(k['first_epoch_s'], 1)} / {_f(k['mean_epoch_s'], 1)} (mean) | "
                         f"{_f(k['predict_img_per_s'])} | {_f(k['test_acc'], 4)} "
                         f"| {_f(k.get('main_peak_rss_mb'))} / {_f(k['peak_pss_mb'])} "
                         f"| | | |")
        elif k:
            lines.append(f"| | Keras peer | error: {_error(k['error'])} |||||||||")
        c = e.get("ceiling")
        for label, run in (c or {}).get("runs", {"": c} if c else {}).items():
            if "error" in run:
                lines.append(f"| | ceiling {label} | error: {_error(run['error'])} |||||||||")
                continue
            lines.append(f"| | ceiling {e.get('ceiling_spec', '')} {label} ({run['train_mode']} / "
                         f"{run['predict_mode']}) | {_f(run['train'])} | | {_f(run['predict'])} | | | | | |")
    lines.append("")
    if checks:
        lines.append("Targets: " + "; ".join(
            f"{name} {variant} {c['target']} {c['value']} (goal {c['goal']}) "
            f"{'met' if c['met'] else 'NOT met'}" for name, variant, c in checks) + ".")
        lines.append("")
    return "\n".join(lines)


def write_json(record: dict, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    stamp = re.sub(r"[^0-9T]", "", record["machine"]["date"])[:15]
    path = folder / f"{stamp}{'-quick' if record['quick'] else ''}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=1) + "\n")
    tmp.replace(path)
    return path


def append_to_benchmarks(block: str, path: Path) -> None:
    """Append ``block`` at the end of the ``## Speed`` section (created when absent).

    Only that section is touched: the rest of the shared file is kept byte for byte.
    """
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    padded = "\n" + text
    start = padded.find(f"\n{SECTION}\n")
    if start < 0:
        out = text.rstrip("\n") + f"\n\n{SECTION}\n\n{SECTION_INTRO}\n{block.rstrip()}\n"
    else:
        body = start + len(SECTION) + 2
        nxt = re.search(r"^## ", padded[body:], flags=re.M)
        end = body + nxt.start() if nxt else len(padded)
        head, tail = padded[:end].rstrip("\n"), padded[end:]
        out = (f"{head}\n\n{block.rstrip()}\n" + (f"\n{tail}" if tail else ""))[1:]
    tmp = path.with_suffix(".tmp")
    tmp.write_text(out)
    tmp.replace(path)


def replace_block(block: str, path: Path, section: str, marker: str) -> None:
    """Put ``block`` between ``<!-- marker:begin -->`` and ``<!-- marker:end -->`` in ``path``.

    The markers live inside ``section`` (a ``## `` heading); both are created at the end of the
    file when absent. Everything outside the markers (hand-written analysis included) is kept.
    """
    begin, end = f"<!-- {marker}:begin -->", f"<!-- {marker}:end -->"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    fenced = f"{begin}\n{block.rstrip()}\n{end}"
    if begin in text and end in text:
        out = text[:text.index(begin)] + fenced + text[text.index(end) + len(end):]
    elif f"\n{section}\n" in "\n" + text:
        padded = "\n" + text
        body = padded.find(f"\n{section}\n") + len(section) + 2
        nxt = re.search(r"^## ", padded[body:], flags=re.M)
        cut = body + nxt.start() if nxt else len(padded)
        out = (padded[:cut].rstrip("\n") + f"\n\n{fenced}\n" + (f"\n{padded[cut:]}" if cut < len(padded)
                                                                  else ""))[1:]
    else:
        out = text.rstrip("\n") + f"\n\n{section}\n\n{fenced}\n"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(out)
    tmp.replace(path)

