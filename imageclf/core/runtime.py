"""Process-wide settings that make CPU training and inference fast, made only when asked.

Importing imageclf changes nothing in the host process (a notebook, someone's own server).
The ``imageclf`` command line calls :func:`configure_process` before torch loads, and
``fit`` and the server (``create_app``) call it when they start; each setting keeps a value
the user set.

- ``OMP_WAIT_POLICY=PASSIVE``: libgomp's default spins idle OpenMP threads, which on a
  machine busy with anything else (decode workers, other jobs) steal the cores the working
  thread needs; PASSIVE lets them sleep. 2-4x faster steps on a loaded 2-core machine
  (BENCHMARKS.md, Speed). libgomp reads it when it loads, so it only counts when set before
  ``import torch``: the CLI does that; a library user sets it in the environment.
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
"""

from __future__ import annotations

import os
import sys

from imageclf.core.libc import libc

PROCESS_DEFAULTS = {"OMP_WAIT_POLICY": "PASSIVE"}
# glibc's mallopt parameter numbers (malloc.h) for the two environment names.
MALLOPT_PARAMS = {"MALLOC_TRIM_THRESHOLD_": -1, "MALLOC_MMAP_THRESHOLD_": -3}
SERVING_DEFAULTS: dict[str, str] = {}  # what a server sets instead (module docstring)
if sys.platform.startswith("linux"):
    PROCESS_DEFAULTS["THP_MEM_ALLOC_ENABLE"] = "1"
    PROCESS_DEFAULTS.update(dict.fromkeys(MALLOPT_PARAMS, str(1 << 30)))
    SERVING_DEFAULTS.update({"MALLOC_MMAP_THRESHOLD_": str(1 << 20),
                             "MALLOC_TRIM_THRESHOLD_": str(128 << 10)})
_MADE: dict[str, str] = {}  # what configure_process set: a later call may change it, never the user's


def configure_process(serving: bool = False) -> dict[str, str]:
    """Set each of :data:`PROCESS_DEFAULTS` (``serving``: with :data:`SERVING_DEFAULTS` in
    place of theirs) that the user has not set, the glibc ones also in this process (with
    ``mallopt``); returns what was set."""
    wanted = {**PROCESS_DEFAULTS, **(SERVING_DEFAULTS if serving else {})}
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
