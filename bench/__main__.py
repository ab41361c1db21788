"""``python -m bench [--quick] [--only WORKLOAD ...]``: run the speed benchmark, write the record.

Per workload, in this order and in separate processes: the ceiling probe, each imageclf
variant (train, then predict in a fresh process), the Keras peer. See docs/performance.md.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import traceback
from pathlib import Path

from . import machine, runners
from .report import append_to_benchmarks, table, write_json
from .workloads import WORKLOADS, Sources, default_sources

REPO = Path(__file__).resolve().parent.parent
KERAS_PYTHON = "/work/bench-venvs/keras/bin/python"
SCRATCH = Path("/tmp/imageclf-bench")  # data, runs and caches, outside the repository
# imageclf variants run per workload: a label, extra `imageclf train` arguments, environment.
VARIANTS: dict[str, tuple[list[str], dict[str, str]]] = {
    "default": ([], {}),  # --precision auto: bf16 on a CPU with AMX / AVX512-BF16, else fp32
    "fp32": (["--precision", "fp32"], {}),
    "bf16": (["--precision", "bf16"], {}),
    # oneDNN's bf16 kernels synchronise their threads often: one thread shows what that costs.
    "bf16-1thread": (["--precision", "bf16"], {"OMP_NUM_THREADS": "1"}),
    "1thread": ([], {"OMP_NUM_THREADS": "1"}),
}


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small data, 1 epoch, short ceiling probe")
    ap.add_argument("--only", nargs="+", metavar="WORKLOAD", choices=sorted(WORKLOADS),
                    help=f"workloads to run (default: all but tiny): {', '.join(WORKLOADS)}")
    ap.add_argument("--variants", default="default,fp32,bf16-1thread",
                    help=f"imageclf variants, comma-separated, of: {', '.join(VARIANTS)}")
    ap.add_argument("--backends", default="torch,onnx,openvino,onnx-int8,openvino-int8,auto",
                    help="backends to predict on after 'imageclf export RUN --int8' (comma-separated)")
    ap.add_argument("--epochs", type=int, help="override every workload's epochs (both sides)")
    ap.add_argument("--root", type=Path, default=SCRATCH,
                    help="scratch folder for data, runs and caches (outside the repository)")
    ap.add_argument("--keras-python", default=KERAS_PYTHON,
                    help="python of the venv with tensorflow-cpu and tf-keras")
    ap.add_argument("--no-keras", action="store_true", help="skip the Keras peer")
    ap.add_argument("--no-ceiling", action="store_true", help="skip cpu_ceiling.py")
    ap.add_argument("--nproc", type=int, help="train with imageclf train --nproc N")
    ap.add_argument("--results", type=Path, default=REPO / "bench" / "results", help="JSON record folder")
    ap.add_argument("--benchmarks", type=Path, default=REPO / "BENCHMARKS.md",
                    help="markdown file whose '## Speed' section gets the table")
    ap.add_argument("--no-report", action="store_true", help="write neither the JSON nor the table")
    return ap.parse_args(argv)


def run_workload(name: str, a: argparse.Namespace, src: Sources, ceilings: dict) -> dict:
    w = WORKLOADS[name]
    epochs = a.epochs or (w.quick_epochs if a.quick else w.epochs)
    entry: dict = {"description": w.description, "epochs": epochs, "targets": w.targets,
                   "ceiling_spec": w.ceiling, "imageclf": {}}
    scratch = a.root / ("quick" if a.quick else "full")
    print(f"[{name}] preparing data", flush=True)
    data = w.prepare(scratch / "data" / name, src, a.quick)
    entry["data"] = str(data)
    if w.ceiling and not a.no_ceiling:
        if w.ceiling not in ceilings:
            print(f"[{name}] ceiling {w.ceiling}", flush=True)
            ceilings[w.ceiling] = runners.best_ceiling({
                "as shipped": _guard(lambda: runners.ceiling(w.ceiling, src, quick=a.quick)),
                "imageclf env": _guard(lambda: runners.ceiling(w.ceiling, src, quick=a.quick,
                                                               env=runners.IMAGECLF_ENV)),
            })
        entry["ceiling"] = ceilings[w.ceiling]
    for variant in a.variants.split(","):
        if w.variants is not None and variant not in w.variants:
            continue
        print(f"[{name}] imageclf {variant}", flush=True)
        out = scratch / "runs" / f"{name}-{variant}"
        extra, env = VARIANTS[variant]

        def train_and_predict(out=out, extra=extra, env=env) -> dict:
            load_before = machine.load()
            train = runners.imageclf_train(w, data, out, scratch / "cache", epochs=epochs, extra=extra,
                                           env=env, nproc=a.nproc)
            test = data / "test"
            result = {"train": train, "predict": None, "load_before": load_before}
            if test.is_dir():
                result.update(predict_on_backends(out, test, a.backends.split(",")))
            return {**result, "load_after": machine.load()}

        entry["imageclf"][variant] = _guard(train_and_predict)
    if w.keras and not a.no_keras:
        if Path(a.keras_python).exists():
            print(f"[{name}] keras peer", flush=True)
            entry["keras"] = _guard(lambda: runners.keras(w, data, src, a.keras_python, epochs=epochs))
        else:
            entry["keras"] = {"error": f"no Keras venv at {a.keras_python} (see docs/performance.md)"}
    return entry


def predict_on_backends(run: Path, test: Path, backends: list[str]) -> dict:
    """Export RUN (int8 too), then predict the test folder on each backend in a fresh process.
    ``predict`` is auto's (the fastest measured equal, what ``--backend auto`` gives a user)
    when it ran, else torch's; ``predict_backends`` has each."""
    out: dict = {"export": None, "predict_backends": {}}
    if any(b != "torch" for b in backends):
        out["export"] = _guard(lambda: runners.export(run))
    for b in backends:
        print(f"    predict on {b}", flush=True)
        out["predict_backends"][b] = _guard(lambda b=b: runners.predict(run, test, backend=b))
    ok = {b: r for b, r in out["predict_backends"].items() if "error" not in r}
    out["predict"] = ok.get("auto") or ok.get("torch")
    return out


def _guard(fn) -> dict:
    """Run one measurement; a failure is recorded (and printed), not fatal to the whole run."""
    try:
        return fn()
    except Exception as exc:  # a broken peer must not lose the other measurements
        traceback.print_exc()
        return {"error": f"{type(exc).__name__}: {exc}"}


def main(argv: list[str] | None = None) -> int:
    a = parse(argv)
    for v in a.variants.split(","):
        if v not in VARIANTS:
            raise SystemExit(f"unknown variant {v!r}; known: {', '.join(VARIANTS)}")
    names = a.only or [n for n, w in WORKLOADS.items() if w.in_default_run]
    src = default_sources()
    record = {"command": ("python -m bench " + shlex.join(sys.argv[1:] if argv is None else argv)).strip(),
              "quick": a.quick, "machine": machine.describe(REPO), "workloads": {}}
    ceilings: dict[str, dict] = {}
    for name in names:
        record["workloads"][name] = run_workload(name, a, src, ceilings)
        record["load_at_end"] = machine.load()
        if not a.no_report:
            write_json(record, a.results)  # after each workload: a crash keeps what was measured
    block = table(record)
    print(block)
    if not a.no_report:
        print(f"record: {write_json(record, a.results)}")
        append_to_benchmarks(block, a.benchmarks)
        print(f"table appended to {a.benchmarks} ({'## Speed'})")
    failed = [n for n, e in record["workloads"].items()
              if any("error" in v for v in e["imageclf"].values())]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
