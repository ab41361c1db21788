"""The C library through ctypes, for the process settings Python has no API for (glibc's
``mallopt``, ``sigaltstack``): loaded once; None off Linux or where it cannot be loaded."""

from __future__ import annotations

import ctypes
import functools
import sys


@functools.cache
def libc() -> ctypes.CDLL | None:
    """This process' C library (``errno`` kept for ``ctypes.get_errno``), or None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        # The symbols this process has loaded already, libc's among them: no library search
        # (find_library runs ldconfig, a subprocess at every command's start).
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None
