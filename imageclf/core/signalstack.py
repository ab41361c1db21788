"""Keeping a thread's alternate signal stack as it was around native code that changes it.

OpenVINO's CPU plugin installs an alternate signal stack (``sigaltstack``) on the thread that
compiles a model and frees that memory later without taking it back off the thread. CPython
runs its signal handlers with ``SA_ONSTACK``, so the next signal that thread takes (Ctrl-C) is
delivered on freed memory and the process dies of SIGSEGV: seen in the test suite, a Ctrl-C
after a model had been compiled and freed. :func:`keep_signal_stack` puts the thread's previous
setting back when the block ends (Linux glibc; elsewhere it does nothing).
"""

from __future__ import annotations

import contextlib
import ctypes
from collections.abc import Iterator

from imageclf.core.libc import libc


class _StackT(ctypes.Structure):
    _fields_ = [("ss_sp", ctypes.c_void_p), ("ss_flags", ctypes.c_int), ("ss_size", ctypes.c_size_t)]


_LIBC = libc()


def signal_stack() -> tuple[int, int, int] | None:
    """This thread's alternate signal stack: (address, flags, size); None where unknown."""
    if _LIBC is None:
        return None
    current = _StackT()
    if _LIBC.sigaltstack(None, ctypes.byref(current)) != 0:
        return None
    return current.ss_sp or 0, current.ss_flags, current.ss_size


@contextlib.contextmanager
def keep_signal_stack() -> Iterator[None]:
    """Run the block, then give this thread back the alternate signal stack it had before."""
    if _LIBC is None:
        yield
        return
    before = _StackT()
    known = _LIBC.sigaltstack(None, ctypes.byref(before)) == 0
    try:
        yield
    finally:
        if known:
            _LIBC.sigaltstack(ctypes.byref(before), None)
