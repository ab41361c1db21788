"""imageclf: train, judge, explain and serve image classifiers (chest X-rays first).

The one-line path::

    import imageclf
    model = imageclf.train("data/chest_xray", recipe="xray-5block", out="runs/xray", img_size=128)
    model.predict(["new.jpeg"]).labels
    model.evaluate("data/chest_xray", split="test").report()

and every layer below (datasets, caches, transforms, models, the loop) is usable alone.
"""

from __future__ import annotations

import os as _os

# Before torch loads libgomp: its default wait policy spins idle OpenMP threads, which on a
# machine busy with anything else (decode workers, other jobs) steal the cores the working
# thread needs; PASSIVE lets them sleep. 2-4x faster steps on a loaded 2-core machine,
# BENCHMARKS.md (Speed). A value the user set (ACTIVE) is kept.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from imageclf.api import load, train  # noqa: E402
from imageclf.core.errors import ImageclfError
from imageclf.core.version import __version__  # noqa: E402
from imageclf.data.sources import open_dataset
from imageclf.evaluation.inspection import inspect
from imageclf.models import create_model, list_models, register_model
from imageclf.recipes.schema import Recipe, get_recipe, list_recipes, register_recipe

__all__ = ["ImageclfError", "Recipe", "__version__", "create_model", "get_recipe", "inspect", "list_models",
           "list_recipes", "load", "open_dataset", "register_model", "register_recipe", "train"]
