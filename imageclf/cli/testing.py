"""Run the CLI in-process from tests."""

from __future__ import annotations

from imageclf.cli import main


def exit_code(argv: list) -> int:
    """Run ``imageclf ARGV...`` in this process; its exit status (0 when it returns normally)."""

    try:
        main([str(a) for a in argv])
    except SystemExit as exc:
        return exc.code
    return 0

