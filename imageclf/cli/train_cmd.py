"""``imageclf train``, and the how-to-train flags it shares with ``imageclf tune``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from imageclf.cli.common import app, parse_names, parse_settings, skip_bad_hint
from imageclf.core.errors import ConfigError
from imageclf.core.progress import Reporter

if TYPE_CHECKING:
    from imageclf.training.options import TrainOptions

# Flags for TrainOptions fields, declared once for every command that trains; each command
# builds one TrainOptions from them, which reaches fit through every path (folds, tune, DDP).
ClassNames = Annotated[str, typer.Option(help="Comma-separated names for an .npz's labels 0, 1, ...")]
Device = Annotated[str, typer.Option(help="auto (CUDA when present), cpu, cuda, cuda:1, ...")]
Workers = Annotated[int, typer.Option(help="Processes for the first decoding pass (default: all cores).")]
Cache = Annotated[str, typer.Option(help="Decoded-image cache: auto, memory or disk.")]
CacheDir = Annotated[str, typer.Option(help="Folder for the disk cache (default ~/.cache/imageclf).")]
SkipBad = Annotated[bool, typer.Option("--skip-bad", help="Skip unreadable images with a warning.")]
# How to read DATA (TrainOptions' data fields), shared by train, tune, review, evaluate and inspect.
PathColumn = Annotated[str, typer.Option(
    "--path-column", help="A CSV's column of image paths (default: path, file, filename, image, ...).")]
LabelColumn = Annotated[str, typer.Option(
    "--label-column", help="A CSV's column of labels (default: label, class, target, ... any case).")]
GroupBy = Annotated[str, typer.Option(
    "--group-by", help="Keep each group of images (a patient, a subject) on one side of every split: a CSV "
                       "column, or a regular expression searched in each file's path whose named or first "
                       "group names it, e.g. 'person(\\d+)_'.")]
Exclude = Annotated[str, typer.Option(
    "--exclude", help="A CSV of images to leave out of training, e.g. imageclf review's review.csv (the "
                      "rows whose exclude column is true; without one, every listed path). Validation "
                      "keeps them.")]
Log = Annotated[list[str], typer.Option(
    "--log", help="Also log to an experiment tracker: tensorboard (RUN/tensorboard/) or mlflow; repeatable. "
                  "RUN/history.csv is always written.")]
TrackingUri = Annotated[str, typer.Option(
    "--tracking-uri", help="MLflow tracking URI for --log mlflow, e.g. sqlite:///mlflow.db (default: "
                           "$MLFLOW_TRACKING_URI, else MLflow's own).")]
OodKeep = Annotated[float, typer.Option(
    "--ood-keep", help="Share of validation images the out-of-distribution threshold keeps (0.99).")]
Precision = Annotated[str, typer.Option(
    help="auto (bf16 autocast on CUDA; on a CPU with AMX / AVX512-BF16 where a training step "
         "measures 1.2x faster in it, as the seed CNNs do; else fp32), fp32 (bit-reproducible across "
         "machines), or bf16 (on any CPU: many times slower where it is emulated).")]


def train_options(*, class_names: str | None = None, log: list[str] | None = None, **flags) -> TrainOptions:
    """One TrainOptions from the shared flags' values, as every command that trains reads them:
    the comma-separated class names split, the --log choices as a tuple, the rest as given."""
    # lazy: reading data imports numpy and PIL; --help needs none of them
    from imageclf.training.options import TrainOptions

    return TrainOptions(class_names=parse_names(class_names), log=tuple(log or ()), **flags)


@app.command("train")
def train_command(
    data: str = typer.Argument(..., help="Dataset: class folders, split folders, CSV or .npz."),
    recipe: str = typer.Option(None, "--recipe", "-r", show_default=False,
                               help="Recipe name (see 'imageclf recipes') or a recipe .yaml file "
                                    "(default: chosen from DATA's images and said: a fine-tuned ImageNet "
                                    "network when the pretrained extra is installed; with --resume, the "
                                    "run's own)."),
    out: Path = typer.Option(None, "--out", "-o",
                             help="Run folder to write (default: runs/<recipe>-<time>)."),
    img_size: int = typer.Option(None, help="Input size in pixels (square)."),
    epochs: int = typer.Option(None, help="Number of epochs (with --resume: the new total)."),
    batch_size: int = typer.Option(None, help="Images per training step."),
    lr: float = typer.Option(None, help="Learning rate."),
    channels: int = typer.Option(None, help="1 (grayscale) or 3 (RGB)."),
    seed: int = typer.Option(None, help="Random seed: data split, initialisation, augmentation."),
    val_fraction: float = typer.Option(None, help="Fraction held out for validation when DATA "
                                                  "has no val split (stratified)."),
    set_: list[str] = typer.Option(None, "--set", help="Any recipe setting, key=value; dotted "
                                   "keys reach nested ones: --set augment.rotation=10."),
    pretrained: str = typer.Option(None, "--pretrained", help="Start from weights: 'imagenet' (those "
                                   "registered for the recipe's model), a name from 'imageclf weights', or "
                                   "a local file (.safetensors, .pth/.pt state_dict); see docs/quality.md."),
    folds: int = typer.Option(None, "--folds", help="K-fold cross-validation: K runs in OUT/fold-k, "
                              "mean ± std of their val figures in OUT/cv.json."),
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
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its checkpoint "
                                "(the command that started it may be repeated; only --epochs may change)."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing run folder."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars or epoch lines."),
    precision: Precision = "auto",
    log: Log = None,
    tracking_uri: TrackingUri = None,
    ood_keep: OodKeep = 0.99,
    nproc: int = typer.Option(None, "--nproc", help="Data-parallel training on N local processes "
                              "(DDP: gloo on CPU, NCCL on GPU); see docs/performance.md."),
) -> None:
    """Train a recipe on DATA and write a model folder (model.safetensors + config.json).

    Every recipe setting can be overridden; the resolved recipe is saved as RUN/recipe.yaml,
    which can be trained from again with --recipe RUN/recipe.yaml.
    """
    # lazy: training imports torch, which --help does not need
    from imageclf.api import default_recipe, train
    from imageclf.recipes import resolve_recipe
    from imageclf.training.distributed import launch
    from imageclf.training.folds import cross_validate
    from imageclf.training.run import default_run_dir, resumed_options

    overrides = {"img_size": img_size, "epochs": epochs, "batch_size": batch_size, "lr": lr,
                 "channels": channels, "seed": seed, "val_fraction": val_fraction,
                 **parse_settings(set_)}
    overrides["pretrained"] = pretrained
    overrides = {k: v for k, v in overrides.items() if v is not None}
    options = train_options(device=device, resume=resume, force=force, skip_bad=skip_bad,
                            class_names=class_names, path_column=path_column, label_column=label_column,
                            group_by=group_by, exclude=exclude, cache=cache, cache_dir=cache_dir,
                            workers=workers, quiet=quiet, precision=precision, log=log,
                            tracking_uri=tracking_uri, ood_keep=ood_keep)
    if folds and nproc and nproc > 1:
        raise ConfigError("--folds and --nproc cannot be combined (run the folds one by one)")
    options = resumed_options(options, out)
    # Opened once, here, with every data option; fit, the folds and DDP's processes take it as it is.
    dataset = options.open_dataset(data)
    for note in dataset.notes:
        Reporter(quiet=quiet).warn(note)
    if recipe is None and not resume:
        recipe, why = default_recipe(dataset)
        typer.echo(f"no --recipe given: {recipe} ({why})", err=True)
    with skip_bad_hint():
        if folds:
            cv = cross_validate(dataset, recipe, out, folds, options, **overrides)
            typer.echo(cv.summary())
            return
        if nproc is not None and nproc > 1:
            if out is None and not resume:  # chosen once, here: the N processes write one folder
                out = default_run_dir(resolve_recipe(recipe, overrides).name)
            launch(nproc, train, dataset, recipe, out, **options.as_kwargs(), **overrides)
            typer.echo(str(out))
            return
        model = train(dataset, recipe, out, **options.as_kwargs(), **overrides)
    typer.echo(model.source)
