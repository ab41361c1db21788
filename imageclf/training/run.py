"""A training run's folder and state: what is checkpointed, resumed and finally saved.

RUN/ holds the model file (``model.safetensors`` + ``config.json``), the resolved recipe
(trainable again), the per-epoch history, the final metrics, hashes of the decoded training
images (to spot overlap at evaluation) and the checkpoint (everything needed to resume).
Their names are the ``*_FILE`` constants of :mod:`imageclf.modelfile.artifact`; only
:class:`RunDir` writes them.
"""

from __future__ import annotations

import copy
import csv
import io
import json
import math
import signal
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from imageclf.core.errors import ConfigError, ImageclfError
from imageclf.core.io import atomic_path, atomic_write_text, check_output_folder, remove_stale_temps
from imageclf.core.progress import Reporter
from imageclf.data.cache import CachedSplit, cache_split
from imageclf.data.hashing import pixel_hashes
from imageclf.data.images import Preprocessing
from imageclf.data.sources import Dataset, Split
from imageclf.modelfile.artifact import (
    CHECKPOINT_FILE,
    CONFIG_FILE,
    CV_FILE,
    HISTORY_FILE,
    METRICS_FILE,
    MODEL_FILE,
    RECIPE_FILE,
    TRAIN_GROUPS_FILE,
    TRAIN_HASHES_FILE,
    ModelConfig,
    save_model,
)
from imageclf.modelfile.card import write_card
from imageclf.modelfile.ood import OOD_FILE, OodStats, save_ood
from imageclf.recipes import resolve_recipe
from imageclf.recipes.schema import Recipe
from imageclf.training import distributed as dist
from imageclf.training.callbacks import EarlyStopper, ModelEma, PlateauReducer
from imageclf.training.checkpoint import (
    checkpoint_meta,
    load_checkpoint,
    match_state_layouts,
    save_checkpoint,
)
from imageclf.training.options import TrainOptions
from imageclf.training.precision import PRECISIONS

CHECKPOINT_EVERY_S = 600.0


def default_run_dir(recipe_name: str, kind: str = "") -> Path:
    """Where a run goes without ``--out``: ``runs/<recipe>-<time>`` (``runs/<recipe>-<kind>-<time>``)."""
    return Path("runs") / "-".join([recipe_name, *([kind] if kind else []), time.strftime("%Y%m%d-%H%M%S")])


def resumed_recipe(saved: dict[str, Any], recipe: str | Path | Recipe | None,
                   overrides: dict[str, Any]) -> Recipe:
    """The recipe a resumed run continues with: the ``saved`` one, its epochs as ``overrides`` say.

    Resuming takes the command that started the run plus ``--resume``, so the recipe and
    settings it names are checked against the saved recipe (with no recipe named, the settings
    alone): equal values are accepted, a different one is refused with both values. The total
    number of epochs is the one thing that may change, and only when ``epochs`` is given.
    """
    kept = Recipe.from_dict(saved)
    given = resolve_recipe(kept if recipe is None else recipe, overrides)
    changed = [f"{key} is {was!r} in the saved recipe, {now!r} here"
               for key, was, now in _differences(_plain(kept.to_dict()), _plain(given.to_dict()))
               if key != "epochs"]
    if changed:
        raise ConfigError("only epochs can change when resuming: " + "; ".join(changed))
    return kept.override({"epochs": given.epochs}) if overrides.get("epochs") is not None else kept


def resumed_options(options: TrainOptions, out: str | Path | None) -> TrainOptions:
    """``options`` for resuming the run (or cross-validation) in ``out``: the ``--group-by`` it
    started with, and under ``--precision auto`` the precision its steps ran in.

    The groups decide the validation carve and the folds, so a resumed run keeps them:
    without ``--group-by`` it takes the saved one, and a different one is refused. The
    precision is kept so that a resumed run ends as the uninterrupted one would (``auto``
    could resolve otherwise on another machine); an explicit ``--precision`` is the user's.
    """
    if not options.resume or out is None:
        return options
    meta = checkpoint_meta(Path(out)) or {}
    options = _resumed_precision(options, meta)
    if (Path(out) / CV_FILE).is_file():
        try:
            saved = json.loads((Path(out) / CV_FILE).read_text()).get("group_by")
        except (OSError, ValueError):
            saved = None
    else:
        saved = (meta.get("data") or {}).get("group_by")
    if options.group_by is None and saved is not None:
        return replace(options, group_by=saved)
    if options.group_by is not None and options.group_by != saved:
        started = "none" if saved is None else f"'{saved}'"
        raise ConfigError(f"--group-by '{options.group_by}' is not the grouping this run started with "
                          f"({started}); the validation split would change")
    return options


