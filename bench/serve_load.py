"""Load and soak check of ``imageclf serve``: concurrent clients mixing valid and hostile uploads.

Starts the server as a subprocess on 127.0.0.1 (a free port; no other host is ever
contacted), runs N async clients for a fixed time, each sending a random mix of good
X-rays (single and batches) and malformed uploads (text named .png, truncated, empty,
random bytes, a decompression bomb, too many files, an oversized body), and reports
requests/s, latency percentiles, the status counts (5xx other than 503 must be 0; 503
is counted apart: it means the queue was full) and the server's RSS over the run.

    python bench/serve_load.py RUN --clients 50 --duration 30
    python bench/serve_load.py RUN --clients 50 --duration 300 --soak     # RSS every 30 s
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import platform
import random
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from imageclf.serve.testing import free_port, png_header_only

ROOT = Path(__file__).resolve().parents[1]
MAX_CLIENTS, MAX_DURATION = 200, 900


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (fields 14 and 15 of /proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def payloads(sample_dir: Path, max_upload_mb: float) -> dict[str, tuple[bool, list]]:
    """kind -> (should succeed, multipart files). Valid ones are real X-rays, as PNG and JPEG."""
    good = [p.read_bytes() for p in sorted(sample_dir.glob("*.png"))]
    big = Image.open(io.BytesIO(good[0])).convert("L").resize((1024, 1024))
    buf = io.BytesIO()
    big.save(buf, "JPEG", quality=90)
    jpeg = buf.getvalue()
    rng = np.random.default_rng(0)

    def f(name, data):
        return ("files", (name, data, "image/png"))

    return {
        "valid_png": (True, [f("x.png", good[0])]),
        "valid_jpeg_1024px": (True, [f("x.jpg", jpeg)]),
        "valid_batch4": (True, [f(f"{i}.png", good[i % len(good)]) for i in range(4)]),
        "text_as_png": (False, [f("x.png", b"not an image at all " * 20)]),
        "truncated_png": (False, [f("x.png", good[1][: len(good[1]) // 2])]),
        "empty": (False, [f("x.png", b"")]),
        "random_bytes": (False, [f("x.png", rng.integers(0, 256, 5000, dtype=np.uint8).tobytes())]),
        "bomb_30k_px": (False, [f("x.png", png_header_only(30000, 30000))]),
        "too_many_files": (False, [f(f"{i}.png", good[0]) for i in range(40)]),
        "oversized": (False, [f("x.png", b"\x89PNG\r\n\x1a\n" + bytes(int((max_upload_mb + 1) * 2**20)))]),
    }


# How often each kind is sent: about 60 % valid, the rest hostile; few oversized bodies
# (each is 21 MB of localhost traffic).
WEIGHTS = {"valid_png": 30, "valid_jpeg_1024px": 15, "valid_batch4": 15, "text_as_png": 8,
           "truncated_png": 8, "empty": 5, "random_bytes": 8, "bomb_30k_px": 6, "too_many_files": 4,
           "oversized": 1}


async def client_loop(client: httpx.AsyncClient, url: str, kinds, deadline: float, seed: int,
                      results: list) -> None:
    rnd = random.Random(seed)
    names, weights = list(WEIGHTS), list(WEIGHTS.values())
    while time.monotonic() < deadline:
        kind = rnd.choices(names, weights)[0]
        ok_expected, files = kinds[kind]
        t0 = time.perf_counter()
        try:
            r = await client.post(url + "/predict", files=files)
            status = r.status_code
            if status >= 500 and status != 503:
                print(f"  {kind}: {status} {r.text[:200]}", file=sys.stderr)
        except httpx.HTTPError as exc:  # e.g. the server closed an oversized upload early
            status = f"client:{type(exc).__name__}"
        results.append((kind, ok_expected, status, time.perf_counter() - t0))


async def sample_rss(pid: int, every: float, series: list, stop: asyncio.Event, t0: float) -> None:
    while not stop.is_set():
        series.append((time.monotonic() - t0, rss_mb(pid)))
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), every)


async def load(url: str, pid: int, clients: int, duration: float, kinds, rss_every: float) -> dict:
    results: list = []
    series: list = []
    stop = asyncio.Event()
    t0 = time.monotonic()
    sampler = asyncio.create_task(sample_rss(pid, rss_every, series, stop, t0))
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        deadline = time.monotonic() + duration
        await asyncio.gather(*[client_loop(client, url, kinds, deadline, i, results)
                               for i in range(clients)])
    elapsed = time.monotonic() - t0
    stop.set()
    await sampler
    series.append((elapsed, rss_mb(pid)))
    return {"results": results, "elapsed": elapsed, "rss": series}


def percentiles(ms: np.ndarray) -> dict:
    return {f"p{q}": round(float(np.percentile(ms, q)), 1) for q in (50, 90, 99)} if len(ms) else {}


def summarise(run: dict) -> dict:
    res = run["results"]
    lat = np.array([r[3] for r in res]) * 1000
    valid = np.array([r[3] for r in res if r[1] and r[2] == 200]) * 1000
    statuses = Counter(str(r[2]) for r in res)
    server_errors = sum(n for s, n in statuses.items() if s.isdigit() and int(s) >= 500 and s != "503")
    wrong = sum(1 for r in res if r[2] != 503 and isinstance(r[2], int)
                and ((r[1] and r[2] != 200) or (not r[1] and not 400 <= r[2] < 500)))
    images = sum(4 if r[0] == "valid_batch4" else 1 for r in res if r[1] and r[2] == 200)
    return {
        "requests": len(res), "seconds": round(run["elapsed"], 1),
        "requests_per_s": round(len(res) / run["elapsed"], 1),
        "valid_images_per_s": round(images / run["elapsed"], 1),
        "latency_ms_all": percentiles(lat),
        "latency_ms_valid": percentiles(valid),
        "status_counts": dict(sorted(statuses.items())),
        "5xx_other_than_503": server_errors, "503": statuses.get("503", 0),
        "unexpected_answers": wrong,
        "by_kind": {k: dict(Counter(str(r[2]) for r in res if r[0] == k)) for k in WEIGHTS},
    }


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with code {proc.returncode}")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise SystemExit("server did not become ready")


@contextlib.contextmanager
def served(run: str, backend: str = "torch", options: Sequence[str] = (), root: Path = ROOT,
           log_name: str = "serve") -> Iterator[tuple[str, subprocess.Popen]]:
    """``imageclf serve RUN`` as a subprocess on 127.0.0.1 (a free port), ready to answer:
    yields (base URL, process); stopped on exit. ``root``: the checkout whose imageclf runs
    (its working directory and PYTHONPATH, e.g. a git worktree of an older commit)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "imageclf.cli", "serve", run, "--host", "127.0.0.1",
           "--port", str(port), "--backend", backend, "--log-level", "warning", *options]
    path = os.pathsep.join(p for p in (str(root), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "PYTHONPATH": path}
    log = open(Path(os.environ.get("TMPDIR", "/tmp")) / f"{log_name}_{port}.log", "w")  # noqa: SIM115
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=root, env=env)
    try:
        wait_ready(url, proc)
        yield url, proc
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", help="model folder to serve")
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--duration", type=float, default=30.0, help="seconds of load")
    ap.add_argument("--soak", action="store_true", help="sample RSS every 30 s (use with a long --duration)")
    ap.add_argument("--backend", default="torch")
    ap.add_argument("--max-queue", type=int, default=64)
    ap.add_argument("--samples", default=str(ROOT / "samples" / "xrays"))
    ap.add_argument("--json", help="write the summary here too")
    ap.add_argument("--server-root", type=Path, default=ROOT,
                    help="checkout whose imageclf serves (e.g. a git worktree of the commit before)")
    args = ap.parse_args()
    if not 1 <= args.clients <= MAX_CLIENTS or not 0 < args.duration <= MAX_DURATION:
        raise SystemExit(f"--clients must be 1..{MAX_CLIENTS} and --duration 0..{MAX_DURATION} s")

    max_upload_mb = 20.0
    options = ["--max-queue", str(args.max_queue), "--max-upload-mb", str(max_upload_mb)]
    with served(args.run, args.backend, options, args.server_root.resolve(), "serve_load") as (url, proc):
        kinds = payloads(Path(args.samples), max_upload_mb)
        # Warm-up: a few requests of each kind so RSS "before" includes the steady allocations.
        asyncio.run(load(url, proc.pid, 4, 3.0, kinds, 10.0))
        rss_before, cpu_before = rss_mb(proc.pid), cpu_seconds(proc.pid)
        run = asyncio.run(load(url, proc.pid, args.clients, args.duration, kinds,
                               30.0 if args.soak else 5.0))
        cpu = cpu_seconds(proc.pid) - cpu_before
        time.sleep(1.0)
        summary = summarise(run)
        summary.update(
            server_cpu_s=round(cpu, 1),
            server_cpu_ms_per_request=round(1000 * cpu / max(1, summary["requests"]), 2),
            rss_mb_before=round(rss_before, 1), rss_mb_after=round(rss_mb(proc.pid), 1),
            rss_mb_peak=round(max(v for _, v in run["rss"]), 1),
            rss_mb_by_second={str(round(t)): round(v, 1) for t, v in run["rss"]},
            health=httpx.get(url + "/health", timeout=5).json(),
            command=" ".join(["python", "bench/serve_load.py", *sys.argv[1:]]),
            machine=f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}, "
                    f"load average before {os.getloadavg()[0]:.1f}",
            date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            clients=args.clients, backend=args.backend, max_queue=args.max_queue,
        )
    text = json.dumps(summary, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    if summary["5xx_other_than_503"]:
        raise SystemExit("FAIL: the server answered 5xx other than 503")


if __name__ == "__main__":
    main()
