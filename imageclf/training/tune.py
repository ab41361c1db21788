"""Hyper-parameter search with Optuna: ``imageclf tune DATA --recipe R --trials N``.

Each trial trains the recipe with a sampled learning rate, weight decay, augmentation
strength (one multiplier on every augmentation magnitude of the recipe), image size and
batch size into ``OUT/trial-NNN/``, reporting the validation metric after every epoch;
Optuna's median pruner stops trials that are worse than the median of earlier trials at
the same epoch. Only validation data is ever looked at. ``OUT/best.yaml`` is the best
trial's full recipe (train it with ``imageclf train DATA --recipe OUT/best.yaml``) and
``OUT/tune.json`` lists every trial. Every trial trains with the same :class:`TrainOptions`.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from imageclf.core.errors import ConfigError
from imageclf.core.io import atomic_write_text
from imageclf.core.progress import Reporter
from imageclf.data.sources import Dataset
from imageclf.data.transforms import Augment
from imageclf.modelfile.artifact import BEST_RECIPE_FILE, TUNE_FILE
from imageclf.recipes import resolve_recipe
from imageclf.recipes.schema import Recipe
from imageclf.training.loop import fit
from imageclf.training.options import TrainOptions


def scale_augment(aug: Augment, strength: float) -> Augment:
    """Every magnitude of ``aug`` times ``strength`` (flips and fill mode unchanged)."""
    s = max(0.0, strength)
    brightness = None
    if aug.brightness is not None:
        lo, hi = aug.brightness
        brightness = (max(0.0, 1 - (1 - lo) * s), 1 + (hi - 1) * s)
    return replace(aug, rotation=aug.rotation * s, width_shift=aug.width_shift * s,
                   height_shift=aug.height_shift * s, shear=aug.shear * s,
                   zoom=min(0.9, aug.zoom * s), contrast=aug.contrast * s,
                   erasing=min(1.0, aug.erasing * s), brightness=brightness)


@dataclass
class SearchSpace:
    """Ranges around a recipe's own settings; ``from_recipe`` picks sensible defaults."""

    lr: tuple[float, float]
    weight_decay: tuple[float, float]
    augment: tuple[float, float] = (0.0, 1.5)
    sizes: list[int] = field(default_factory=list)
    batch_sizes: list[int] = field(default_factory=list)

    @classmethod
    def from_recipe(cls, r: Recipe, sizes: list[int] | None = None,
                    batch_sizes: list[int] | None = None) -> SearchSpace:
        side = r.size[0]
        default_sizes = sorted({side, *(max(16, int(round(side * f / 4)) * 4) for f in (0.75, 1.5))})
        return cls(lr=(r.lr / 10, r.lr * 10),
                   weight_decay=(1e-6, 0.1) if r.optimizer != "sgd" else (1e-5, 5e-3),
                   sizes=list(sizes or default_sizes),
                   batch_sizes=list(batch_sizes or sorted({max(8, r.batch_size // 2), r.batch_size,
                                                           r.batch_size * 2})))


def sample_recipe(trial, base: Recipe, space: SearchSpace) -> Recipe:
    """The recipe one trial trains: ``base`` with the sampled settings."""
    size = trial.suggest_categorical("img_size", space.sizes)
    return base.override({
        "lr": trial.suggest_float("lr", *space.lr, log=True),
        "weight_decay": trial.suggest_float("weight_decay", *space.weight_decay, log=True),
        "batch_size": trial.suggest_categorical("batch_size", space.batch_sizes),
        "img_size": size if base.size[0] == base.size[1] else [size, size],
        "augment": scale_augment(base.augment, trial.suggest_float("augment_strength",
                                                                   *space.augment)).to_dict(),
    })


def default_metric(num_classes: int) -> str:
    return "val_auc" if num_classes == 2 else "val_accuracy"


@dataclass
class TuneResult:
    out: Path
    metric: str
    best_value: float
    best_params: dict
    best_recipe: Path
    trials: list[dict]

    def summary(self) -> str:
        done = sum(t["state"] == "COMPLETE" for t in self.trials)
        pruned = sum(t["state"] == "PRUNED" for t in self.trials)
        params = ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}"
                           for k, v in self.best_params.items())
        return (f"{len(self.trials)} trials ({done} complete, {pruned} pruned); best {self.metric} "
                f"{self.best_value:.4f} with {params}\nbest recipe: {self.best_recipe}")


