"""``python -m bench.accuracy``: test accuracy against the Keras peer over several runs each.

One run of each side says little: 400 cats/dogs test photos give one standard error of 2.3
points, and the Keras peer moves by more than that between runs of the same seed (TF's
threads are not deterministic), while imageclf's seeded runs repeat bit for bit. So the
issue's "equal or better accuracy than Keras" is judged here on the mean of ``--seeds`` imageclf
runs (``--seed 0..N-1``) against the mean of as many Keras runs, on the speed benchmark's own
folders, recipes, epochs and batches (bench/workloads.py). Accuracy is of the test folder, on
the torch backend (the trained model itself; export's int8 backends are judged by export).
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import statistics
import sys
from pathlib import Path

from imageclf.core.io import atomic_write_text

from . import machine, runners
from .__main__ import KERAS_PYTHON, SCRATCH
from .report import replace_block
from .workloads import WORKLOADS, default_sources

REPO = Path(__file__).resolve().parent.parent
DEFAULT_WORKLOADS = ("catsdogs-jpeg", "mnist-fashion")
SECTION = "## Model quality"
MARKER = "accuracy-seeds"


def summary(values: list[float]) -> dict:
    """Mean, sample SD, standard error of the mean, range."""
    n = len(values)
    sd = statistics.stdev(values) if n > 1 else 0.0
    return {"n": n, "mean": statistics.fmean(values), "sd": sd, "sem": sd / math.sqrt(n) if n else 0.0,
            "min": min(values), "max": max(values), "values": values}


def compare(ours: list[float], theirs: list[float]) -> dict:
    """imageclf's mean minus Keras', with the standard error of that difference (Welch)."""
    a, b = summary(ours), summary(theirs)
    return {"imageclf": a, "keras": b, "diff": a["mean"] - b["mean"],
            "diff_se": math.sqrt(a["sem"] ** 2 + b["sem"] ** 2)}


def _cell(s: dict) -> str:
    return f"{s['mean']:.4f} ± {s['sd']:.4f} ({s['min']:.4f}-{s['max']:.4f}, n={s['n']})"


def table(record: dict) -> str:
    m = record["machine"]
    lines = [f"`{record['command']}`", "", f"Machine: {machine.summary(m)}; {m['date']}.", "",
             "| workload | imageclf test acc: mean ± SD (range, runs) | Keras peer | imageclf - Keras "
             "(± 1 SE) |", "|---|---|---|---|"]
    for name, c in record["workloads"].items():
        lines.append(f"| {name} | {_cell(c['imageclf'])} | {_cell(c['keras'])} | "
                     f"{c['diff']:+.4f} ± {c['diff_se']:.4f} |")
    return "\n".join(lines)


def run(name: str, seeds: int, a: argparse.Namespace) -> dict:
    w, src = WORKLOADS[name], default_sources()
    scratch = a.root / "full"
    data = w.prepare(scratch / "data" / name, src, False)
    ours, theirs = [], []
    for seed in range(seeds):
        out = scratch / "runs" / f"{name}-seed{seed}"
        print(f"[{name}] imageclf seed {seed}", flush=True)
        runners.imageclf_train(w, data, out, scratch / "cache", epochs=w.epochs,
                               extra=["--seed", str(seed), *a.train_args])
        ours.append(runners.predict(out, data / "test", backend="torch")["accuracy"])
        print(f"[{name}] keras run {seed}", flush=True)
        theirs.append(runners.keras(w, data, src, a.keras_python, epochs=w.epochs)["test_acc"])
        print(f"[{name}] imageclf {ours[-1]:.4f}, keras {theirs[-1]:.4f}", flush=True)
    return compare(ours, theirs)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.accuracy", description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="+", default=list(DEFAULT_WORKLOADS), choices=sorted(WORKLOADS))
    ap.add_argument("--seeds", type=int, default=5, help="runs per side (imageclf: --seed 0..N-1)")
    ap.add_argument("--train-args", nargs=argparse.REMAINDER, default=[],
                    help="extra `imageclf train` arguments (last on the line)")
    ap.add_argument("--root", type=Path, default=SCRATCH)
    ap.add_argument("--keras-python", default=KERAS_PYTHON)
    ap.add_argument("--json", type=Path, default=REPO / "bench" / "accuracy.json")
    ap.add_argument("--benchmarks", type=Path, default=REPO / "BENCHMARKS.md")
    a = ap.parse_args(argv)
    args = sys.argv[1:] if argv is None else argv
    record = {"command": "python -m bench.accuracy " + shlex.join(args), "machine": machine.describe(REPO),
              "workloads": {name: run(name, a.seeds, a) for name in a.only}}
    atomic_write_text(a.json, json.dumps(record, indent=1) + "\n")
    block = table(record)
    replace_block(block, a.benchmarks, SECTION, MARKER)
    print(block)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
