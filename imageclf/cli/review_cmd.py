"""``imageclf review``: rank training images by how likely their label is wrong."""

from __future__ import annotations

from pathlib import Path

import typer

from imageclf.cli.common import app, parse_settings, skip_bad_hint
from imageclf.cli.train_cmd import (
    ClassNames,
    Device,
    GroupBy,
    LabelColumn,
    PathColumn,
    Precision,
    SkipBad,
    Workers,
    train_options,
)
from imageclf.core.progress import Reporter
from imageclf.evaluation.names import RANKINGS


@app.command("review")
def review_command(
    data: str = typer.Argument(..., help="Dataset: class folders, split folders, CSV or .npz."),
    recipe: str = typer.Option(None, "--recipe", "-r", show_default=False,
                               help="Recipe each fold trains (default: the one 'imageclf train' would "
                                    "choose for DATA); a fast one with few --epochs is enough."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for review.csv, review.html and the "
                             "fold models (fold-k)."),
    folds: int = typer.Option(5, "--folds", help="K: each image is scored by the model trained on the "
                              "other K - 1 folds."),
    rank_by: str = typer.Option("self_confidence", "--rank-by",
                                help=f"Label-quality score to rank by: {', '.join(RANKINGS)}."),
    top: int = typer.Option(200, "--top", help="Most suspect images shown (with thumbnails) in review.html."),
    img_size: int = typer.Option(None, help="Input size in pixels (square)."),
    epochs: int = typer.Option(None, help="Epochs per fold."),
    batch_size: int = typer.Option(None, help="Images per training step."),
    lr: float = typer.Option(None, help="Learning rate."),
    seed: int = typer.Option(None, help="Random seed: folds, initialisation, augmentation."),
    set_: list[str] = typer.Option(None, "--set", help="Any recipe setting, key=value."),
    class_names: ClassNames = None,
    path_column: PathColumn = None,
    label_column: LabelColumn = None,
    group_by: GroupBy = None,
    device: Device = "auto",
    workers: Workers = None,
    skip_bad: SkipBad = False,
    precision: Precision = "auto",
    force: bool = typer.Option(False, "--force", help="Overwrite an existing --out folder."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars or epoch lines."),
) -> None:
    """Rank DATA's training images by how likely their label is wrong (confident learning).

    Every image is scored out-of-fold: K models, each trained on the other folds. OUT/review.csv
    lists every image, most suspect first, with the suggested label and an 'exclude' column
    (true for the flagged issues); OUT/review.html shows the top with thumbnails. Then
    'imageclf train DATA --exclude OUT/review.csv' trains without the excluded images.
    """
    # lazy: training imports torch, which --help does not need
    from imageclf.api import default_recipe
    from imageclf.training.review import review

    overrides = {"img_size": img_size, "epochs": epochs, "batch_size": batch_size, "lr": lr, "seed": seed,
                 **parse_settings(set_)}
    overrides = {k: v for k, v in overrides.items() if v is not None}
    options = train_options(device=device, force=force, skip_bad=skip_bad, class_names=class_names,
                            path_column=path_column, label_column=label_column, group_by=group_by,
                            workers=workers, quiet=quiet, precision=precision)
    dataset = options.open_dataset(data)
    for note in dataset.notes:
        Reporter(quiet=quiet).warn(note)
    if recipe is None:
        recipe, why = default_recipe(dataset)
        typer.echo(f"no --recipe given: {recipe} ({why})", err=True)
    with skip_bad_hint():
        result = review(dataset, recipe, out, folds, options, rank_by=rank_by, html_rows=top, **overrides)
    for row in result.rows[:10]:
        mark = "  issue" if row["issue"] else ""
        typer.echo(f"{row['rank']:>5}  {row['score']:.4f}  given {row['given']:<12} suggested "
                   f"{row['suggested']:<12} {row['path']}{mark}")
    typer.echo(result.summary())
