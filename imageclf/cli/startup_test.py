"""A person waiting: ``imageclf --help`` and each command's ``--help`` load neither torch nor numpy
(issue 21: ``imageclf --help`` in 0.3 s; torch alone takes over a second to import), nor Typer's
Rich help formatter (70-110 ms of imports: markdown, tracebacks) nor rich's progress bars."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

SLOW_IMPORTS = ("torch", "numpy", "typer.rich_utils", "rich.progress", "rich.table", "pydantic")
HELP_COMMANDS = [[], ["train"], ["evaluate"], ["predict"], ["serve"], ["export"], ["review"], ["tune"],
                 ["inspect"], ["lr-find"], ["embed"], ["recipes"]]


def _modules_after(argv: list[str]) -> dict:
    """Run ``imageclf ARGV --help`` in a fresh interpreter: its exit code, and whether the
    modules of SLOW_IMPORTS loaded."""
    code = textwrap.dedent(f"""
        import json, sys
        from imageclf.cli import main
        try:
            main({argv + ["--help"]!r})
            status = 0
        except SystemExit as exc:
            status = exc.code
        loaded = {{name: name in sys.modules for name in {SLOW_IMPORTS!r}}}
        print(json.dumps({{"status": status, **loaded}}))
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("argv", HELP_COMMANDS, ids=lambda a: " ".join(a) or "imageclf")
def test_help_imports_nothing_slow(argv):
    assert _modules_after(argv) == {"status": 0, **dict.fromkeys(SLOW_IMPORTS, False)}
