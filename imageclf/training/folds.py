"""Stratified K-fold cross-validation: ``imageclf train DATA --folds K --out RUN``.

The pool is every labelled image except the test split (train + val when the data has
both, else train or all). It is cut into K folds with each class spread evenly, from
the recipe's split seed (``split_seed``, else ``seed``), so the same data, K and seed
always give the same folds. Fold k trains on the other K - 1 folds and validates on
fold k, into ``RUN/fold-k/`` (an ordinary model folder); ``RUN/cv.json`` holds each
fold's validation figures and their mean and standard deviation (sample std, ddof 1).
An interrupted cross-validation continues with ``--resume``: finished folds are kept,
a half-trained one is resumed. Every fold trains with the same :class:`TrainOptions`.
``imageclf ensemble RUN/fold-*/ --out RUN/ensemble`` then averages the K models.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from imageclf.core.errors import ConfigError, DataError
from imageclf.core.io import atomic_write_text
from imageclf.data.dataset import item_key
from imageclf.data.groups import assign_bins, group_ids
from imageclf.data.sources import Dataset, Split
from imageclf.modelfile.artifact import CV_FILE
from imageclf.recipes import resolve_recipe
from imageclf.recipes.schema import Recipe
from imageclf.training.loop import fit
from imageclf.training.options import TrainOptions
from imageclf.training.run import RunDir, default_run_dir

FIGURES = ("val_loss", "val_accuracy", "val_auc", "best_epoch")


def fold_assignment(labels: np.ndarray, k: int, seed: int, groups: np.ndarray | None = None) -> np.ndarray:
    """The fold (0 .. k-1) of each image: every class shuffled, then dealt round-robin.

    With ``groups`` (``--group-by``) whole groups are dealt instead, each class spread over
    the folds as evenly as the groups allow (:func:`~imageclf.data.groups.assign_bins`).
    """
    labels = np.asarray(labels)
    if groups is not None:
        n_groups = len(np.unique(group_ids(groups)))
        if n_groups < k:
            raise DataError(f"only {n_groups} groups under --group-by, fewer than {k} folds")
        return assign_bins(labels, groups, [1 / k] * k, [seed, k])
    fold = np.empty(len(labels), np.int64)
    rng = np.random.default_rng([seed, k])
    offset = 0
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        rng.shuffle(idx)
        # Start each class where the previous one stopped, so fold sizes differ by at most one.
        fold[idx] = (np.arange(len(idx)) + offset) % k
        offset += len(idx)
    return fold


def _concat(splits: list[Split]) -> Split:
    labels = np.concatenate([s.labels for s in splits])
    groups = (np.concatenate([s.groups for s in splits]) if all(s.groups is not None for s in splits)
              else None)
    if all(s.paths is not None for s in splits):
        return Split("pool", labels, paths=[p for s in splits for p in s.paths], groups=groups)
    if all(s.arrays is not None for s in splits):
        shapes = {s.arrays.shape[1:] for s in splits}
        if len(shapes) > 1:
            raise DataError(f"splits have different image shapes {sorted(shapes)}; cannot pool them")
        return Split("pool", labels, arrays=np.concatenate([s.arrays for s in splits]), groups=groups,
                     names=[n for s in splits for n in s.item_names()])
    raise DataError("cannot pool file-based and array-based splits")


def cv_pool(ds: Dataset) -> Split:
    """Every labelled image that is not test data."""
    names = [n for n in ("train", "val", "all") if n in ds.splits]
    if not names:
        raise DataError(f"{ds.source}: nothing to cross-validate on (found: {', '.join(ds.splits)})")
    return _concat([ds.splits[n] for n in names])


@dataclass
class CrossValidation:
    """Per-fold validation figures and their mean and standard deviation."""

    path: Path
    folds: list[dict]
    mean: dict
    std: dict

    def summary(self) -> str:
        k = len(self.folds)
        parts = [f"{name} {self.mean[name]:.4f} ± {self.std[name]:.4f}"
                 for name in FIGURES if name in self.mean and name != "best_epoch"]
        return f"{k}-fold cross-validation ({self.path}): " + ", ".join(parts)

    def to_dict(self) -> dict:
        return {"k": len(self.folds), "folds": self.folds, "mean": self.mean, "std": self.std}


def _stats(folds: list[dict]) -> tuple[dict, dict]:
    mean, std = {}, {}
    for name in FIGURES:
        values = np.array([f[name] for f in folds if f.get(name) is not None], np.float64)
        if len(values):
            mean[name] = float(np.mean(values))
            std[name] = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    return mean, std


def cross_validate(data: str | Path | Dataset, recipe: str | Path | Recipe, out: str | Path | None,
                   folds: int = 5, options: TrainOptions | None = None,
                   **overrides: Any) -> CrossValidation:
    """Train ``folds`` models on stratified folds of ``data`` into ``out/fold-k``; see the module doc.

    ``options`` say how each fold trains (its ``resume`` and ``force`` also decide which folds
    are kept); ``overrides`` change the recipe.

    >>> cv = cross_validate("xrays.npz", "xray-fast", "runs/cv", folds=5)  # doctest: +SKIP
    >>> cv.mean["val_auc"], cv.std["val_auc"]                                          # doctest: +SKIP
    """
    options = options or TrainOptions()
    if folds < 2:
        raise ConfigError(f"--folds needs at least 2 folds, got {folds}")
    resolved = resolve_recipe(recipe, overrides)
    ds = options.open_dataset(data)
    pool = cv_pool(ds)
    smallest = int(np.bincount(pool.labels, minlength=ds.num_classes).min())
    if smallest < folds:
        raise DataError(f"{ds.source}: a class has only {smallest} images, fewer than {folds} folds")
    out = Path(out) if out else default_run_dir(resolved.name, "cv")
    if out.exists() and any(out.iterdir()) and not (options.force or options.resume):
        raise ConfigError(f"{out}: already exists and is not empty; use --force to overwrite it "
                          "or --resume to continue its folds")
    out.mkdir(parents=True, exist_ok=True)
    assignment = fold_assignment(pool.labels, folds, resolved.carve_seed, pool.groups)
    # Excluded images (--exclude) train in no fold, and are validated on in theirs.
    trainable = (np.array([item_key(n) not in ds.excluded for n in pool.item_names()], bool) if ds.excluded
                 else np.ones(len(pool), bool))
    reporter = options.reporter()
    rows = []
    for k in range(folds):
        run = RunDir(out / f"fold-{k + 1}")
        fold_ds = Dataset(ds.source, ds.kind, ds.classes, {
            "train": pool.subset(np.flatnonzero((assignment != k) & trainable), "train"),
            "val": pool.subset(np.flatnonzero(assignment == k), "val")}, layout=ds.layout,
            group_by=ds.group_by, group_kind=ds.group_kind)
        done = run.finished()
        t0 = time.perf_counter()
        if done and options.resume and not options.force:
            metrics = run.metrics()
            reporter.print(f"fold {k + 1}/{folds}: already trained, kept")
        else:
            reporter.print(f"[bold]fold {k + 1}/{folds}[/bold]: train {len(fold_ds.splits['train'])} / "
                           f"val {len(fold_ds.splits['val'])}")
            partial = options.resume and run.has_checkpoint() and not done
            # Under --resume a fold without a checkpoint starts afresh over whatever its folder holds.
            fold_options = replace(options, resume=partial,
                                   force=options.force or (options.resume and not partial))
            metrics = fit(fold_ds, resolved, run.path, fold_options, overrides=overrides).metrics
        rows.append({"fold": k + 1, "path": str(run.path), **{n: metrics.get(n) for n in FIGURES},
                     "train_images": metrics.get("train_images"), "val_images": metrics.get("val_images"),
                     "seconds": round(time.perf_counter() - t0, 1)})
        _write(out, rows, resolved, folds, ds.group_by)
    mean, std = _stats(rows)
    result = CrossValidation(out, rows, mean, std)
    _write(out, rows, resolved, folds, ds.group_by, mean, std)
    return result


def _write(out: Path, rows: list[dict], recipe: Recipe, k: int, group_by: str | None,
           mean: dict | None = None, std: dict | None = None) -> None:
    d = {"k": k, "seed": recipe.seed, "recipe": recipe.name, "group_by": group_by, "folds": rows,
         "mean": mean, "std": std, "complete": mean is not None}
    atomic_write_text(out / CV_FILE, json.dumps(d, indent=2, allow_nan=True) + "\n")
