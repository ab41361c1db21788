"""``imageclf evaluate``."""

from __future__ import annotations

from pathlib import Path

import typer

from imageclf.cli.common import Backend, app, parse_names, skip_bad_hint
from imageclf.cli.train_cmd import LabelColumn, PathColumn
from imageclf.core.errors import ConfigError
from imageclf.core.progress import Reporter
from imageclf.evaluation.names import DEFAULT_BOOTSTRAP


def parse_prevalences(items: list[str] | None) -> dict[str, float]:
    """``0.1`` or ``name=0.1`` -> {name: 0.1}; a share outside (0, 1) is an error."""
    out = {}
    for item in items or []:
        name, _, value = item.rpartition("=")
        try:
            p = float(value)
        except ValueError:
            p = -1.0
        if not 0.0 < p < 1.0:
            raise ConfigError(f"--prevalence takes a share between 0 and 1 (e.g. 0.1 or clinic=0.1), "
                              f"got {item!r}")
        out[name or f"given {p:.1%}"] = p
    return out


@app.command("evaluate")
def evaluate_command(
    run: Path = typer.Argument(..., help="Model folder."),
    data: str = typer.Argument(..., help="Dataset to evaluate on."),
    split: str = typer.Option(None, help="Split to use (default: test, else all, else val). 'val' on "
                              "data without one is the hold-out the model's training carved."),
    json_out: Path = typer.Option(None, "--json", help="Also write the figures as JSON."),
    report: Path = typer.Option(None, "--report", help="Write a self-contained HTML report (plots "
                                "embedded, opens offline)."),
    bootstrap: int = typer.Option(DEFAULT_BOOTSTRAP, help="Bootstrap resamples for the 95% intervals."),
    seed: int = typer.Option(0, help="Seed for the bootstrap and the sample grid."),
    prevalence: list[str] = typer.Option(None, "--prevalence", help="Also mark this share of the "
                                         "positive class on the PPV/NPV curve: 0.1 or clinic=0.1."),
    class_names: str = typer.Option(None, help="Names for an .npz's labels (default: the model's)."),
    path_column: PathColumn = None,
    label_column: LabelColumn = None,
    groups: Path = typer.Option(None, "--groups", help="A CSV of image paths and any group columns (site, "
                                "sex, age band): accuracy, ROC-AUC, sensitivity and specificity per group, "
                                "with bootstrap intervals; those wholly below the overall figure marked."),
    batch_size: int = typer.Option(128, help="Images per forward pass."),
    device: str = typer.Option("auto", help="auto, cpu, cuda, ..."),
    backend: Backend = "torch",
    skip_bad: bool = typer.Option(False, "--skip-bad", help="Skip unreadable images with a warning."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Classification report, accuracy, ROC-AUC and confusion matrix of RUN on DATA.

    Images are scored in file order with no augmentation and no shuffling, at the model's
    stored decision threshold. --json and --report hold the same figures (curves, bootstrap
    intervals, calibration, PPV/NPV against prevalence, ...). On a --backend other than torch,
    torch scores the same images too, and a line says how accuracy and ROC-AUC change.
    """
    # lazy: loading a model imports torch, which --help and the listing commands do not need
    from imageclf.evaluation.report.subgroups import subgroup_lines
    from imageclf.inference.measure import evaluate_backend

    marks = parse_prevalences(prevalence)
    reporter = Reporter(quiet=quiet)
    with skip_bad_hint():
        result, change = evaluate_backend(
            run, backend, data, device=device, split=split, batch_size=batch_size, skip_bad=skip_bad,
            class_names=parse_names(class_names), keep_images=report is not None, reporter=reporter,
            path_column=path_column, label_column=label_column, groups=groups)
    typer.echo(result.report())
    if change:
        typer.echo(change)
    if json_out or report or groups:
        figures = result.figures(n_bootstrap=bootstrap, seed=seed, prevalences=marks)
        if groups:
            typer.echo("\n" + "\n".join(subgroup_lines(figures["subgroups"])))
    if json_out:
        result.to_json(json_out)
    if report:
        result.to_html(report)
        reporter.print(f"report written to {report}")


@app.command("ood")
def ood_command(
    run: Path = typer.Argument(..., help="Model folder."),
    data: str = typer.Argument(..., help="The data it trained on (its training and validation split)."),
    keep: float = typer.Option(0.99, help="Share of the validation images the threshold keeps."),
    method: str = typer.Option("mahalanobis+knn", help="Feature distances: mahalanobis, knn, or both "
                               "(mahalanobis+knn: the larger counts)."),
    workers: int = typer.Option(None, help="Processes for decoding (default: all cores)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Fit RUN's out-of-distribution score on DATA: for a model folder from before imageclf recorded
    it, or to keep another share of the validation images. Training does this itself."""
    # lazy: loading a model imports torch, which --help and the listing commands do not need
    from imageclf.inference.ood import refit_ood
    from imageclf.modelfile.ood import parse_method

    parse_method(method)  # a bad name stops here, before any image is decoded
    stats = refit_ood(run, data, keep=keep, method=method, workers=workers, reporter=Reporter(quiet=quiet))
    typer.echo(f"{run}: OOD threshold {stats.threshold:.4g} ({method}) keeps {stats.info['val_kept']:.1%} of "
               f"{stats.info['val_images']} validation images")
