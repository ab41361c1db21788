"""``imageclf evaluate``."""

from __future__ import annotations

from pathlib import Path

import typer

from ..api import load
from ..progress import Reporter
from .common import app, parse_names


@app.command("evaluate")
def evaluate_command(
    run: Path = typer.Argument(..., help="Model folder."),
    data: str = typer.Argument(..., help="Dataset to evaluate on."),
    split: str = typer.Option(None, help="Split to use (default: test, else all, else val)."),
    json_out: Path = typer.Option(None, "--json", help="Also write the figures as JSON."),
    class_names: str = typer.Option(None, help="Names for an .npz's labels (default: the model's)."),
    batch_size: int = typer.Option(128, help="Images per forward pass."),
    device: str = typer.Option("auto", help="auto, cpu, cuda, ..."),
    skip_bad: bool = typer.Option(False, "--skip-bad", help="Skip unreadable images with a warning."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Classification report, accuracy, ROC-AUC and confusion matrix of RUN on DATA.

    Images are scored in file order with no augmentation and no shuffling, at the model's
    stored decision threshold.
    """
    model = load(run, device=device)
    result = model.evaluate(data, split=split, batch_size=batch_size, skip_bad=skip_bad,
                            class_names=parse_names(class_names), reporter=Reporter(quiet=quiet))
    typer.echo(result.report())
    if json_out:
        result.to_json(json_out)
