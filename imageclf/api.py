"""The top-level verbs: ``imageclf.train`` and ``imageclf.load``.

The one place where training meets inference: :func:`train` runs
:func:`imageclf.training.loop.fit`, then loads the model folder it wrote as a
:class:`~imageclf.inference.classifier.Classifier`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from imageclf.core.errors import ConfigError
from imageclf.data.sources import Dataset, open_dataset
from imageclf.inference.classifier import Classifier
from imageclf.recipes import resolve_recipe
from imageclf.recipes.choose import choose_recipe
from imageclf.recipes.schema import Recipe
from imageclf.training import distributed
from imageclf.training.loop import fit
from imageclf.training.options import TrainOptions
from imageclf.training.run import default_run_dir, resumed_options


def default_recipe(data: str | Path | Dataset, class_names: list[str] | None = None) -> tuple[str, str]:
    """(recipe name, why) for ``data`` when no recipe is given: chosen from the images
    (:func:`imageclf.recipes.choose.choose_recipe`)."""
    ds = data if isinstance(data, Dataset) else open_dataset(data, class_names)
    return choose_recipe(ds)


def train(data: str | Path | Dataset, recipe: str | Path | Recipe | None = None,
          out: str | Path | None = None, **kwargs: Any) -> Classifier:
    """Train a recipe on a dataset and return the trained, saved model.

    ``recipe``: a registered name, a YAML file or a Recipe (default: chosen from the data by
    :func:`default_recipe`, and said; when resuming, the run's own). ``out`` defaults to
    ``runs/<recipe>-<time>``. Keywords that name a field of
    :class:`~imageclf.training.options.TrainOptions` say how to train: ``device`` ("auto"),
    ``resume``, ``force``, ``skip_bad``, ``class_names``, ``cache`` ("auto"), ``cache_dir``,
    ``workers``, ``quiet`` (True), ``precision`` ("auto"). Every other keyword
    overrides a recipe field (``epochs=5``, ``img_size=128``, ``**{"augment.rotation": 10}``).
    ``resume=True`` continues ``out`` from its checkpoint; the recipe and overrides that
    started it may be repeated, and only ``epochs`` may differ from them.

    >>> model = imageclf.train("pneumoniamnist.npz", "xray-5block", "runs/x", img_size=128)  # doctest: +SKIP
    """
    options, overrides = TrainOptions.split(kwargs)
    options = resumed_options(options, out)  # a resumed run keeps the grouping it started with
    data = options.open_dataset(data)  # once: columns, groups and exclusions as the options say
    if recipe is None and not options.resume:
        recipe, why = default_recipe(data)
        options.reporter().print(f"no recipe given: {recipe} ({why})")
    if out is None:
        if options.resume:
            raise ConfigError("resuming needs the run folder (out=... / --out)")
        if distributed.requested():
            raise ConfigError("training with several processes needs the run folder (out=... / --out)")
        out = default_run_dir(resolve_recipe(recipe, overrides).name)
    result = fit(data, recipe, out, options, overrides=overrides)
    return Classifier.load(result.path, device=result.device)


def load(run_dir: str | Path, device: str = "auto") -> Classifier:
    """Load a trained model folder (safetensors + JSON only; nothing is unpickled)."""
    return Classifier.load(run_dir, device=device)
