"""What bounds a CPU training step, and what each change gives: ``python -m bench.profile_step``.

Runs the xray-5block training step (128 px gray, batch 16, Adam, the batch already in
memory, as cpu_ceiling.py does) in a fresh process per variant, each adding one change
to the previous: huge pages for large tensors, pooling before ReLU, OpenMP threads that
sleep instead of spin, bf16 autocast. Prints images/s (wall and per CPU-second) and
page faults per step, then torch.profiler's top operators for the first and last variant.

usage: python -m bench.profile_step [--seconds 8] [--threads N] [--model xray_5block --size 128 --batch 16]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

# Each variant: a label and the environment / options that make it (cumulative).
# The child imports torch before imageclf, so libgomp starts with the environment given here
# (imageclf's own OMP_WAIT_POLICY default comes too late to count); THP is pinned to 0 where off.
VARIANTS = [
    ("plain PyTorch (cpu_ceiling's channels_last step)", {"THP_MEM_ALLOC_ENABLE": "0"}, []),
    ("+ THP_MEM_ALLOC_ENABLE=1 (huge pages)", {"THP_MEM_ALLOC_ENABLE": "1"}, []),
    ("+ max-pool before ReLU (exact)", {"THP_MEM_ALLOC_ENABLE": "1"}, ["swap"]),
    ("+ OMP_WAIT_POLICY=PASSIVE", {"THP_MEM_ALLOC_ENABLE": "1", "OMP_WAIT_POLICY": "PASSIVE"}, ["swap"]),
    ("+ bf16 autocast (--precision bf16)", {"THP_MEM_ALLOC_ENABLE": "1", "OMP_WAIT_POLICY": "PASSIVE"},
     ["swap", "bf16"]),
    # Threads: on a machine whose other cores are busy, one thread avoids waiting for the rest.
    ("fp32 as imageclf, OMP_NUM_THREADS=1", {"THP_MEM_ALLOC_ENABLE": "1", "OMP_WAIT_POLICY": "PASSIVE",
                                              "OMP_NUM_THREADS": "1"}, ["swap"]),
    ("bf16 as imageclf, OMP_NUM_THREADS=1", {"THP_MEM_ALLOC_ENABLE": "1", "OMP_WAIT_POLICY": "PASSIVE",
                                              "OMP_NUM_THREADS": "1"}, ["swap", "bf16"]),
]


def timed_steps(step, batch: int, seconds: float, warm_up: int = 3) -> dict:
    """Run ``step`` (one training step of ``batch`` images) for ``seconds`` after ``warm_up``
    steps: images per second and per CPU-second, steps, minor page faults per step."""
    for _ in range(warm_up):
        step()
    n, t0, c0 = 0, time.perf_counter(), time.process_time()
    f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    while time.perf_counter() - t0 < seconds:
        step()
        n += 1
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"img_per_s": round(batch * n / wall, 2), "img_per_cpu_s": round(batch * n / cpu, 2), "steps": n,
            "faults_per_step": round((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0) / n)}


def child(a: argparse.Namespace) -> None:
    """One variant, in this (fresh) process: prints a JSON line."""
    import torch
    import torch.nn.functional as F

    from imageclf.inference.forward import pool_before_relu
    from imageclf.models import create_model

    torch.manual_seed(0)
    model = create_model(a.model, 1, 1, (a.size, a.size)).to(memory_format=torch.channels_last)
    if "swap" in a.opts:
        pool_before_relu(model)
    opt = torch.optim.Adam(model.parameters(), 1e-3, eps=1e-7)
    x = torch.rand(a.batch, 1, a.size, a.size).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 2, (a.batch,)).float()
    bf16 = "bf16" in a.opts

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = model(x)
        loss = F.binary_cross_entropy_with_logits(logits[:, 0].float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    out = {**timed_steps(step, a.batch, a.seconds), "threads": torch.get_num_threads()}
    if a.profile:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as p:
            for _ in range(5):
                step()
        rows = sorted(p.key_averages(), key=lambda e: -e.self_cpu_time_total)[:8]
        total = sum(e.self_cpu_time_total for e in p.key_averages())
        out["top_ops"] = [[e.key, round(100 * e.self_cpu_time_total / total, 1)] for e in rows]
    print(json.dumps(out))


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.profile_step")
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--model", default="xray_5block")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--threads", type=int, help="OMP_NUM_THREADS for every variant (default: as each says)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--opts", default="", help=argparse.SUPPRESS)
    ap.add_argument("--profile", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        a.opts = a.opts.split(",")
        child(a)
        return
    base = {k: v for k, v in os.environ.items()
            if k not in ("THP_MEM_ALLOC_ENABLE", "OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
    print(f"{a.model} {a.size} px, batch {a.batch}; load average {os.getloadavg()}")
    for i, (label, env, opts) in enumerate(VARIANTS):
        cmd = [sys.executable, "-m", "bench.profile_step", "--child", "--seconds", str(a.seconds),
               "--model", a.model, "--size", str(a.size), "--batch", str(a.batch), "--opts", ",".join(opts)]
        if i in (0, 4, len(VARIANTS) - 1):
            cmd.append("--profile")
        if a.threads:
            env = {**env, "OMP_NUM_THREADS": str(a.threads)}
        res = subprocess.run(cmd, env={**base, **env}, capture_output=True, text=True)
        lines = [line for line in res.stdout.splitlines() if line.startswith("{")]
        if res.returncode or not lines:
            print(f"{label}: failed\n{res.stderr[-1500:]}")
            continue
        r = json.loads(lines[-1])
        print(f"{label:52s} {r['img_per_s']:8.1f} img/s  {r['img_per_cpu_s']:8.1f} img/CPU-s  "
              f"{r['faults_per_step']:7d} faults/step", flush=True)
        if "top_ops" in r:
            print("    top ops (self CPU %): " + ", ".join(f"{k} {v}" for k, v in r["top_ops"]))
    print(f"load average at end {os.getloadavg()}")


if __name__ == "__main__":
    main()
