"""A person waiting: ``imageclf --help`` and each command's ``--help`` load no torch (issue 21)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

HELP_COMMANDS = [[], ["train"], ["evaluate"], ["predict"], ["serve"], ["export"], ["review"], ["tune"],
                 ["inspect"], ["lr-find"], ["embed"], ["recipes"]]


def _modules_after(argv: list[str]) -> dict:
    """Run ``imageclf ARGV --help`` in a fresh interpreter: its exit code and whether torch loaded."""
    code = textwrap.dedent(f"""
        import json, sys
        from imageclf.cli import main
        try:
            main({argv + ["--help"]!r})
            status = 0
        except SystemExit as exc:
            status = exc.code
        print(json.dumps({{"status": status, "torch": "torch" in sys.modules}}))
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("argv", HELP_COMMANDS, ids=lambda a: " ".join(a) or "imageclf")
def test_help_does_not_import_torch(argv):
    assert _modules_after(argv) == {"status": 0, "torch": False}
