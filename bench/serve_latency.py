"""Latency of ``imageclf serve`` one request at a time: what a lone user waits for an answer.

Starts the server as a subprocess on 127.0.0.1 (a free port; no other host is ever
contacted, see :func:`bench.serve_load.served`), sends ``--requests`` POST /predict of one
PNG at a time over one keep-alive connection (each sent when the last was answered), and
prints one JSON line: client-side p50 / p90 / p99 ms, requests/s, the server's own timing
split (read, decode, inference) at the median, the CPU and the load average.

    python bench/serve_latency.py RUN [--backend torch|onnx] [--requests 300]
    python bench/serve_latency.py RUN --server-root /tmp/wt-base   # the server of another checkout
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench import machine  # noqa: E402
from bench.serve_load import percentiles, served  # noqa: E402
from imageclf.serve.testing import encode  # noqa: E402

SAMPLE = REPO / "samples" / "xrays" / "val000_pneumonia.png"
WARM_UP = 20


def sample_png(path: Path = SAMPLE, size: int = 128) -> bytes:
    """An X-ray as a ``size`` px grayscale PNG (the samples are 28 px: scaled up)."""
    image = Image.open(path).convert("L").resize((size, size), Image.Resampling.BICUBIC)
    return encode(np.asarray(image))


def measure(url: str, png: bytes, requests: int) -> dict:
    """One request at a time over one keep-alive connection: latencies and server timings."""
    files = [("files", ("x.png", png, "image/png"))]
    latencies, server = [], []
    with httpx.Client(base_url=url, timeout=30) as client:
        for _ in range(WARM_UP):
            client.post("/predict", files=files).raise_for_status()
        t_start = time.perf_counter()
        for _ in range(requests):
            t0 = time.perf_counter()
            r = client.post("/predict", files=files)
            latencies.append(time.perf_counter() - t0)
            r.raise_for_status()
            server.append(r.json().get("timing_ms", {}))
        elapsed = time.perf_counter() - t_start
    ms = np.array(latencies) * 1000
    split = {k: round(float(np.median([t[k] for t in server if k in t])), 2)
             for k in ("read", "decode", "inference", "total") if any(k in t for t in server)}
    return {"latency_ms": percentiles(ms), "mean_ms": round(float(ms.mean()), 2),
            "requests_per_s": round(requests / elapsed, 1), "server_timing_ms_p50": split}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", help="model folder to serve")
    ap.add_argument("--backend", default="torch", help="torch or onnx")
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--size", type=int, default=128, help="side of the PNG sent, in pixels")
    ap.add_argument("--server-root", type=Path, default=REPO,
                    help="checkout whose imageclf serves (e.g. a git worktree of the commit before)")
    ap.add_argument("--json", type=Path, help="append the JSON line here too")
    args = ap.parse_args(argv)
    if not 1 <= args.requests <= 100_000:
        raise SystemExit("--requests must be 1..100000")
    png = sample_png(size=args.size)
    load_before = machine.load()
    root = args.server_root.resolve()
    with served(args.run, args.backend, root=root, log_name="serve_latency") as (url, _):
        result = measure(url, png, args.requests)
    result.update(command=" ".join(["python", "bench/serve_latency.py", *(argv or sys.argv[1:])]),
                  backend=args.backend, requests=args.requests, png_bytes=len(png), image_px=args.size,
                  server_root=str(args.server_root), cpu=machine.cpu_model(), cores=os.cpu_count(),
                  load_before=load_before, load_after=machine.load(),
                  date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
    line = json.dumps(result)
    print(line)
    if args.json:
        with args.json.open("a") as f:
            f.write(line + "\n")
    return result


if __name__ == "__main__":
    main()
