"""``imageclf inspect``, ``calibrate``, ``explain`` and ``summary``: looking at data and models."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from imageclf.cli.common import app, console, parse_names
from imageclf.cli.train_cmd import GroupBy, LabelColumn, PathColumn
from imageclf.core.errors import ConfigError
from imageclf.core.io import atomic_write_text
from imageclf.core.progress import Reporter


@app.command("inspect")
def inspect_command(
    data: str = typer.Argument(..., help="Dataset: class folders, split folders, CSV or .npz."),
    html: Path = typer.Option(None, "--html", help="Write a self-contained HTML page with the plots."),
    json_out: Path = typer.Option(None, "--json", help="Write the figures as JSON."),
    recipe: str = typer.Option(None, "--recipe", "-r", show_default=False,
                               help="Recipe whose preprocessing and augmentation the augmented grid shows "
                                    "(default: the one 'imageclf train' would choose for DATA)."),
    img_size: int = typer.Option(None, help="Input size for the augmented grid (default: the recipe's)."),
    class_names: str = typer.Option(None, help="Comma-separated names for an .npz's labels 0, 1, ..."),
    path_column: PathColumn = None,
    label_column: LabelColumn = None,
    group_by: GroupBy = None,
    max_distance: int = typer.Option(8, help="Near-duplicates: most pHash bits (of 64) that may differ."),
    min_correlation: float = typer.Option(0.99, help="Near-duplicates: least thumbnail correlation."),
    workers: int = typer.Option(None, help="Processes for decoding (default: all cores)."),
    seed: int = typer.Option(0, help="Seed for the sample and augmentation grids."),
) -> None:
    """The layout recognised, class counts, image sizes, modes, unreadable files, duplicates and
    groups across splits of DATA."""
    # lazy: the recipes and the decoders' checks import torch, which --help does not need
    from imageclf.api import default_recipe
    from imageclf.data.sources import open_dataset
    from imageclf.evaluation.inspection import inspect

    names = parse_names(class_names)
    dataset = open_dataset(data, names, path_column=path_column, label_column=label_column, group_by=group_by)
    recipe = recipe or default_recipe(dataset)[0]
    result = inspect(dataset, recipe, img_size=img_size, workers=workers, seed=seed,
                     max_distance=max_distance, min_correlation=min_correlation)
    typer.echo(result.summary())
    if json_out:
        result.to_json(json_out)
    if html:
        result.to_html(html)
        typer.echo(f"wrote {html}")


@app.command("calibrate")
def calibrate_command(
    run: Path = typer.Argument(..., help="Model folder (its config.json is updated)."),
    data: str = typer.Argument(..., help="Dataset holding the validation split."),
    split: str = typer.Option("val", help="Split to calibrate on; 'test' is refused."),
    target: str = typer.Option(None, help="Threshold target: sensitivity=0.95, specificity=0.9, "
                                          "youden or f1."),
    temperature: bool = typer.Option(False, "--temperature", help="Fit temperature scaling first."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Report only; leave config.json unchanged."),
    json_out: Path = typer.Option(None, "--json", help="Write what was chosen as JSON."),
    class_names: str = typer.Option(None, help="Names for an .npz's labels (default: the model's)."),
    batch_size: int = typer.Option(128, help="Images per forward pass."),
    device: str = typer.Option("auto", help="auto, cpu, cuda, ..."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Choose RUN's decision threshold (and temperature) on validation data and store them.

    predict, evaluate and the server then use them. Only validation data may be used:
    a threshold chosen on the test split would make every test figure optimistic.
    """
    # lazy: loading a model imports torch, which --help and the listing commands do not need
    from imageclf.api import load
    from imageclf.evaluation.calibrate import calibrate

    result = calibrate(load(run, device=device), data, split=split, target=target, temperature=temperature,
                       save=not dry_run, batch_size=batch_size, class_names=parse_names(class_names),
                       reporter=Reporter(quiet=quiet))
    typer.echo(result.summary())
    if json_out:
        atomic_write_text(json_out, json.dumps(result.to_dict(), indent=2) + "\n")


@app.command("explain")
def explain_command(
    run: Path = typer.Argument(..., help="Model folder."),
    images: list[str] = typer.Argument(..., help="Image files, folders or globs."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for the overlays and feature maps."),
    layer: str = typer.Option(None, help="Layer to explain (default: the last Conv2d); see "
                                         "'imageclf summary RUN' for names."),
    feature_maps: bool = typer.Option(False, "--feature-maps", help="Also write a grid of activations "
                                      "for every conv and pooling layer."),
    max_channels: int = typer.Option(32, help="Channels per feature-map grid."),
    device: str = typer.Option("auto", help="auto, cpu, cuda, ..."),
) -> None:
    """Grad-CAM heatmap of the predicted class over each image, as <out>/<name>_gradcam.png."""
    # lazy: loading a model imports torch, which --help and the listing commands do not need
    from imageclf.api import load
    from imageclf.evaluation.explain import explain_files
    from imageclf.inference.classifier import expand_inputs

    model = load(run, device=device)
    rows = explain_files(model, expand_inputs(images), out, layer, feature_maps, max_channels)
    for row in rows:
        p = max(row["probs"].values())
        extra = f", {len(row['feature_maps'])} feature-map grids" if row["feature_maps"] else ""
        typer.echo(f"{row['path']}: {row['predicted']} ({p:.3f}) -> {row['gradcam']}{extra}")


@app.command("summary")
def summary_command(
    run: Path = typer.Argument(..., help="Model folder."),
    diagram: Path = typer.Option(None, "--diagram", help="Also draw the architecture to a .png or .svg."),
    json_out: Path = typer.Option(None, "--json", help="Write the layer table as JSON."),
) -> None:
    """Layer table (name, type, output shape, parameters) as Keras' model.summary()."""
    # lazy: loading a model imports torch, which --help and the listing commands do not need
    from imageclf.api import load

    if diagram and diagram.suffix.lower() not in (".png", ".svg"):
        raise ConfigError(f"{diagram}: the diagram can be .png or .svg")
    summary = load(run, device="cpu").summary()
    console.print(summary.to_text(), markup=False, highlight=False, soft_wrap=True)
    if diagram:
        summary.draw(diagram)
        typer.echo(f"wrote {diagram}")
    if json_out:
        atomic_write_text(json_out, json.dumps(summary.to_dict(), indent=2) + "\n")