def tune(data: str | Path | Dataset, recipe: str | Path | Recipe, out: str | Path, *,
         trials: int | None = 20, time_budget: float | None = None, metric: str | None = None,
         sizes: list[int] | None = None, batch_sizes: list[int] | None = None, seed: int = 0,
         options: TrainOptions | None = None, **overrides: Any) -> TuneResult:
    """Search learning rate, weight decay, augmentation strength, image size and batch size.

    ``overrides`` change the base recipe first (``epochs=8`` makes every trial shorter);
    ``seed`` seeds the sampler. ``options`` say how every trial trains; ``force`` lets ``out``
    be overwritten, ``quiet`` silences the one line per trial (the trials themselves print
    nothing), and a search cannot resume. Stops after ``trials`` trials or ``time_budget``
    seconds, whichever comes first; a trial still running at the deadline is stopped at its
    next epoch and counted as pruned.

    >>> tune("xrays.npz", "xray-fast", "runs/tune", trials=20, epochs=8)  # doctest: +SKIP
    """
    try:
        import optuna
    except ImportError:  # pragma: no cover - optuna is in the 'tune' extra
        raise ConfigError("tuning needs Optuna: pip install 'imageclf[tune]'") from None
    options = options or TrainOptions()
    if trials is None and time_budget is None:
        raise ConfigError("give a number of trials (--trials) and/or a time budget (--time-budget)")
    if options.resume:
        raise ConfigError("a search cannot resume; start it again (with --force to reuse its folder)")
    base = resolve_recipe(recipe, overrides)
    ds = options.open_dataset(data)
    metric = metric or default_metric(ds.num_classes)
    space = SearchSpace.from_recipe(base, sizes, batch_sizes)
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not options.force:
        raise ConfigError(f"{out}: already exists and is not empty; use --force to overwrite it")
    out.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + time_budget if time_budget else math.inf
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        direction="minimize" if "loss" in metric else "maximize",
        sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=max(1, base.epochs // 4)))
    study.enqueue_trial(_first_trial(base, space))
    objective = _Objective(optuna, study, ds, base, space, out, metric, deadline, options)

    def stop_at_deadline(study, _trial) -> None:
        if time.monotonic() > deadline:
            study.stop()

    study.optimize(objective, n_trials=trials, catch=(), callbacks=[stop_at_deadline])
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not complete:
        raise ConfigError(f"{out}: no trial finished; give more time (--time-budget) or fewer epochs")
    best = study.best_trial
    path = out / BEST_RECIPE_FILE
    atomic_write_text(path, objective.recipes[best.number].to_yaml())
    _write(out, study, objective.records, metric)
    return TuneResult(out, metric, float(best.value), dict(best.params), path, objective.records)


def _first_trial(base: Recipe, space: SearchSpace) -> dict[str, Any]:
    """The recipe as written, as the first trial: tuning never ends worse than the default."""
    first = {"lr": base.lr, "weight_decay": min(max(base.weight_decay, space.weight_decay[0]),
                                                space.weight_decay[1]), "augment_strength": 1.0}
    if base.batch_size in space.batch_sizes:
        first["batch_size"] = base.batch_size
    if base.size[0] in space.sizes:
        first["img_size"] = base.size[0]
    return first


class _Objective:
    """One trial: train the sampled recipe into ``out/trial-NNN``, report every epoch to the
    pruner, record the trial in ``tune.json``; returns its validation ``metric``."""

    def __init__(self, optuna, study, ds: Dataset, base: Recipe, space: SearchSpace, out: Path,
                 metric: str, deadline: float, options: TrainOptions) -> None:
        self.optuna, self.study, self.ds, self.base, self.space = optuna, study, ds, base, space
        self.out, self.metric, self.deadline = out, metric, deadline
        self.reporter: Reporter = options.reporter()
        # Each trial writes its own folder afresh and prints nothing: one line per trial says enough.
        self.options = replace(options, force=True, quiet=True)
        self.records: list[dict] = []
        self.recipes: dict[int, Recipe] = {}

    def __call__(self, trial) -> float:
        r = sample_recipe(trial, self.base, self.space)
        r.name = f"{self.base.name}-tuned"
        self.recipes[trial.number] = r
        t0 = time.perf_counter()

        def on_epoch(row: dict) -> None:
            trial.report(row[self.metric], row["epoch"] - 1)
            if trial.should_prune() or time.monotonic() > self.deadline:
                raise self.optuna.TrialPruned(f"pruned at epoch {row['epoch']}")

        run = self.out / f"trial-{trial.number:03d}"
        record = {"number": trial.number, "params": dict(trial.params), "run": str(run)}
        try:
            value = float(fit(self.ds, r, run, self.options, on_epoch=on_epoch).metrics[self.metric])
        except self.optuna.TrialPruned:
            record.update(state="PRUNED", seconds=round(time.perf_counter() - t0, 1))
            self.records.append(record)
            self.reporter.print(f"trial {trial.number}: pruned ({record['seconds']:.0f} s)")
            _write(self.out, self.study, self.records, self.metric)
            raise
        record.update(state="COMPLETE", value=value, seconds=round(time.perf_counter() - t0, 1))
        self.records.append(record)
        self.reporter.print(f"trial {trial.number}: {self.metric} {value:.4f} ({record['seconds']:.0f} s) "
                            f"{_fmt(trial.params)}")
        _write(self.out, self.study, self.records, self.metric)
        return value


def _fmt(params: dict) -> str:
    return " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


def _write(out: Path, study, records: list[dict], metric: str) -> None:
    best = None
    with contextlib.suppress(ValueError):  # no finished trial yet
        best = {"number": study.best_trial.number, "value": study.best_value, "params": study.best_params}
    atomic_write_text(out / TUNE_FILE, json.dumps(
        {"metric": metric, "direction": study.direction.name.lower(), "best": best, "trials": records},
        indent=2, allow_nan=True) + "\n")