def _resumed_precision(options: TrainOptions, meta: dict) -> TrainOptions:
    saved = meta.get("precision")
    if options.precision == "auto" and saved in PRECISIONS and saved != "auto":
        return replace(options, precision=saved)
    return options


def _plain(d: dict) -> dict:
    return json.loads(json.dumps(d))  # tuples -> lists, as a saved recipe reads back


def _differences(a: dict, b: dict, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """(dotted key, value in ``a``, value in ``b``) wherever the two nested dicts differ."""
    out = []
    for key in [*a, *(k for k in b if k not in a)]:
        x, y = a.get(key), b.get(key)
        if isinstance(x, dict) and isinstance(y, dict):
            out += _differences(x, y, f"{prefix}{key}.")
        elif x != y:
            out.append((f"{prefix}{key}", x, y))
    return out


class InterruptGuard:
    """Holds Ctrl-C (SIGINT) during a training step until :meth:`check` at a step boundary.

    A step cut in half (weights updated, step counter not) would be checkpointed in a state
    no uninterrupted run passes through, and ``--resume`` would then train a different
    model. A second Ctrl-C while one is held stops at once, and :attr:`forced` says so:
    then no checkpoint is written and ``--resume`` continues from the last one.

    Only installed over Python's default handler, in the main thread: a SIGINT that the
    user ignores (``nohup``) or an application handles stays theirs.
    """

    def __init__(self) -> None:
        self.pending = False
        self.forced = False
        self._previous = None

    def install(self) -> None:
        if (threading.current_thread() is threading.main_thread()
                and signal.getsignal(signal.SIGINT) is signal.default_int_handler):
            self._previous = signal.signal(signal.SIGINT, self._hold)

    def restore(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None

    def _hold(self, signum, frame) -> None:
        if self.pending:
            self.forced = True
            raise KeyboardInterrupt
        self.pending = True

    def check(self) -> None:
        """At a consistent point: raise the held KeyboardInterrupt, if there is one."""
        if self.pending:
            raise KeyboardInterrupt


@dataclass
class TrainingState:
    """Everything that changes while training and must survive an interruption."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    num_outputs: int
    device: torch.device
    ema: ModelEma | None = None
    precision: str = "fp32"  # the training step's: "bf16" under autocast (imageclf.training.precision)
    early: EarlyStopper | None = None
    plateau: PlateauReducer | None = None
    epoch: int = 0
    step_in_epoch: int = 0
    epoch_seconds: float = 0.0
    history: list[dict] = field(default_factory=list)
    best_value: float | None = None
    best_epoch: int = 0
    best_state: dict[str, torch.Tensor] | None = None
    epoch_sums: dict[str, torch.Tensor] = field(default_factory=dict)
    aug_gen: torch.Generator | None = None
    _eval_copy: nn.Module | None = None

    def __post_init__(self) -> None:
        self.aug_gen = torch.Generator(device=self.device)
        self.reset_sums()

    @property
    def net(self) -> nn.Module:
        return dist.unwrap(self.model)

    def reset_sums(self) -> None:
        self.epoch_sums = {k: torch.zeros((), device=self.device) for k in ("loss", "correct", "n")}

    def start_epoch(self, seed: int) -> None:
        torch.manual_seed(seed)
        self.aug_gen.manual_seed(seed + 1)
        self.reset_sums()
        self.epoch_seconds = 0.0

    def end_epoch(self) -> None:
        self.epoch += 1
        self.step_in_epoch = 0
        self.epoch_seconds = 0.0

    def epoch_images(self) -> float:
        return float(self.epoch_sums["n"]) * dist.world_size()

    def lr_factor(self) -> float:
        return self.plateau.factor if self.plateau is not None else 1.0

    def eval_model(self) -> nn.Module:
        """The weights to validate and save: the EMA's when the recipe keeps one."""
        if self.ema is None:
            return self.net
        if self._eval_copy is None:
            self._eval_copy = copy.deepcopy(self.net)
        self.ema.copy_to(self._eval_copy)
        return self._eval_copy

    def track_best(self, value: float, mode: str, epoch: int) -> None:
        better = (self.best_value is None or (not math.isnan(value) and (
            value < self.best_value if mode == "min" else value > self.best_value)))
        if better:
            self.best_value, self.best_epoch = value, epoch
            self.best_state = {k: v.detach().cpu().clone() for k, v in self.eval_model().state_dict().items()}

    def restore_best(self) -> None:
        if self.best_state is None:
            return
        if self.ema is not None:
            # eval_model() copies the EMA shadow into the eval copy on every call, so the best
            # weights go into the shadow: loaded into the copy alone, the next call (the final
            # validation, the saved model) brought back the last epoch's.
            self.ema.shadow = {k: v.to(self.ema.shadow[k].device) for k, v in self.best_state.items()}
        else:
            self.net.load_state_dict(self.best_state)


def prepare_caches(train: Split, val: Split | None, pre: Preprocessing, options: TrainOptions,
                   rep: Reporter) -> tuple[CachedSplit, CachedSplit | None]:
    """Decode both splits once (``val`` None: the training split alone); report and count what
    ``--skip-bad`` left out."""
    out = []
    for split in (train, val):
        if split is None:
            out.append(None)
            continue
        with rep.task(f"decoding {split.name}", total=len(split)) as bar:
            cached = cache_split(split, pre, storage=options.cache,
                                 cache_dir=Path(options.cache_dir) if options.cache_dir else None,
                                 workers=options.workers, skip_bad=options.skip_bad, progress=bar.advance)
        for path, reason in cached.skipped[:20]:
            rep.warn(f"skipped {path}: {reason}")
        if cached.skipped:
            rep.warn(f"skipped {len(cached.skipped)} unreadable image(s) of {len(split)} in {split.name}")
        if len(cached) == 0:
            raise ImageclfError(f"no readable images left in the {split.name} split")
        out.append(cached)
    return out[0], out[1]


class RunDir:
    """The run folder: refuses to clobber, checkpoints, resumes, and writes the results."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._last_checkpoint = time.monotonic()
        self._data: tuple[Dataset, dict] | None = None

    def data_fingerprint(self, dataset: Dataset) -> dict:
        """``dataset.fingerprint()``, computed once per run: it stats every file (60,000 of them:
        0.3-2 s), and every checkpoint and the model file record it."""
        if self._data is None or self._data[0] is not dataset:
            self._data = (dataset, dataset.fingerprint())
        return self._data[1]

    def has_checkpoint(self) -> bool:
        return (self.path / CHECKPOINT_FILE).is_file()

    def finished(self) -> bool:
        """Whether a training ran to its end here (its model and metrics are written)."""
        return (self.path / CONFIG_FILE).is_file() and (self.path / METRICS_FILE).is_file()

    def metrics(self) -> dict[str, Any]:
        """The final figures a finished run wrote (see :meth:`finish`)."""
        return json.loads((self.path / METRICS_FILE).read_text())

    def check_start(self, resume: bool, force: bool) -> dict | None:
        """None for a fresh start (the folder is empty or ``force``), or the checkpoint to resume."""
        if dist.is_main():
            remove_stale_temps(self.path)  # what a kill -9 in the middle of a write left
        if resume:
            groups, optimizer, meta = load_checkpoint(self.path)
            return {"groups": groups, "optimizer": optimizer, **meta}
        hint = " or --resume to continue it" if self.has_checkpoint() else ""
        if check_output_folder(self.path, force, hint):  # forced: clear what a run owns
            for name in (CHECKPOINT_FILE, MODEL_FILE, CONFIG_FILE, OOD_FILE):
                (self.path / name).unlink(missing_ok=True)
        if dist.is_main():
            self.path.mkdir(parents=True, exist_ok=True)
        return None

    def _meta(self, state: TrainingState, recipe, dataset: Dataset) -> dict:
        return {
            "recipe": recipe.to_dict(), "epoch": state.epoch, "step_in_epoch": state.step_in_epoch,
            "epoch_seconds": state.epoch_seconds, "history": state.history,
            "best_value": state.best_value, "best_epoch": state.best_epoch,
            "early": state.early.state_dict() if state.early else None,
            "plateau": state.plateau.state_dict() if state.plateau else None,
            "ema_updates": state.ema.updates if state.ema else 0,
            "sums": {k: float(v) for k, v in state.epoch_sums.items()},
            "data": self.data_fingerprint(dataset), "classes": dataset.classes,
            "precision": state.precision,
        }

    def checkpoint(self, state: TrainingState, recipe, dataset: Dataset) -> None:
        if not dist.is_main():
            return
        extra = {"rng": {"torch": torch.get_rng_state(), "aug": state.aug_gen.get_state()}}
        if state.ema is not None:
            extra["ema"] = state.ema.shadow
        if state.best_state is not None:
            extra["best"] = state.best_state
        save_checkpoint(self.path, model=state.net.state_dict(), optimizer=state.optimizer.state_dict(),
                        extra_tensors=extra, meta=self._meta(state, recipe, dataset))
        self._last_checkpoint = time.monotonic()

    def maybe_checkpoint(self, state: TrainingState, recipe, dataset: Dataset) -> None:
        """A mid-epoch checkpoint every few minutes, for epochs that take long."""
        if time.monotonic() - self._last_checkpoint > CHECKPOINT_EVERY_S:
            self.checkpoint(state, recipe, dataset)

    def restore(self, state: TrainingState, ckpt: dict) -> None:
        groups = ckpt["groups"]
        state.net.load_state_dict(groups["model"])
        state.optimizer.load_state_dict(ckpt["optimizer"])
        match_state_layouts(state.optimizer)
        if state.ema is not None:
            state.ema.shadow = {k: v.to(state.device) for k, v in groups["ema"].items()}
            state.ema.updates = ckpt["ema_updates"]
        state.best_state = groups.get("best")
        state.best_value, state.best_epoch = ckpt["best_value"], ckpt["best_epoch"]
        state.epoch, state.step_in_epoch = ckpt["epoch"], ckpt["step_in_epoch"]
        state.epoch_seconds, state.history = ckpt["epoch_seconds"], ckpt["history"]
        if state.early is not None and ckpt["early"]:
            state.early.load_state_dict(ckpt["early"])
        if state.plateau is not None and ckpt["plateau"]:
            state.plateau.load_state_dict(ckpt["plateau"])
        if state.step_in_epoch:  # mid-epoch: continue the epoch's random streams where they were
            torch.set_rng_state(groups["rng"]["torch"])
            state.aug_gen.set_state(groups["rng"]["aug"])
            state.epoch_sums = {k: torch.tensor(v, device=state.device) for k, v in ckpt["sums"].items()}

    def write_history(self, history: list[dict]) -> None:
        if not history:
            return
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(history[0]))
        writer.writeheader()
        writer.writerows(history)
        atomic_write_text(self.path / HISTORY_FILE, buf.getvalue())

    def save_epoch(self, state: TrainingState, recipe, dataset: Dataset) -> None:
        if dist.is_main():
            self.write_history(state.history)
            self.checkpoint(state, recipe, dataset)

    def write_groups(self, dataset: Dataset, train: CachedSplit) -> None:
        """The group (``--group-by``) of each training image, in train_hashes' order, so that
        evaluation can tell images of the patients the model trained on; none without groups."""
        path = self.path / TRAIN_GROUPS_FILE
        if train.groups is None or dataset.group_by is None:
            path.unlink(missing_ok=True)  # a --force over a grouped run leaves no stale groups
            return
        atomic_write_text(path, json.dumps({"group_by": dataset.group_by, "kind": dataset.group_kind,
                                            "groups": [None if g is None else str(g) for g in train.groups]})
                          + "\n")

    def finish(self, state: TrainingState, recipe, dataset: Dataset, train: CachedSplit,
               val: CachedSplit, final: dict[str, float], pretrained: dict[str, str] | None = None,
               ood: OodStats | None = None) -> dict[str, Any]:
        """Write the model file and the rest of the folder; returns the metrics (on every rank).
        ``pretrained``: what the weights started from (name or file, sha256, licence); ``ood``:
        the out-of-distribution statistics, written before the config that records their hash."""
        metrics = {"best_epoch": state.best_epoch + 1, "epochs_run": state.epoch, **final,
                   "train_images": len(train), "val_images": len(val),
                   "skipped_images": len(train.skipped) + len(val.skipped), "precision": state.precision}
        if not dist.is_main():
            return metrics
        model = state.eval_model()
        config = ModelConfig(
            architecture=recipe.model, architecture_kwargs=dict(recipe.model_kwargs),
            classes=list(dataset.classes), preprocessing=recipe.preprocessing(),
            threshold=recipe.threshold, tta=list(recipe.tta), name=recipe.name,
            recipe=recipe.to_dict(), metrics=metrics, data=self.data_fingerprint(dataset),
            pretrained=dict(pretrained or {}),
        )
        if ood is not None:
            config.ood = save_ood(self.path, ood)
        else:
            (self.path / OOD_FILE).unlink(missing_ok=True)
        save_model(self.path, model, config)
        write_card(self.path, config, np.bincount(val.labels, minlength=dataset.num_classes).tolist())
        atomic_write_text(self.path / RECIPE_FILE, recipe.to_yaml())
        atomic_write_text(self.path / METRICS_FILE, json.dumps(metrics, indent=2) + "\n")
        with atomic_path(self.path / TRAIN_HASHES_FILE) as tmp, open(tmp, "wb") as f:
            np.save(f, pixel_hashes(train.images), allow_pickle=False)
        self.write_groups(dataset, train)
        self.write_history(state.history)
        return metrics
