"""Model quality on the four real data sets: ``python -m bench.quality --xray --fashion ...``.

Trains each selected (data set, recipe) pair on its training split, one at a time, and
records the VALIDATION figures (the test splits are held out elsewhere and never read),
epochs, wall time, machine and the ``imageclf train`` command that reproduces the row.
Results merge into ``bench/quality.json`` (a rerun of one data set keeps the others'
rows) and the markdown tables are printed and written to ``bench/quality.md`` and to the
``## Model quality`` section of ``BENCHMARKS.md`` (between its ``quality`` markers).

  --xray --fashion --digits --catsdogs   the data sets (targets table)
  --ablation                             PneumoniaMNIST, xray-fast with each ingredient off / on
  --only KEY ...                         just these rows (see --list)
  --table                                no training: rebuild the tables from bench/quality.json

Wall times are what this machine gave while other work shared its cores: the load
averages at start and end are recorded with each row.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench import machine  # noqa: E402
from bench.report import replace_block  # noqa: E402

DATA_ROOT = Path(os.environ.get("IMAGECLF_DATA", REPO.parent / "shared" / "data"))
DATASETS = {
    "xray": ("PneumoniaMNIST", "pneumoniamnist_trainval.npz"),
    "fashion": ("Fashion-MNIST", "fashion_mnist_trainval.npz"),
    "digits": ("MNIST digits", "mnist_digits_trainval.npz"),
    "catsdogs": ("cats vs dogs", "catsdogs"),
}
RESULTS = REPO / "bench" / "quality.json"
TABLE = REPO / "bench" / "quality.md"
BENCHMARKS = REPO / "BENCHMARKS.md"


@dataclass
class Row:
    """One training (or, with ``retest_of``, one re-evaluation of another row's model)."""

    key: str
    dataset: str
    recipe: str
    settings: dict = field(default_factory=dict)
    group: str = "targets"
    note: str = ""
    retest_of: str | None = None  # evaluate that row's model with ``settings`` as config changes
    precision: str = "auto"  # imageclf train --precision
    members: list[str] = field(default_factory=list)  # an ensemble of these rows' models


ROWS = [
    # PneumoniaMNIST: the seed-002 recipe at 28 px for reference, the CPU-fast and best recipes.
    Row("xray/xray-5block", "xray", "xray-5block", {"img_size": 64, "epochs": 10},
        note="seed 002 at 64 px"),
    Row("xray/xray-fast", "xray", "xray-fast", retest_of="ablation/none-off",
        note="the ablation's baseline run"),
    Row("xray/xray-resnet", "xray", "xray-resnet"),
    # Fashion-MNIST and digits: seed 004 as written, then the stronger recipes.
    Row("fashion/mnist-basic", "fashion", "mnist-basic", note="seed 004"),
    Row("fashion/fashion-resnet-v1", "fashion", "fashion-resnet",
        {"epochs": 15, "weight_decay": 0.05, "augment.erasing": 0.5}, note="first try: underfits"),
    Row("fashion/fashion-resnet", "fashion", "fashion-resnet"),
    Row("digits/mnist-basic", "digits", "mnist-basic", note="seed 004"),
    Row("digits/mnist-resnet", "digits", "mnist-resnet"),
    # Cats vs dogs: seed 003 with its own settings (64 px RGB, Adadelta 1.0, 10 x 250 steps).
    Row("catsdogs/catsdogs-2conv", "catsdogs", "catsdogs-2conv", {"val_fraction": 0.2},
        note="seed 003"),
    Row("catsdogs/photo-resnet-v1", "catsdogs", "photo-resnet",
        {"img_size": 64, "epochs": 60, "batch_size": 64, "lr": 0.003},
        note="first try: 64 px, stride-1 stem, 60 epochs"),
    Row("catsdogs/photo-resnet-v2", "catsdogs", "photo-resnet",
        {"epochs": 80, "batch_size": 64, "lr": 0.003}, note="second try: 80 epochs of 64, underfits"),
    # The recipe as registered. (On a CPU with AMX, `--precision bf16` trains it twice as fast.)
    Row("catsdogs/photo-resnet", "catsdogs", "photo-resnet"),
    # Ablation on PneumoniaMNIST: xray-fast with one ingredient changed.
    Row("ablation/none-off", "xray", "xray-fast", group="ablation", note="xray-fast as registered"),
    Row("ablation/tta-off", "xray", "xray-fast", {"tta": []}, group="ablation",
        note="no flip TTA (same model)", retest_of="ablation/none-off"),
    Row("ablation/ema-off", "xray", "xray-fast", {"ema": "none"}, group="ablation", note="no EMA"),
    Row("ablation/augment-off", "xray", "xray-fast", {"augment": {}}, group="ablation",
        note="no augmentation"),
    Row("ablation/flip-off", "xray", "xray-fast", {"augment.horizontal_flip": False, "tta": []},
        group="ablation", note="no flips (train or test)"),
    Row("ablation/smoothing-off", "xray", "xray-fast", {"label_smoothing": 0.0}, group="ablation",
        note="no label smoothing"),
    Row("ablation/balanced-on", "xray", "xray-fast", {"class_weights": "balanced"}, group="ablation",
        note="+ balanced class weights"),
    Row("ablation/onecycle-off", "xray", "xray-fast", {"schedule": "constant", "warmup_epochs": 0},
        group="ablation", note="constant learning rate"),
    Row("ablation/adam", "xray", "xray-fast", {"optimizer": "adam", "weight_decay": 0.0},
        group="ablation", note="Adam, no weight decay"),
    Row("ablation/mixup-on", "xray", "xray-fast", {"mixup": 0.2}, group="ablation", note="+ mixup 0.2"),
    Row("ablation/erasing-on", "xray", "xray-fast", {"augment.erasing": 0.25}, group="ablation",
        note="+ random erasing 0.25"),
]


def data_path(dataset: str) -> Path:
    return DATA_ROOT / DATASETS[dataset][1]


def command(row: Row) -> str:
    """The CLI line that trains this row (the environment's thread setting included); for an
    ensemble row, the line that builds it from its members' folders and evaluates it."""
    data = str(data_path(row.dataset))
    if row.members:
        out = f"runs/{row.key}"
        return (shlex.join(["imageclf", "ensemble", *(f"runs/{k}" for k in row.members), "--out", out])
                + " && " + shlex.join(["imageclf", "evaluate", out, data, "--split", "val"]))
    parts = ["imageclf", "train", data, "--recipe", row.recipe]
    for k, v in row.settings.items():
        value = "none" if v is None else json.dumps(v) if isinstance(v, list | dict | bool) else str(v)
        parts += ["--set", f"{k}={value.lower() if isinstance(v, bool) else value}"]
    if row.precision != "auto":
        parts += ["--precision", row.precision]
    threads = os.environ.get("OMP_NUM_THREADS")
    return (f"OMP_NUM_THREADS={threads} " if threads else "") + shlex.join(parts)


def _val_metrics(model, dataset: str) -> dict:
    m = model.evaluate(str(data_path(dataset)), split="val").metrics
    return {"val_accuracy": m["accuracy"], "val_auc": m["roc_auc"], "val_loss": m["log_loss"]}


def _epoch_seconds(run: Path) -> float | None:
    """The sum of a finished run's epoch times (its history.csv), for runs trained outside this script."""
    import csv

    from imageclf.modelfile.artifact import HISTORY_FILE

    history = run / HISTORY_FILE
    if not history.is_file():
        return None
    with history.open() as f:
        return sum(float(r["seconds"]) for r in csv.DictReader(f))


def run_row(row: Row, runs: Path, done: dict, adopt: bool = False) -> dict:
    """Train (or re-test, or assemble) one row and return its record. ``adopt``: a row whose
    folder already holds a finished model is read, not trained again; its wall time is then
    the sum of its epoch times."""
    import imageclf
    from imageclf.modelfile.artifact import METRICS_FILE
    from imageclf.modelfile.ensemble import build_ensemble

    out = runs / row.key
    load_start = machine.load()
    t0 = time.perf_counter()
    if row.retest_of or row.members:
        if row.members:
            model = imageclf.load(build_ensemble([runs / k for k in row.members], out, force=True),
                                  device="cpu")
            bases = [done.get(k, {}) for k in row.members]
        else:
            model = imageclf.load(runs / row.retest_of, device="cpu")
            for k, v in row.settings.items():
                setattr(model.config, k, v)
            bases = [done.get(row.retest_of, {})]
        metrics = {**_val_metrics(model, row.dataset), "epochs_run": bases[0].get("epochs"),
                   "best_epoch": bases[0].get("best_epoch")}
        walls = [b.get("wall_s") for b in bases]
        wall = None if None in walls else sum(walls)
    elif adopt and (out / METRICS_FILE).is_file():
        model = imageclf.load(out, device="cpu")
        metrics, wall = model.config.metrics, _epoch_seconds(out)
        load_start = None  # the load while it trained was not watched: none is shown
    else:
        model = imageclf.train(str(data_path(row.dataset)), row.recipe, out, device="cpu", force=True,
                               quiet=True, precision=row.precision, **row.settings)
        metrics = model.config.metrics
        wall = time.perf_counter() - t0
    recipe = model.config.recipe
    return {
        "key": row.key, "dataset": DATASETS[row.dataset][0], "recipe": row.recipe, "group": row.group,
        "note": row.note, "settings": row.settings, "model": recipe.get("model"),
        "img_size": recipe.get("img_size"), "val_accuracy": metrics["val_accuracy"],
        "val_auc": metrics["val_auc"], "val_loss": metrics["val_loss"],
        "epochs": metrics.get("epochs_run"), "best_epoch": metrics.get("best_epoch"),
        "wall_s": round(wall, 1) if wall is not None else None,
        "load": None if load_start is None else [load_start, machine.load()],
        "torch_threads": __import__("torch").get_num_threads(), "cpu": machine.cpu_model(),
        "command": command(row),
        "date": time.strftime("%Y-%m-%d"),
    }


def _fmt(v, digits=4) -> str:
    return "-" if v is None or v != v else f"{v:.{digits}f}"


def _minutes(s) -> str:
    return "-" if s is None else f"{s / 60:.1f} min"


def _load(load) -> str:
    return "-" if not load else f"{load[0][0]} / {load[1][0]}"


def markdown(results: dict) -> str:
    rows = results.get("rows", {})
    m = results.get("machine", {})
    lines = [f"Machine: {machine.summary(m)}." if m else "", ""]
    lines += ["| data set | recipe | model @ px | val acc | val ROC-AUC | epochs | wall | "
              "load 1-min (start / end) | command |", "|---|---|---|---|---|---|---|---|---|"]
    for r in (r for r in rows.values() if r["group"] == "targets"):
        elsewhere = r.get("cpu") not in (None, m.get("cpu_model"))
        lines.append(f"| {r['dataset']} | {r['recipe']}{' (' + r['note'] + ')' if r['note'] else ''} | "
                     f"{r['model']} @ {r['img_size']} | {_fmt(r['val_accuracy'])} | {_fmt(r['val_auc'])} | "
                     f"{r['epochs']} | {_minutes(r['wall_s'])}{' on ' + r['cpu'] if elsewhere else ''} | "
                     f"{_load(r['load'])} | `{r['command']}` |")
    ablation = [r for r in rows.values() if r["group"] == "ablation"]
    if ablation:
        base = rows.get("ablation/none-off")
        lines += ["", "Ablation: xray-fast as registered, then with one ingredient changed (Δ against it).",
                  "", "| xray-fast on PneumoniaMNIST | val ROC-AUC | Δ AUC | val acc | val loss | "
                  "wall | command |", "|---|---|---|---|---|---|---|"]
        for r in ablation:
            delta = r["val_auc"] - base["val_auc"] if base else None
            lines.append(f"| {r['note']} | {_fmt(r['val_auc'])} | "
                         f"{'-' if delta is None else f'{delta:+.4f}'} | {_fmt(r['val_accuracy'])} | "
                         f"{_fmt(r['val_loss'])} | {_minutes(r['wall_s'])} | `{r['command']}` |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.quality", description=__doc__.splitlines()[0])
    for name in DATASETS:
        ap.add_argument(f"--{name}", action="store_true", help=f"{DATASETS[name][0]} rows")
    ap.add_argument("--ablation", action="store_true", help="the ingredient ablation on PneumoniaMNIST")
    ap.add_argument("--only", nargs="+", default=[], metavar="KEY", help="just these rows")
    ap.add_argument("--list", action="store_true", help="list the rows and their commands")
    ap.add_argument("--table", action="store_true", help="no training: rebuild the tables from the JSON")
    ap.add_argument("--runs", type=Path, default=Path("/tmp/imageclf-quality"),
                    help="where the trained model folders go")
    ap.add_argument("--json", type=Path, default=RESULTS)
    ap.add_argument("--adopt", action="store_true",
                    help="record chosen rows whose folder under --runs already holds a finished model "
                         "(trained by hand, e.g. two at a time) instead of training them again")
    args = ap.parse_args(argv)
    if args.list:
        for r in ROWS:
            print(f"{r.key:28} {command(r)}")
        return
    results = json.loads(args.json.read_text()) if args.json.is_file() else {"rows": {}}
    # In ROWS' order; rows since removed from ROWS are dropped, not shown stale.
    results["rows"] = {r.key: results["rows"][r.key] for r in ROWS if r.key in results["rows"]}
    chosen = [r for r in ROWS if r.key in args.only or (r.group == "targets" and getattr(args, r.dataset))
              or (r.group == "ablation" and args.ablation)]
    unknown = sorted(set(args.only) - {r.key for r in ROWS})
    if unknown:
        ap.error(f"unknown rows {unknown}; see --list")
    if not args.table:
        if not chosen:
            ap.error("choose data sets (--xray --fashion --digits --catsdogs), --ablation or --only KEY")
        # The header's machine is the one most rows ran on; a row recorded on another CPU says so.
        results.setdefault("machine", machine.describe(REPO))
        for row in sorted(chosen, key=lambda r: bool(r.retest_of or r.members)):  # bases first
            print(f"[{time.strftime('%H:%M:%S')}] {row.key}: {command(row)}", flush=True)
            results["rows"][row.key] = run_row(row, args.runs, results["rows"], args.adopt)
            r = results["rows"][row.key]
            print(f"  val acc {_fmt(r['val_accuracy'])}  val auc {_fmt(r['val_auc'])}  "
                  f"{_minutes(r['wall_s'])}", flush=True)
            args.json.write_text(json.dumps(results, indent=2) + "\n")
    text = markdown(results)
    TABLE.write_text(text)
    replace_block(text, BENCHMARKS, "## Model quality", "quality")
    print(text)


if __name__ == "__main__":
    main()
