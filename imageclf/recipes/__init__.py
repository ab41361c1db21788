"""Recipes: what to train, as data (a dataclass that reads and writes YAML).

``schema`` holds the :class:`Recipe` dataclass, its registry and YAML; ``seeds`` the five
seed articles' recipes; ``strong`` the stronger from-scratch recipes beside them; ``transfer``
the fine-tune and linear-probe recipes on offline ImageNet weights; ``choose`` the recipe for
data given without one. Importing this package registers them all. May import: core, data, models.
"""

from imageclf.recipes import seeds, strong, transfer  # noqa: F401  (registers the built-in recipes)
from imageclf.recipes.schema import (
    EarlyStopping,
    Recipe,
    ReduceLROnPlateau,
    get_recipe,
    list_recipes,
    load_yaml,
    register_recipe,
    resolve_recipe,
)

__all__ = ["EarlyStopping", "Recipe", "ReduceLROnPlateau", "get_recipe", "list_recipes", "load_yaml",
           "register_recipe", "resolve_recipe"]
