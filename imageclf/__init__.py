"""imageclf: train, judge, explain and serve image classifiers (chest X-rays first).

The one-line path::

    import imageclf
    model = imageclf.train("data/chest_xray", recipe="xray-5block", out="runs/xray", img_size=128)
    model.predict(["new.jpeg"]).labels
    model.evaluate("data/chest_xray", split="test").report()

and every layer below (datasets, caches, transforms, models, the loop) is usable alone.

Importing the package loads neither torch nor anything else heavy, and changes nothing in
the host process: each public name is imported on first use (PEP 562), and the process
settings of :mod:`imageclf.core.runtime` are made only by what imageclf runs itself.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from imageclf.core.errors import ImageclfError
from imageclf.core.version import __version__

if TYPE_CHECKING:  # what the names below resolve to, for type checkers and editors
    from imageclf.api import load, train
    from imageclf.data.sources import open_dataset
    from imageclf.evaluation.inspection import inspect
    from imageclf.models import create_model, list_models, register_model
    from imageclf.recipes.schema import Recipe, get_recipe, list_recipes, register_recipe

# Public name -> the module that defines it; imported on first use (PEP 562), so that
# `import imageclf` stays cheap (no torch) for a notebook or a server that only needs a part.
_LAZY = {
    "train": "imageclf.api", "load": "imageclf.api",
    "open_dataset": "imageclf.data.sources",
    "inspect": "imageclf.evaluation.inspection",
    "create_model": "imageclf.models", "list_models": "imageclf.models", "register_model": "imageclf.models",
    "Recipe": "imageclf.recipes.schema", "get_recipe": "imageclf.recipes.schema",
    "list_recipes": "imageclf.recipes.schema", "register_recipe": "imageclf.recipes.schema",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'imageclf' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # found directly from now on, without this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


__all__ = ["ImageclfError", "Recipe", "__version__", "create_model", "get_recipe", "inspect", "list_models",
           "list_recipes", "load", "open_dataset", "register_model", "register_recipe", "train"]
