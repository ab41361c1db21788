"""Process-wide settings that make CPU training and inference fast, made only when asked.

Importing imageclf changes nothing in the host process (a notebook, someone's own server).
The ``imageclf`` command line calls :func:`configure_process` before torch loads, and
``fit`` and the server (``create_app``) call it when they start; each setting keeps a value
the user set.

- OpenMP threads, by the cores' load at start (:func:`thread_settings`): libgomp's default
  lets an idle thread spin a while before it sleeps. On free cores that is the fastest (the
  next parallel region starts at once: mnist-basic's epoch 22 s against 29 s with
  ``OMP_WAIT_POLICY=PASSIVE`` on the idle 2-core EPYC), so nothing is set. When other work
  already takes a core (:func:`others_cpu_load`, a 50 ms look at ``/proc/stat``), spinning
  threads steal it from the thread doing the work: then one thread per free core, and they
  sleep when idle (``OMP_NUM_THREADS``, ``OMP_WAIT_POLICY=PASSIVE``; with one core busy:
  1,680-1,840 img/s against 1,020-1,440 for two sleeping threads and 360-700 for two
  spinning ones). libgomp reads these when it loads, so they only count when set before
  ``import torch``: the CLI does that; a library user sets them in the environment. A user's
  own value of either name leaves both alone.
- ``THP_MEM_ALLOC_ENABLE=1``: a CPU training step allocates and frees large activations
  (32 MB for xray-5block's first layer at 128 px, batch 16); glibc returns them to the
  kernel each time, so every step faults them in again 4 KB at a time. PyTorch then backs
  allocations of 2 MB or more with transparent huge pages: 18,000 -> 1,900 page faults per
  step and ~30% more images per CPU-second. PyTorch reads it at the process' first large
  allocation, so ``fit`` and ``serve`` set it before theirs.
- ``MALLOC_MMAP_THRESHOLD_`` and ``MALLOC_TRIM_THRESHOLD_`` (glibc): the rest of those faults.
  glibc still maps blocks past its mmap threshold afresh and gives the top of its heap back
  when it is freed; with both raised to 1 GiB a step reuses the memory the last one freed:
  1,100-2,900 -> 0 page faults per step and 15-30 % more images per second (mnist-basic,
  catsdogs-2conv, xray-5block on one thread, the 2-core EPYC). glibc reads these names at a
  process' start (for the processes imageclf starts, e.g. DDP ranks); this process gets them
  from ``mallopt`` at once. The cost: memory freed after the peak stays with the process.
  So a server (``configure_process(serving=True)``, made by ``imageclf serve``) does the
  opposite: glibc maps every block over 1 MB afresh and trims its heap, so the resident
  size does not climb in steps as ever larger batches come and go (BENCHMARKS.md, Serving).

The command line also ends its process itself (:func:`exit_process`): once torch is loaded,
tearing the interpreter down takes longer than many a command's own work.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sys
import threading
import time
from typing import NoReturn

from imageclf.core.libc import libc

PROCESS_DEFAULTS: dict[str, str] = {}
THREAD_NAMES = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")  # what thread_settings decides
BUSY_LOAD = 0.5  # cores' worth of other work from which the cores count as shared
# glibc's mallopt parameter numbers (malloc.h) for the two environment names.
MALLOPT_PARAMS = {"MALLOC_TRIM_THRESHOLD_": -1, "MALLOC_MMAP_THRESHOLD_": -3}
SERVING_DEFAULTS: dict[str, str] = {}  # what a server sets instead (module docstring)
if sys.platform.startswith("linux"):
    PROCESS_DEFAULTS["THP_MEM_ALLOC_ENABLE"] = "1"
    PROCESS_DEFAULTS.update(dict.fromkeys(MALLOPT_PARAMS, str(1 << 30)))
    SERVING_DEFAULTS.update({"MALLOC_MMAP_THRESHOLD_": str(1 << 20),
                             "MALLOC_TRIM_THRESHOLD_": str(128 << 10)})
FULL_EXIT = "IMAGECLF_FULL_EXIT"  # =1: exit_process tears the interpreter down as usual
_MADE: dict[str, str] = {}  # what configure_process set: a later call may change it, never the user's


def configure_process(serving: bool = False, probe_load: bool = True) -> dict[str, str]:
    """Set each of :data:`PROCESS_DEFAULTS` (``serving``: with :data:`SERVING_DEFAULTS` in
    place of theirs) that the user has not set, the glibc ones also in this process (with
    ``mallopt``), and, before torch loads (``probe_load``), the OpenMP threads for the cores'
    load (:func:`thread_settings`); returns what was set."""
    wanted = {**PROCESS_DEFAULTS, **(SERVING_DEFAULTS if serving else {})}
    if probe_load and "torch" not in sys.modules and not os.environ.keys() & set(THREAD_NAMES):
        others = others_cpu_load()
        if others is not None:
            wanted.update(thread_settings(len(_cores()), others))
    # A server's settings replace the ones an earlier call made (the command line's, before
    # it knew the command); nothing replaces the user's.
    changed = {k: v for k, v in wanted.items()
               if k not in os.environ or (serving and os.environ[k] == _MADE.get(k) != v)}
    os.environ.update(changed)
    _MADE.update(changed)
    for name in MALLOPT_PARAMS.keys() & changed.keys():
        mallopt(MALLOPT_PARAMS[name], int(changed[name]))
    return changed


def mallopt(param: int, value: int) -> bool:
    """glibc's ``mallopt(param, value)``; False where it refuses or there is no glibc (musl,
    macOS). An older glibc caps the mmap threshold at 32 MiB: that is tried next."""
    set_option = getattr(libc(), "mallopt", None)
    if set_option is None:
        return False
    return bool(set_option(param, value) or set_option(param, min(value, 32 << 20)))


def made(name: str) -> str | None:
    """The value imageclf set for the environment name ``name`` (None: it set none)."""
    return _MADE.get(name)


def thread_settings(cores: int, others: float) -> dict[str, str]:
    """The OpenMP settings for a process that finds ``others`` cores' worth of work on its
    ``cores``: none where they are free (libgomp's default, as plain PyTorch runs); else one
    thread per free core (at least one), each sleeping when idle (module docstring)."""
    if others < BUSY_LOAD:
        return {}
    threads = max(1, round(cores - others))
    return {"OMP_WAIT_POLICY": "PASSIVE", **({"OMP_NUM_THREADS": str(threads)} if threads < cores else {})}


def others_cpu_load(seconds: float = 0.05) -> float | None:
    """Cores' worth of CPU time that other work took on this process' cores over ``seconds``
    (this process sleeps meanwhile), from ``/proc/stat``; None where it cannot be read."""
    cores = _cores()
    try:
        before = _cpu_ticks(cores)
        time.sleep(seconds)
        after = _cpu_ticks(cores)
    except (OSError, ValueError, IndexError):
        return None
    busy = total = 0
    seen = cores & before.keys() & after.keys()
    for core in seen:
        spent = [b - a for a, b in zip(before[core], after[core])]
        total += sum(spent)
        busy += sum(spent) - spent[3] - spent[4]  # all but idle and iowait (steal counts: it is taken)
    return busy / total * len(seen) if total else None


def _cores() -> set[int]:
    return os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set(range(os.cpu_count() or 1))


def _cpu_ticks(cores: set[int]) -> dict[int, list[int]]:
    """Per core of ``cores``, /proc/stat's first eight counters (user .. steal)."""
    ticks = {}
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu") and line[3].isdigit():
                name, *counts = line.split()
                if int(name[3:]) in cores:
                    ticks[int(name[3:])] = [int(c) for c in counts[:8]]
    return ticks


def exit_process(code: int | str | None = 0) -> NoReturn:
    """End the command with ``code`` (as ``sys.exit`` takes it), skipping the interpreter's teardown.

    Once torch is loaded (more so with torch._dynamo, which torch's own optimizers import), Python's
    own exit spends ~0.9 s freeing modules and objects the OS frees at once (the 2-core EPYC:
    3.0 s against 2.1 s for a script that only imports them; 1.6 s after an ``imageclf
    train``). Everything an exit owes is still done, in the interpreter's order: non-daemon
    threads are joined (with concurrent.futures' pools), exit handlers run (multiprocessing's
    children, logging, weakref finalizers such as temporary folders), output is flushed; then
    the process ends. Nothing of imageclf's is left to write by then: every artifact is
    written and renamed before the command returns. ``IMAGECLF_FULL_EXIT=1`` (a profiler that
    reports at the interpreter's exit) or a process without torch exits as usual.
    """
    if "torch" not in sys.modules or os.environ.get(FULL_EXIT) == "1":
        sys.exit(code)
    status = code if isinstance(code, int) else 0 if code is None else 1
    if not isinstance(code, int | None):
        print(code, file=sys.stderr)  # as sys.exit("message") prints it
    threading._shutdown()  # what Py_FinalizeEx runs first: joins the non-daemon threads
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        # A closed pipe or stream: nothing more can reach it.
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(status)
