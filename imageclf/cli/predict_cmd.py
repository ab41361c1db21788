"""``imageclf predict``."""

from __future__ import annotations

from pathlib import Path

import typer

from imageclf.cli.common import app, skip_bad_hint
from imageclf.core.progress import Reporter
from imageclf.inference.backends import load_backend


@app.command("predict")
def predict_command(
    run: Path = typer.Argument(..., help="Model folder (or an exported .onnx file with --backend onnx)."),
    paths: list[str] = typer.Argument(..., help="Image files, folders or globs ('scans/*.png')."),
    csv_out: Path = typer.Option(None, "--csv", help="Write path, predicted class and probabilities."),
    batch_size: int = typer.Option(128, help="Images per forward pass."),
    device: str = typer.Option("auto", help="auto, cpu, cuda, ..."),
    backend: str = typer.Option("torch", help="torch, or onnx (ONNX Runtime on CPU; uses RUN/model.onnx "
                                "when exported from these weights, else exports in memory)."),
    skip_bad: bool = typer.Option(False, "--skip-bad", help="Skip unreadable images with a warning."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Predict the class of new images with exactly the preprocessing stored in RUN.

    RUN may also be an .onnx file written by 'imageclf export' (with --backend onnx).
    """
    model = load_backend(run, backend, device=device)
    reporter = Reporter(quiet=quiet)
    with skip_bad_hint():
        preds = model.predict(paths, batch_size=batch_size, skip_bad=skip_bad, reporter=reporter)
    for path, reason in preds.errors:
        reporter.warn(f"skipped {path}: {reason}")
    if csv_out:
        preds.to_csv(csv_out)
    width = min(60, max((len(p) for p in preds.paths), default=4))
    header = f"{'path':<{width}}  {'predicted':<12} " + " ".join(f"{'p_' + c:>12}" for c in preds.classes)
    typer.echo(header)
    for row in preds.rows():
        probs = " ".join(f"{row['p_' + c]:>12.4f}" for c in preds.classes)
        typer.echo(f"{row['path'][-width:]:<{width}}  {row['predicted']:<12} {probs}")
