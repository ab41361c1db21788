"""The top-level verbs: ``imageclf.train`` and ``imageclf.load``."""

from __future__ import annotations

import time
from pathlib import Path

from imageclf.core.errors import ConfigError
from imageclf.core.progress import Reporter
from imageclf.data.sources import Dataset
from imageclf.inference.classifier import Classifier
from imageclf.recipes import resolve_recipe
from imageclf.recipes.schema import Recipe
from imageclf.training import distributed
from imageclf.training.loop import TrainOptions, fit

DEFAULT_RECIPE = "xray-5block"


def train(
    data: str | Path | Dataset,
    recipe: str | Recipe = DEFAULT_RECIPE,
    out: str | Path | None = None,
    *,
    device: str = "auto",
    resume: bool = False,
    force: bool = False,
    skip_bad: bool = False,
    class_names: list[str] | None = None,
    cache: str = "auto",
    cache_dir: str | None = None,
    workers: int | None = None,
    quiet: bool = True,
    precision: str = "auto",
    **overrides,
) -> Classifier:
    """Train a recipe on a dataset and return the trained, saved model.

    ``overrides`` set any recipe field (``epochs=5``, ``img_size=128``,
    ``**{"augment.rotation": 10}``). ``out`` defaults to ``runs/<recipe>-<time>``.

    >>> model = imageclf.train("pneumoniamnist.npz", "xray-5block", "runs/x", img_size=128)  # doctest: +SKIP
    """
    resume_epochs = None
    if resume:
        # A resumed run keeps its saved recipe; only its length may change.
        resume_epochs = overrides.pop("epochs", None)
        if overrides:
            raise ConfigError(f"only epochs can change when resuming, not {sorted(overrides)}")
        if out is None:
            raise ConfigError("resuming needs the run folder (out=...)")
        resolved = None
    else:
        resolved = resolve_recipe(recipe, overrides)
    if out is None:
        if distributed.requested():
            raise ConfigError("training with several processes needs the run folder (out=... / --out)")
        out = Path("runs") / f"{resolved.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    options = TrainOptions(device=device, resume=resume, force=force, skip_bad=skip_bad,
                           class_names=class_names, cache=cache, cache_dir=cache_dir,
                           workers=workers, resume_epochs=resume_epochs,
                           reporter=Reporter(quiet=quiet), precision=precision)
    return fit(data, resolved, out, options)


def load(run_dir: str | Path, device: str = "auto") -> Classifier:
    """Load a trained model folder (safetensors + JSON only; nothing is unpickled)."""
    return Classifier.load(run_dir, device=device)
