"""The ``imageclf`` command: a thin layer over the Python API (no logic lives only here).

:func:`entry` is the entry point (the console script, ``python -m imageclf.cli``): :func:`main`,
then :func:`~imageclf.core.runtime.exit_process`. :func:`main` (what tests call) is kept
light: it makes the process settings (:func:`~imageclf.core.runtime.configure_process`) before
anything loads torch, then imports :mod:`imageclf.cli.app`, where each concern's module
(``cli/train_cmd.py``, ...) adds its commands.
"""

from __future__ import annotations

import sys

from imageclf.core.runtime import configure_process, exit_process

# Arguments after which nothing computes: the cores' load is not worth its 50 ms look.
ANSWERS_ONLY = {"-h", "--help"}


def main(argv: list[str] | None = None) -> None:
    """Entry point: user errors print one line and exit 2; Ctrl-C exits 130."""
    args = sys.argv[1:] if argv is None else [str(a) for a in argv]
    configure_process(probe_load=bool(args) and not ANSWERS_ONLY & set(args))
    # Lazy: the commands import torch, and libgomp reads OMP_WAIT_POLICY when torch loads it.
    from imageclf.cli.app import run

    run(argv)


def entry() -> None:
    """The console script and ``python -m imageclf.cli``: :func:`main`, then the process ends
    without the interpreter's slow teardown (:func:`~imageclf.core.runtime.exit_process`)."""
    try:
        main()
    except SystemExit as exc:
        exit_process(exc.code)
    exit_process(0)


__all__ = ["entry", "main"]
