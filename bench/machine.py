"""What the benchmark ran on: CPU model and cores, memory, load, versions, commit, date."""

from __future__ import annotations

import os
import platform
import subprocess
import time
from pathlib import Path


def _lscpu() -> dict[str, str]:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return {}
    return {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in out.splitlines())}


def cpu_model(cpu: dict[str, str] | None = None) -> str:
    """The CPU's model name (lscpu's, else the platform's)."""
    return (_lscpu() if cpu is None else cpu).get("Model name", platform.processor())


def load() -> list[float]:
    """The 1, 5 and 15 minute load averages (what else the machine was doing)."""
    return [round(x, 2) for x in os.getloadavg()]


def _git(repo: Path, *args: str) -> str:
    try:
        return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def describe(repo: Path) -> dict:
    import numpy
    import PIL
    import torch
    import torchvision

    cpu = _lscpu()
    mem = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) // 1024
    except OSError:
        pass
    return {
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "cpu_model": cpu_model(cpu),
        "cpus": int(cpu.get("CPU(s)", os.cpu_count() or 0)),
        "cores_per_socket": cpu.get("Core(s) per socket"),
        "threads_per_core": cpu.get("Thread(s) per core"),
        "memory_mb": mem,
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": numpy.__version__,
        "pillow": PIL.__version__,
        "torch_threads": torch.get_num_threads(),
        "commit": _git(repo, "rev-parse", "--short", "HEAD"),
        "dirty": bool(_git(repo, "status", "--porcelain", "--untracked-files=no")),
        "load_at_start": load(),
    }


def summary(m: dict) -> str:
    """One line for the report: the machine and the versions."""
    gpu = f", GPU {m['gpu']}" if m.get("gpu") else ", no GPU"
    return (f"{m['cpu_model']}, {m['cpus']} CPUs ({m['cores_per_socket']} cores/socket, "
            f"{m['threads_per_core']} thread/core), {m['memory_mb'] / 1024:.0f} GiB{gpu}; Python "
            f"{m['python']}, torch {m['torch']}, torchvision {m['torchvision']}, numpy {m['numpy']}, "
            f"Pillow {m['pillow']}; commit {m['commit']}{' + local changes' if m['dirty'] else ''}")
