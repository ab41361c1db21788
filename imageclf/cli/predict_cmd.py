"""``imageclf predict``."""

from __future__ import annotations

from pathlib import Path

import typer

from imageclf.cli.common import Backend, app, skip_bad_hint
from imageclf.core.progress import Reporter


@app.command("predict")
def predict_command(
    run: Path = typer.Argument(..., help="Model folder (or an exported .onnx file with --backend onnx)."),
    paths: list[str] = typer.Argument(..., help="Image files, folders or globs ('scans/*.png')."),
    csv_out: Path = typer.Option(None, "--csv", help="Write path, predicted class and probabilities."),
    batch_size: int = typer.Option(None, help="Images per forward pass (default: chosen for the backend and "
                                   "input size)."),
    device: str = typer.Option("auto", help="auto, cpu, cuda, ..."),
    backend: Backend = "torch",
    threads: int = typer.Option(None, help="Threads of the onnx / openvino runtime (default: the cores)."),
    skip_bad: bool = typer.Option(False, "--skip-bad", help="Skip unreadable images with a warning."),
    ood: str = typer.Option("refuse", "--ood", help="An image unlike the training images (OOD score past the "
                            "model's threshold): 'refuse' answers 'outside what this model was trained on' "
                            "instead of a class, 'flag' keeps its class and marks it."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Predict the class of new images with exactly the preprocessing stored in RUN.

    RUN may also be an .onnx file written by 'imageclf export' (with --backend onnx or openvino).
    The CSV has each image's OOD score and whether it is outside the model's threshold. On the
    onnx and openvino backends torch is never imported (while RUN/model.onnx is current).
    """
    # lazy: the model's modules import numpy and the runtimes; --help needs none of them
    from imageclf.inference.backends import load_backend
    from imageclf.inference.predictions import check_ood_mode, expand_inputs

    check_ood_mode(ood)
    files = expand_inputs(paths)
    # The count lets --backend auto weigh each runtime's start-up against its speed.
    model = load_backend(run, backend, device=device, threads=threads, images=len(files))
    reporter = Reporter(quiet=quiet)
    with skip_bad_hint():
        preds = model.predict(files, batch_size=batch_size, skip_bad=skip_bad, reporter=reporter,
                              ood_mode=ood)
    for path, reason in preds.errors:
        reporter.warn(f"skipped {path}: {reason}")
    if csv_out:
        preds.to_csv(csv_out)
    width = min(60, max((len(p) for p in preds.paths), default=4))
    scored = preds.ood_scores is not None
    header = (f"{'path':<{width}}  {'predicted':<12} " + " ".join(f"{'p_' + c:>12}" for c in preds.classes)
              + (f" {'ood_score':>10} {'outside':>7}" if scored else ""))
    typer.echo(header)
    for row, refused in zip(preds.rows(), preds.refused):
        probs = " ".join(f"{row['p_' + c]:>12.4f}" for c in preds.classes)
        flag = f" {row['ood_score']:>10.4g} {'yes' if row['outside'] else 'no':>7}" if scored else ""
        # One word in the table (the CSV and the API say it in full): "(outside)" for a refusal.
        label = "(outside)" if refused else row["predicted"]
        typer.echo(f"{row['path'][-width:]:<{width}}  {label:<12} {probs}{flag}")
    if scored and (n := int(preds.outside.sum())):
        verb = "answered 'outside what this model was trained on'" if ood == "refuse" else "flagged"
        reporter.warn(f"{n} of {len(preds)} images are unlike the training images (OOD score past "
                      f"{preds.ood_threshold:.4g}): {verb}")
