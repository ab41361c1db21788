"""A learning-rate finder (fastai's ``lr_find``, after Smith 2017): one short sweep of training
steps whose learning rate grows geometrically, the loss recorded at each.

The loss first falls slowly (the rate is too small to matter), then fast, then blows up; a
good rate sits where it falls fastest. The suggestion is that steepest point of the smoothed
curve before its minimum (fastai's ``steep``), falling back to a tenth of the rate at the
minimum. It trains the recipe's network on its own training images with its augmentation,
from its pretrained weights when it has them, and writes nothing unless asked for the plot.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from imageclf.core.errors import ConfigError
from imageclf.core.progress import QUIET, Reporter
from imageclf.data.cache import batches
from imageclf.data.sources import training_splits
from imageclf.evaluation.report.plots import lr_find_plot
from imageclf.inference.forward import resolve_device
from imageclf.models import create_model
from imageclf.models.heads import num_outputs
from imageclf.recipes import resolve_recipe
from imageclf.recipes.schema import Recipe
from imageclf.training.finetune import freeze_batchnorm
from imageclf.training.optim import build_optimizer, set_lr
from imageclf.training.options import TrainOptions
from imageclf.training.pretrained import load_pretrained, resolve_pretrained
from imageclf.training.run import TrainingState, prepare_caches
from imageclf.training.steps import batch_plan, loss_per_sample, step_inputs

SMOOTHING = 0.98  # of the loss's exponential moving average, as fastai
DIVERGED = 4.0  # stop once the smoothed loss exceeds this many times its minimum


@dataclass
class LrFinding:
    """The sweep: learning rates, smoothed losses, and the suggested rate."""

    lrs: list[float]
    losses: list[float]
    suggestion: float
    recipe: str

    def summary(self) -> str:
        low = self.lrs[int(np.argmin(self.losses))]
        return (f"{self.recipe}: {len(self.lrs)} steps from {self.lrs[0]:.1e} to {self.lrs[-1]:.1e}; "
                f"lowest loss at {low:.2e}; suggested learning rate {self.suggestion:.2e} "
                f"(train with --lr {self.suggestion:.2g})")

    def to_png(self) -> bytes:
        return lr_find_plot(self.lrs, self.losses, self.suggestion)

    def to_dict(self) -> dict[str, Any]:
        return {"recipe": self.recipe, "suggestion": self.suggestion, "lrs": self.lrs, "losses": self.losses}


def suggest(lrs: list[float], losses: list[float]) -> float:
    """The rate where the smoothed loss falls fastest (per log-rate) before its minimum."""
    low = int(np.argmin(losses))
    if low < 3:
        return lrs[low] / 10
    slope = np.gradient(np.asarray(losses[:low + 1]), np.log(np.asarray(lrs[:low + 1])))
    return float(lrs[int(np.argmin(slope))])


def lr_find(data: str | Path, recipe: str | Path | Recipe, *, options: TrainOptions | None = None,
            start: float = 1e-7, end: float = 1.0, steps: int = 100, reporter: Reporter = QUIET,
            **overrides: Any) -> LrFinding:
    """Sweep ``steps`` training steps from ``start`` to ``end`` on ``data``'s training images."""
    if not 0 < start < end or steps < 5:
        raise ConfigError(f"lr-find needs 0 < start < end and at least 5 steps (got {start}, {end}, {steps})")
    options = options or TrainOptions()
    r = resolve_recipe(recipe, overrides)
    ds = options.open_dataset(data)
    train_split, _ = training_splits(ds, r.val_fraction, r.carve_seed)
    device = resolve_device(options.device)
    torch.manual_seed(r.seed)
    model = create_model(r.model, r.channels, num_outputs(ds.num_classes), r.size, **r.model_kwargs)
    if r.pretrained:
        reporter.print(load_pretrained(model, resolve_pretrained(r.pretrained, r.model)[0]).summary())
    train, _ = prepare_caches(train_split, None, r.preprocessing(), options, reporter)
    model = model.to(device).to(memory_format=torch.channels_last)
    state = TrainingState(model=model, optimizer=build_optimizer(r, model),
                          num_outputs=num_outputs(ds.num_classes), device=device)
    state.start_epoch(r.seed)
    return _sweep(state, r, train, start, end, steps, reporter)


def _sweep(state: TrainingState, r: Recipe, train, start: float, end: float, steps: int,
           reporter: Reporter) -> LrFinding:
    plan: list[np.ndarray] = []
    epoch = 0
    while len(plan) < steps:  # as many passes over the images as the sweep needs
        plan += batch_plan(len(train), r.batch_size, epoch, r.seed, None)
        epoch += 1
    model, pre = state.model, r.preprocessing()
    model.train()
    if r.freeze_bn:
        freeze_batchnorm(model)
    lrs, losses, avg, best = [], [], 0.0, math.inf
    with reporter.task("lr-find", total=steps) as bar:
        for i, (idx, pixels) in enumerate(zip(plan[:steps], batches(train.images, plan[:steps]))):
            lr = start * (end / start) ** (i / (steps - 1))
            set_lr(state.optimizer, lr)
            x, _, target, _ = step_inputs(state, r, pre, pixels, train.labels[idx], None, [r.seed, 0, i])
            loss = loss_per_sample(model(x), target, r.label_smoothing).mean()
            state.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            state.optimizer.step()
            avg = SMOOTHING * avg + (1 - SMOOTHING) * float(loss.detach())
            smoothed = avg / (1 - SMOOTHING ** (i + 1))
            bar.advance(1)
            if not math.isfinite(smoothed) or smoothed > DIVERGED * best:
                break
            best = min(best, smoothed)
            lrs.append(lr)
            losses.append(smoothed)
    if len(lrs) < 5:
        raise ConfigError(f"the loss diverged within {len(lrs)} steps; lower the start rate (--start)")
    return LrFinding(lrs, losses, suggest(lrs, losses), r.name)
