"""Running the app under uvicorn: one process, so the model is loaded once."""

from __future__ import annotations

import ctypes
import os
import sys
from pathlib import Path

from imageclf.modelfile.predictor import Predictor
from imageclf.serve.app import create_app
from imageclf.serve.settings import ServeSettings

# glibc's M_MMAP_THRESHOLD parameter number (malloc.h).
_M_MMAP_THRESHOLD = -3


def return_large_buffers_to_os(threshold: int = 1 << 20) -> bool:
    """Make glibc serve allocations over ``threshold`` with mmap, so freeing them returns the memory.

    By default glibc raises its mmap threshold after a large block is freed, so a forward
    pass's activations (36 MB per conv layer for a batch of 32 at 96 px) are then kept in
    the heap and in every thread's arena: a server's RSS climbs in steps with each new
    largest batch (BENCHMARKS.md, Serving: the soak with and without this). Only done in
    a process that ``imageclf serve`` owns, on glibc, and not when the user set
    MALLOC_MMAP_THRESHOLD_.
    """
    if not sys.platform.startswith("linux") or "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, threshold))
    except (OSError, AttributeError):  # not glibc (musl, ...): nothing to tune
        return False


def run_server(model_or_run: Predictor | str | Path, settings: ServeSettings | None = None,
               host: str = "127.0.0.1", port: int = 8000, log_level: str = "info") -> None:
    """Load the model (``create_app`` makes the process settings first), then serve it until
    interrupted (Ctrl-C)."""
    import uvicorn

    return_large_buffers_to_os()
    app = create_app(model_or_run, settings)
    # The request timeout and the queue limit are the app's own (ServeSettings); uvicorn
    # only closes idle keep-alive connections quickly.
    uvicorn.run(app, host=host, port=port, log_level=log_level, timeout_keep_alive=5,
                server_header=False)
