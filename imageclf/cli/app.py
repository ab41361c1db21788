"""The assembled ``imageclf`` command: every command module registered on the Typer app, and
:func:`run`, which turns what they raise into one line and an exit code.

Importing this imports torch (through the commands); :func:`imageclf.cli.main` configures the
process first, then imports it.
"""

from __future__ import annotations

import sys

import typer
from rich.markup import escape

from imageclf.cli.common import app, err_console
from imageclf.core.errors import ImageclfError

# Importing the command modules registers their commands on ``app``.
from imageclf.cli import evaluate_cmd, models_cmd, predict_cmd, train_cmd  # noqa: F401  isort: skip
from imageclf.cli import serve_cmd  # noqa: F401  isort: skip
from imageclf.cli import quality_cmd  # noqa: F401  isort: skip
from imageclf.cli import report_cmd  # noqa: F401  isort: skip
from imageclf.cli import review_cmd  # noqa: F401  isort: skip
from imageclf.cli import transfer_cmd  # noqa: F401  isort: skip


def run(argv: list[str] | None = None) -> None:
    """Run the command ``argv`` names: user errors print one line and exit 2; Ctrl-C exits 130."""
    try:
        code = app(args=argv, standalone_mode=False)
        # Typer returns, not raises, the exit code it chose (130 for Ctrl-C in a command).
        if isinstance(code, int) and code:
            sys.exit(code)
    except ImageclfError as exc:
        # Escaped: the message names a user's file, and "[left].png" is not markup.
        err_console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except typer.Abort:
        err_console.print("aborted")
        sys.exit(130)
    except KeyboardInterrupt:
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.TyperException as exc:
        # Typer bundles its own click: its usage errors (a missing argument, a bad option)
        # derive from TyperException, not from the click package's ClickException.
        show = getattr(exc, "show", None)
        if show is None:
            raise
        show()
        sys.exit(getattr(exc, "exit_code", 2))
