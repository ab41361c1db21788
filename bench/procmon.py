"""Running a command while watching it: line timestamps and the peak memory of its process tree.

Memory is sampled from /proc every ``interval`` seconds over the process and all its
descendants (decode workers, torchrun ranks): the sum of their RSS (shared pages counted
once per process, so an upper bound), the sum of their PSS (shared pages split between the
processes that map them: what the tree really costs), and the main process' own peak RSS.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

PAGE = os.sysconf("SC_PAGE_SIZE")


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it (Linux /proc; children of every thread)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                kids = Path(f"/proc/{p}/task/{task}/children").read_text().split()
                todo += [int(k) for k in kids]
        except OSError:
            continue  # the process ended between listing and reading
    return out


def _rss(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
    except (OSError, IndexError, ValueError):
        return 0


def _proc_kib(path: str, key: str) -> int:
    """The ``key:`` line of a /proc file given in kB, in bytes (0 once the process is gone)."""
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


def _hwm(pid: int) -> int:
    """The process' own peak RSS so far (VmHWM), in bytes."""
    return _proc_kib(f"/proc/{pid}/status", "VmHWM:")


def _pss(pid: int) -> int:
    return _proc_kib(f"/proc/{pid}/smaps_rollup", "Pss:")


@dataclass
class Watched:
    """What :func:`watch` saw: exit code, wall time, timestamped output lines, peak memory."""

    returncode: int
    seconds: float
    lines: list[tuple[float, str]] = field(default_factory=list)
    peak_rss_mb: float = 0.0
    peak_pss_mb: float = 0.0
    main_peak_rss_mb: float = 0.0

    @property
    def text(self) -> str:
        return "\n".join(line for _, line in self.lines)

    def first(self, prefix: str) -> float | None:
        """Seconds from the start to the first line starting with ``prefix``."""
        for t, line in self.lines:
            if line.lstrip().startswith(prefix):
                return t
        return None

    def all(self, needle: str) -> list[tuple[float, str]]:
        return [(t, line) for t, line in self.lines if needle in line]


def watch(cmd: list[str], *, env: dict | None = None, cwd: str | None = None,
          interval: float = 0.2, timeout: float | None = None) -> Watched:
    """Run ``cmd`` (stdout and stderr merged), timestamping each line and sampling memory."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=full_env,
                            cwd=cwd, text=True, errors="replace", bufsize=1)
    peaks = {"rss": 0, "pss": 0, "hwm": 0}
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            pids = descendants(proc.pid)
            peaks["rss"] = max(peaks["rss"], sum(_rss(p) for p in pids))
            peaks["pss"] = max(peaks["pss"], sum(_pss(p) for p in pids))
            peaks["hwm"] = max(peaks["hwm"], _hwm(proc.pid))
            done.wait(interval)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    lines: list[tuple[float, str]] = []
    assert proc.stdout is not None
    try:
        for line in proc.stdout:
            lines.append((time.perf_counter() - t0, line.rstrip("\n")))
            if timeout is not None and time.perf_counter() - t0 > timeout:
                proc.kill()
        proc.wait()
    finally:
        done.set()
        sampler.join()
        if proc.poll() is None:
            proc.kill()
    return Watched(proc.returncode, time.perf_counter() - t0, lines,
                   peaks["rss"] / 2**20, peaks["pss"] / 2**20, peaks["hwm"] / 2**20)
