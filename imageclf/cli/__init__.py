"""The ``imageclf`` command: a thin layer over the Python API (no logic lives only here).

Each concern adds its commands from its own module (``cli/train.py``, ...) to ``app``.
"""

from __future__ import annotations

import sys

import click
from rich.markup import escape

from ..errors import ImageclfError
from .common import app, err_console

# Importing the command modules registers their commands on ``app``.
from . import evaluate_cmd, models_cmd, predict_cmd, train_cmd  # noqa: E402,F401  isort: skip
from . import serve_cmd  # noqa: E402,F401  isort: skip
from . import quality_cmd  # noqa: E402,F401  isort: skip
from . import report_cmd  # noqa: E402,F401  isort: skip


def main(argv: list[str] | None = None) -> None:
    """Entry point: user errors print one line and exit 2; Ctrl-C exits 130."""
    try:
        code = app(args=argv, standalone_mode=False)
        # Typer returns, not raises, the exit code it chose (130 for Ctrl-C in a command).
        if isinstance(code, int) and code:
            sys.exit(code)
    except ImageclfError as exc:
        # Escaped: the message names a user's file, and "[left].png" is not markup.
        err_console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        err_console.print("aborted")
        sys.exit(130)
    except KeyboardInterrupt:
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)


__all__ = ["app", "main"]
