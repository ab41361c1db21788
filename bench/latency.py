"""What a person waits for at the command line: ``imageclf --help`` and a one-image prediction.

Runs ``imageclf --help`` and ``imageclf predict RUN IMAGE -q --backend B`` for each backend,
interleaved round after round (so a change in the machine's load touches every command alike),
each a fresh process timed from start to exit; prints a markdown table of the median, the
range and the first run and, with ``--json``, appends the record to a file. ``--cold-rounds K``
(root only) adds K rounds that each empty the page cache before every command: the start after a
reboot, or on a virtual machine that reclaims idle files' pages (docs/performance.md, "The machine").

    python -m bench.latency RUN IMAGE [--rounds 7] [--cold-rounds 3] [--backends onnx openvino auto torch]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from bench import machine

BACKENDS = ("onnx", "openvino", "auto", "torch")
DROP_CACHES = Path("/proc/sys/vm/drop_caches")
COLD_COLUMN = " cold page cache: median s (max) |"


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


def drop_page_cache() -> None:
    """Write dirty pages out, then empty the kernel's page cache (root only)."""
    os.sync()
    try:
        DROP_CACHES.write_text("3\n")
    except OSError as exc:
        why = exc.strerror or exc
        raise SystemExit(f"--cold-rounds needs root: cannot write {DROP_CACHES} ({why})") from None


def measure(cmds: dict[str, list[str]], rounds: int, cold_rounds: int = 0) -> dict[str, dict]:
    """Each command's :func:`summarise`, with ``cold``: that of its runs on an emptied page cache."""
    warm = _interleaved(cmds, rounds)
    cold = _interleaved(cmds, cold_rounds, before_each=drop_page_cache)
    out = {label: summarise(t) for label, t in warm.items()}
    for label, t in cold.items():
        if t:
            out[label]["cold"] = summarise(t)
    return out


def _interleaved(cmds: dict[str, list[str]], rounds: int,
                 before_each: Callable[[], None] | None = None) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {label: [] for label in cmds}
    for _ in range(rounds):
        for label, cmd in cmds.items():
            if before_each is not None:
                before_each()
            times[label].append(time_once(cmd))
    return times


def table(results: dict[str, dict]) -> str:
    cold = any("cold" in r for r in results.values())
    lines = ["| command | median s | min-max s | first run s |" + (COLD_COLUMN if cold else ""),
             "|---|---|---|---|" + ("---|" if cold else "")]
    for label, r in results.items():
        row = f"| `{label}` | {r['median_s']:.2f} | {r['min_s']:.2f}-{r['max_s']:.2f} | {r['first_s']:.2f} |"
        if cold:
            c = r.get("cold")
            row += f" {c['median_s']:.2f} ({c['max_s']:.2f}) |" if c else " |"
        lines.append(row)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", help="model folder (exported with `imageclf export RUN --int8` for onnx/openvino)")
    ap.add_argument("image", help="the one image to predict")
    ap.add_argument("--rounds", type=int, default=7, help="runs of each command, interleaved")
    ap.add_argument("--cold-rounds", type=int, default=0,
                    help="more rounds, each command run on an emptied page cache (needs root)")
    ap.add_argument("--backends", nargs="+", default=list(BACKENDS))
    ap.add_argument("--json", type=Path, help="append the record here")
    args = ap.parse_args(argv)
    if args.rounds < 1 or args.cold_rounds < 0:
        ap.error("--rounds must be at least 1, --cold-rounds at least 0")
    load_before = machine.load()
    results = measure(commands(args.run, args.image, args.backends), args.rounds, args.cold_rounds)
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
