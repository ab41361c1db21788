"""``imageclf recipes``, ``imageclf recipe`` and ``imageclf models``."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from imageclf.cli.common import app, console

if TYPE_CHECKING:
    from rich.table import Table


def _table(*columns: str) -> Table:
    # Lazy: rich.table is 10 ms of every command's start (--help's too) otherwise.
    from rich.table import Table

    return Table(*columns, show_lines=False)


@app.command("recipes")
def recipes_command() -> None:
    """List the built-in recipes: name, seed article, model, input and parameter count."""
    # lazy: the model registry imports torch, which --help does not need
    from imageclf.models import create_model, num_params
    from imageclf.recipes.schema import get_recipe, list_recipes

    table = _table()
    for col in ("recipe", "seed", "model", "input", "params", "epochs"):
        table.add_column(col, no_wrap=True)
    table.add_column("description")
    for name in list_recipes():
        r = get_recipe(name)
        outputs = 1 if r.article_classes == 2 else r.article_classes
        params = num_params(create_model(r.model, r.channels, outputs, r.size, **r.model_kwargs))
        table.add_row(name, r.seed_article or "-", r.model, f"{r.size[0]}x{r.size[1]}x{r.channels}",
                      f"{params:,}", str(r.epochs), r.description)
    console.print(table)


@app.command("recipe")
def recipe_command(name: str = typer.Argument(..., help="Recipe name or .yaml file.")) -> None:
    """Print a recipe's full settings as YAML (save, edit, train with --recipe FILE)."""
    # lazy: the recipe registry imports torch, which --help does not need
    from imageclf.recipes.schema import get_recipe

    console.print(get_recipe(name).to_yaml(), end="")


@app.command("models")
def models_command() -> None:
    """List the registered model architectures."""
    # lazy: the model registry imports torch, which --help does not need
    from imageclf.models import list_models, model_entry

    table = _table("model", "family", "description")
    for name in list_models():
        e = model_entry(name)
        table.add_row(name, e.family, e.description)
    console.print(table)
