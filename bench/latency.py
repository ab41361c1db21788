"""What a person waits for at the command line: ``imageclf --help`` and a one-image prediction.

Runs ``imageclf --help`` and ``imageclf predict RUN IMAGE -q --backend B`` for each backend,
interleaved round after round (so a change in the machine's load touches every command alike),
each a fresh process timed from start to exit; prints a markdown table of the median, the
range and the first run (the coldest page cache this process can arrange without root) and,
with ``--json``, appends the record to a file.

    python -m bench.latency RUN IMAGE [--rounds 7] [--backends onnx openvino auto torch]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench import machine

BACKENDS = ("onnx", "openvino", "auto", "torch")


def commands(run: str, image: str, backends: tuple[str, ...] | list[str],
             python: str = sys.executable) -> dict[str, list[str]]:
    """Each timed command by its label: ``--help`` first, then one prediction per backend."""
    cli = [python, "-m", "imageclf.cli"]
    out = {"imageclf --help": [*cli, "--help"]}
    for backend in backends:
        out[f"predict --backend {backend}"] = [*cli, "predict", run, image, "-q", "--backend", backend]
    return out


def time_once(cmd: list[str]) -> float:
    """Wall seconds of one run of ``cmd``; its failure is an error, not a figure."""
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if done.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return seconds


def summarise(seconds: list[float]) -> dict:
    """Median, range and first of one command's runs, in seconds."""
    return {"median_s": round(statistics.median(seconds), 3), "min_s": round(min(seconds), 3),
            "max_s": round(max(seconds), 3), "first_s": round(seconds[0], 3), "runs": len(seconds)}


def measure(cmds: dict[str, list[str]], rounds: int) -> dict[str, dict]:
    times: dict[str, list[float]] = {label: [] for label in cmds}
    for _ in range(rounds):
        for label, cmd in cmds.items():
            times[label].append(time_once(cmd))
    return {label: summarise(t) for label, t in times.items()}


def table(results: dict[str, dict]) -> str:
    lines = ["| command | median s | min-max s | first run s |", "|---|---|---|---|"]
    for label, r in results.items():
        lines.append(f"| `{label}` | {r['median_s']:.2f} | {r['min_s']:.2f}-{r['max_s']:.2f} | "
                     f"{r['first_s']:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", help="model folder (exported with `imageclf export RUN --int8` for onnx/openvino)")
    ap.add_argument("image", help="the one image to predict")
    ap.add_argument("--rounds", type=int, default=7, help="runs of each command, interleaved")
    ap.add_argument("--backends", nargs="+", default=list(BACKENDS))
    ap.add_argument("--json", type=Path, help="append the record here")
    args = ap.parse_args(argv)
    if args.rounds < 1:
        ap.error("--rounds must be at least 1")
    load_before = machine.load()
    results = measure(commands(args.run, args.image, args.backends), args.rounds)
    record = {"results": results, "cpu": machine.cpu_model(), "cores": os.cpu_count(),
              "load_before": load_before, "load_after": machine.load(),
              "command": " ".join(["python -m bench.latency", *(argv if argv is not None else sys.argv[1:])]),
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    print(f"{record['command']}\n{record['cpu']}, {record['cores']} cores, load {load_before} -> "
          f"{record['load_after']}, {record['date']}\n\n{table(results)}")
    if args.json:
        with args.json.open("a") as f:
            f.write(json.dumps(record) + "\n")
    return record


if __name__ == "__main__":
    main()
