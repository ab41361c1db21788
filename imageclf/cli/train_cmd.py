"""``imageclf train``."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from imageclf.api import DEFAULT_RECIPE, train
from imageclf.cli.common import app, parse_names, parse_settings
from imageclf.core.errors import ConfigError
from imageclf.training.distributed import launch
from imageclf.training.folds import cross_validate


@app.command("train")
def train_command(
    data: str = typer.Argument(..., help="Dataset: class folders, split folders, CSV or .npz."),
    recipe: str = typer.Option(DEFAULT_RECIPE, "--recipe", "-r",
                               help="Recipe name (see 'imageclf recipes') or a recipe .yaml file."),
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
    pretrained: Path = typer.Option(None, "--pretrained", help="Start from a local weights file "
                                    "(.safetensors, or .pth/.pt state_dict); see docs/quality.md."),
    folds: int = typer.Option(None, "--folds", help="K-fold cross-validation: K runs in OUT/fold-k, "
                              "mean ± std of their val figures in OUT/cv.json."),
    class_names: str = typer.Option(None, help="Comma-separated names for an .npz's labels 0, 1, ..."),
    device: str = typer.Option("auto", help="auto (CUDA when present), cpu, cuda, cuda:1, ..."),
    workers: int = typer.Option(None, help="Processes for the first decoding pass (default: all cores)."),
    cache: str = typer.Option("auto", help="Decoded-image cache: auto, memory or disk."),
    cache_dir: str = typer.Option(None, help="Folder for the disk cache (default ~/.cache/imageclf)."),
    skip_bad: bool = typer.Option(False, "--skip-bad", help="Skip unreadable images with a warning."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its checkpoint."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing run folder."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars or epoch lines."),
    precision: str = typer.Option("auto", help="auto (bf16 autocast on CUDA, fp32 on CPU), fp32, or "
                                  "bf16 (on CPU too: fast with AMX / AVX512-BF16, not bit-exact; "
                                  "many times slower on CPUs without them)."),
    nproc: int = typer.Option(None, "--nproc", help="Data-parallel training on N local processes "
                              "(DDP: gloo on CPU, NCCL on GPU); see docs/performance.md."),
) -> None:
    """Train a recipe on DATA and write a model folder (model.safetensors + config.json).

    Every recipe setting can be overridden; the resolved recipe is saved as RUN/recipe.yaml,
    which can be trained from again with --recipe RUN/recipe.yaml.
    """
    overrides = {"img_size": img_size, "epochs": epochs, "batch_size": batch_size, "lr": lr,
                 "channels": channels, "seed": seed, "val_fraction": val_fraction,
                 **parse_settings(set_)}
    overrides["pretrained"] = str(pretrained) if pretrained else None
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if folds and nproc and nproc > 1:
        raise ConfigError("--folds and --nproc cannot be combined (run the folds one by one)")
    if folds:

        cv = cross_validate(data, recipe, out, folds, device=device, resume=resume, force=force,
                            skip_bad=skip_bad, class_names=parse_names(class_names), cache=cache,
                            cache_dir=cache_dir, workers=workers, quiet=quiet, **overrides)
        typer.echo(cv.summary())
        return
    kwargs = dict(device=device, resume=resume, force=force, skip_bad=skip_bad,
                  class_names=parse_names(class_names), cache=cache, cache_dir=cache_dir,
                  workers=workers, quiet=quiet, precision=precision, **overrides)
    if nproc is not None and nproc > 1:

        out = out or Path("runs") / f"{Path(recipe).stem}-{time.strftime('%Y%m%d-%H%M%S')}"
        launch(nproc, train, data, recipe, out, **kwargs)
        typer.echo(str(out))
        return
    model = train(data, recipe, out, **kwargs)
    typer.echo(model.source)
