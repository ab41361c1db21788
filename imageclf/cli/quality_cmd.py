"""``imageclf tune`` and ``imageclf ensemble`` (``--folds`` and ``--pretrained`` are on ``train``)."""

from __future__ import annotations

from pathlib import Path

import typer

from imageclf.cli.common import app, parse_settings
from imageclf.cli.train_cmd import (
    Cache,
    CacheDir,
    ClassNames,
    Device,
    Exclude,
    GroupBy,
    LabelColumn,
    Log,
    OodKeep,
    PathColumn,
    Precision,
    SkipBad,
    TrackingUri,
    Workers,
    train_options,
)
from imageclf.core.errors import ConfigError
from imageclf.core.progress import Reporter


def _ints(text: str | None, what: str) -> list[int] | None:
    if not text:
        return None
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"{what} takes comma-separated whole numbers, got {text!r}") from None


@app.command("tune")
def tune_command(
    data: str = typer.Argument(..., help="Dataset: class folders, split folders, CSV or .npz."),
    recipe: str = typer.Option(None, "--recipe", "-r", show_default=False,
                               help="Recipe name or .yaml file to tune (default: the one 'imageclf train' "
                                    "would choose for DATA)."),
    out: Path = typer.Option(Path("runs/tune"), "--out", "-o", help="Folder for the trials, "
                             "tune.json and best.yaml."),
    trials: int = typer.Option(None, help="Number of trials (default 20 without --time-budget)."),
    time_budget: float = typer.Option(None, "--time-budget", help="Stop after this many seconds."),
    metric: str = typer.Option(None, help="Validation figure to optimise (default: val_auc for two "
                                          "classes, else val_accuracy)."),
    epochs: int = typer.Option(None, help="Epochs per trial (default: the recipe's)."),
    sizes: str = typer.Option(None, help="Image sizes to try, e.g. 28,32,48 (default: around the "
                                         "recipe's)."),
    batch_sizes: str = typer.Option(None, "--batch-sizes", help="Batch sizes to try, e.g. 32,64,128."),
    seed: int = typer.Option(0, help="Sampler seed."),
    set_: list[str] = typer.Option(None, "--set", help="Base recipe setting, key=value."),
    class_names: ClassNames = None,
    path_column: PathColumn = None,
    label_column: LabelColumn = None,
    group_by: GroupBy = None,
    exclude: Exclude = None,
    device: Device = "auto",
    workers: Workers = None,
    cache: Cache = "auto",
    cache_dir: CacheDir = None,
    skip_bad: SkipBad = False,
    precision: Precision = "auto",
    log: Log = None,
    tracking_uri: TrackingUri = None,
    ood_keep: OodKeep = 0.99,
    force: bool = typer.Option(False, "--force", help="Overwrite an existing --out folder."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No per-trial lines."),
) -> None:
    """Search a recipe's learning rate, weight decay, augmentation, image and batch size with Optuna.

    Trials are judged on validation data only (TPE sampling, median pruning); the best
    trial's full recipe is written to OUT/best.yaml, to train from with --recipe."""
    # lazy: training imports torch, which --help does not need
    from imageclf.api import default_recipe
    from imageclf.training.tune import tune

    overrides = {**parse_settings(set_), **({"epochs": epochs} if epochs else {})}
    options = train_options(device=device, force=force, skip_bad=skip_bad, class_names=class_names,
                            path_column=path_column, label_column=label_column, group_by=group_by,
                            exclude=exclude, cache=cache, cache_dir=cache_dir, workers=workers, quiet=quiet,
                            precision=precision, log=log, tracking_uri=tracking_uri, ood_keep=ood_keep)
    dataset = options.open_dataset(data)
    for note in dataset.notes:
        Reporter(quiet=quiet).warn(note)
    recipe = recipe or default_recipe(dataset)[0]
    result = tune(dataset, recipe, out, trials=trials if trials or time_budget else 20,
                  time_budget=time_budget, metric=metric, sizes=_ints(sizes, "--sizes"),
                  batch_sizes=_ints(batch_sizes, "--batch-sizes"), seed=seed, options=options, **overrides)
    typer.echo(result.summary())
    typer.echo(f"train it: imageclf train {data} --recipe {result.best_recipe}")


@app.command("ensemble")
def ensemble_command(
    runs: list[Path] = typer.Argument(..., help="Two or more model folders (same classes and input)."),
    out: Path = typer.Option(..., "--out", "-o", help="Model folder to write."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing --out folder."),
) -> None:
    """Average several models' probabilities into one model folder.

    The result loads, predicts, evaluates, explains, serves and exports like any other."""
    # lazy: loading a model imports torch, which --help and the listing commands do not need
    from imageclf.modelfile.ensemble import build_ensemble

    typer.echo(build_ensemble(runs, out, force=force, reporter=Reporter()))
