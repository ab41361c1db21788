"""Progress bars and status lines (rich, on stderr), or nothing when ``quiet``.

Library code reports through a :class:`Reporter`; only the CLI turns bars on by default.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape

if TYPE_CHECKING:
    from rich.progress import Progress


def _progress(console: Console) -> Progress:
    """A bar with images per second. rich.progress is imported here, on the first bar: every
    command module imports this one, and ``imageclf --help`` would pay its 12-20 ms."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.text import Text

    class RateColumn(ProgressColumn):
        """Images per second."""

        def render(self, task) -> Text:
            speed = task.finished_speed or task.speed
            return Text(f"{speed:,.0f} img/s" if speed else "", style="cyan")

    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        RateColumn(), TimeElapsedColumn(), TextColumn("<"), TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
        console=console, transient=True, disable=not console.is_terminal,
    )


class Task:
    def __init__(self, progress: Progress | None, task_id) -> None:
        self._progress, self._id = progress, task_id

    def advance(self, n: int = 1, **fields) -> None:
        if self._progress is not None:
            self._progress.update(self._id, advance=n, **({"info": _fmt(fields)} if fields else {}))


def _fmt(fields: dict) -> str:
    return "  ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in fields.items())


class Reporter:
    """Progress bars and messages; ``quiet`` turns both off (library default)."""

    def __init__(self, quiet: bool = True, console: Console | None = None) -> None:
        self.quiet = quiet
        self.console = console or Console(stderr=True, highlight=False, soft_wrap=True)

    def print(self, *args, **kwargs) -> None:
        if not self.quiet:
            self.console.print(*args, **kwargs)

    def warn(self, message: str) -> None:
        # Warnings show even when quiet: they are about the user's data or results.
        # Escaped and unwrapped: a message names files, and a file name is not markup
        # ("[left]" would vanish, "[/x]" would raise) nor a line to fold.
        Console(stderr=True, highlight=False, soft_wrap=True).print(
            f"[yellow]warning:[/yellow] {escape(message)}")

    @contextlib.contextmanager
    def task(self, description: str, total: int) -> Iterator[Task]:
        if self.quiet:
            yield Task(None, None)
            return
        progress = _progress(self.console)
        with progress:
            yield Task(progress, progress.add_task(description, total=total, info=""))


QUIET = Reporter(quiet=True)
