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
"""

from __future__ import annotations

import os
import sys

PROCESS_DEFAULTS = {"OMP_WAIT_POLICY": "PASSIVE"}
if sys.platform.startswith("linux"):
    PROCESS_DEFAULTS["THP_MEM_ALLOC_ENABLE"] = "1"


def configure_process() -> dict[str, str]:
    """Set each of :data:`PROCESS_DEFAULTS` that the environment does not set already;
    returns what was set."""
    changed = {k: v for k, v in PROCESS_DEFAULTS.items() if k not in os.environ}
    os.environ.update(changed)
    return changed
