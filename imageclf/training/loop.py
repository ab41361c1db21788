"""The training loop, written out: ``fit`` = prepare the run, build the state, run the epochs, finish.

Data are decoded once (:mod:`imageclf.data.cache`); each step indexes the uint8 cache, moves
the batch to the device and augments it there as tensors (:func:`train_one_epoch`). Every
epoch ends with an atomic checkpoint, so ``--resume`` (after Ctrl-C, a crash or kill -9)
continues from it and, on CPU with a fixed seed, ends with the same weights as an
uninterrupted run. ``fit`` leaves a run folder and returns a :class:`FitResult`; loading the
model it wrote is ``imageclf.train``'s business (:mod:`imageclf.api`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.markup import escape
from torch import nn

from imageclf.core.errors import ConfigError
from imageclf.core.progress import QUIET, Reporter
from imageclf.core.runtime import configure_process, made
from imageclf.data.cache import CachedSplit, batches
from imageclf.data.sources import Dataset, Split, training_splits
from imageclf.inference.forward import pool_before_relu, resolve_device
from imageclf.inference.ood import fit_for_run
from imageclf.models import check_forward, create_model, num_params
from imageclf.models.heads import num_outputs as outputs_for
from imageclf.recipes import resolve_recipe
from imageclf.recipes.schema import Recipe
from imageclf.training import distributed as dist
from imageclf.training.callbacks import EarlyStopper, ModelEma, PlateauReducer, monitor_mode, schedule_factor
from imageclf.training.finetune import freeze_batchnorm, train_only_head
from imageclf.training.optim import build_optimizer, set_lr
from imageclf.training.options import TrainOptions
from imageclf.training.precision import bf16_cpu_warning, bf16_pays, cpu_has_native_bf16, use_bf16
from imageclf.training.pretrained import load_pretrained, resolve_pretrained
from imageclf.training.probe import run_probe
from imageclf.training.run import InterruptGuard, RunDir, TrainingState, prepare_caches, resumed_recipe
from imageclf.training.steps import (
    batch_plan,
    class_weight_vector,
    epoch_seed,
    loss_per_sample,
    step_inputs,
    tally,
)
from imageclf.training.tracking import Tracking
from imageclf.training.validation import validate


@dataclass
class FitResult:
    """What :func:`fit` leaves: the run folder it wrote and how its model did on validation."""

    path: Path
    best_epoch: int  # counted from 1, as in metrics.json
    metrics: dict[str, Any]  # what RUN/metrics.json holds
    device: str  # the device it trained on, to load the model on


def train_one_epoch(state: TrainingState, recipe: Recipe, train: CachedSplit, class_w: torch.Tensor | None,
                    reporter: Reporter, on_step: Callable[[], None], amp: bool | None = None) -> dict:
    """Epoch ``state.epoch`` of optimisation from step ``state.step_in_epoch``; returns mean loss
    and accuracy over the images seen.

    Under DDP each rank trains on its share of every global batch; its loss is its share of
    the global mean (:func:`imageclf.training.distributed.loss_scale`), so the averaged gradient is
    the single-process one. ``amp``: bf16 autocast (default: on CUDA only).
    """
    device, epoch, start_step = state.device, state.epoch, state.step_in_epoch
    amp = device.type == "cuda" if amp is None else amp
    model, opt = state.model, state.optimizer
    model.train()
    if recipe.freeze_bn:
        freeze_batchnorm(model)
    if recipe.freeze_epochs:
        train_only_head(dist.unwrap(model), epoch < recipe.freeze_epochs)
    pre = recipe.preprocessing()
    plan = batch_plan(len(train), recipe.batch_size * dist.world_size(), epoch, recipe.seed,
                      recipe.steps_per_epoch)
    total_steps = len(plan) * recipe.epochs
    sums = state.epoch_sums
    with reporter.task(f"epoch {epoch + 1}/{recipe.epochs}", total=sum(map(len, plan))) as bar:
        bar.advance(sum(len(b) for b in plan[:start_step]))
        steps = range(start_step, len(plan))
        # A rank with no image in a short last batch still steps (DDP's all-reduce needs it),
        # on one image whose loss counts zero.
        owned = [dist.shard(plan[s]) for s in steps]
        shards = [i if len(i) else plan[s][:1] for s, i in zip(steps, owned)]
        if not isinstance(train.images, np.ndarray):
            shards = [np.sort(i) for i in shards]  # sequential reads from a disk cache
        for step, idx, pixels in zip(steps, shards, batches(train.images, shards)):
            own = len(owned[step - start_step])
            progress = (epoch * len(plan) + step) / total_steps
            set_lr(opt, recipe.lr * schedule_factor(recipe.schedule, progress, recipe.warmup_epochs
                                                    / recipe.epochs) * state.lr_factor())
            x, labels, target, weight = step_inputs(state, recipe, pre, pixels, train.labels[idx], class_w,
                                                     mix_seed=[recipe.seed, epoch, step])
            with torch.autocast(device.type if amp else "cpu", dtype=torch.bfloat16, enabled=amp):
                logits = model(x)
            losses = loss_per_sample(logits, target, recipe.label_smoothing)
            if dist.is_distributed():
                total = (losses * weight).sum() if weight is not None else losses.sum()
                loss = total * (dist.loss_scale(len(plan[step])) if own else 0.0)
            else:
                loss = (losses * weight).mean() if weight is not None else losses.mean()
                total = loss * len(idx)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if recipe.grad_clip:
                nn.utils.clip_grad_norm_(model.parameters(), recipe.grad_clip)
            opt.step()
            if state.ema is not None:
                state.ema.update(dist.unwrap(model))
            tally(sums, logits, labels, total, own)
            state.step_in_epoch = step + 1
            bar.advance(len(plan[step]), **({"loss": float(sums["loss"] / sums["n"])}
                                            if step % 20 == 19 else {}))
            on_step()
    loss_sum, correct, n = dist.all_reduce_sum(torch.stack([sums["loss"], sums["correct"], sums["n"]])
                                               .float()).tolist()
    n = max(n, 1.0)
    return {"loss": loss_sum / n, "accuracy": correct / n}


def fit(data: str | Path | Dataset, recipe: str | Path | Recipe | None, out: str | Path,
        options: TrainOptions | None = None, *, overrides: dict[str, Any] | None = None,
        on_epoch: Callable[[dict], None] | None = None) -> FitResult:
    """Train ``recipe`` (a name, a YAML file or a Recipe, with ``overrides``) on ``data`` into the
    run folder ``out``.

    With ``options.resume`` the run continues from its checkpoint with its saved recipe;
    ``recipe`` and ``overrides`` may then repeat it (see :func:`~imageclf.training.run.resumed_recipe`).
    ``on_epoch`` is called with each epoch's history row, after its checkpoint; it may raise to
    stop the run (tuning prunes trials so).
    """
    configure_process()  # before the first large allocation (see its docstring)
    run = prepare_run(data, recipe, out, options or TrainOptions(), overrides or {})
    names = run.options.log if dist.is_main() else ()
    with Tracking(names, run.folder.path, run.recipe, run.options.tracking_uri) as tracking:
        state, train, val = build_state(run)
        if run.recipe.probe:
            run_probe(state, run.recipe, train, val, _class_weights(run, train), run.rep)
            run.folder.save_epoch(state, run.recipe, run.dataset)
            for row in state.history:
                tracking.log_epoch(row)
        else:
            run_epochs(run, state, train, val, tracking.wrap(on_epoch))
        result = finish(run, state, train, val)
        tracking.finish(result.path, result.metrics)
    return result


@dataclass
class PreparedRun:
    """What :func:`prepare_run` settled before any model exists."""

    folder: RunDir
    recipe: Recipe
    dataset: Dataset
    train_split: Split
    val_split: Split
    device: torch.device
    amp: bool
    resume_from: dict | None
    options: TrainOptions
    rep: Reporter
    pretrained: dict[str, str] | None = None  # what the weights came from (build_state says)


def prepare_run(data: str | Path | Dataset, recipe: str | Path | Recipe | None, out: str | Path,
                options: TrainOptions, overrides: dict[str, Any]) -> PreparedRun:
    """The device and precision, the run folder (fresh, or the checkpoint to resume), the recipe,
    the dataset and its train / validation split."""
    device = dist.setup(resolve_device(options.device))  # joins torchrun's group, if any
    rep = options.reporter() if dist.is_main() else QUIET
    # /proc/cpuinfo read once, only where the answer counts (a CPU, bf16 possible)
    native = cpu_has_native_bf16() if device.type == "cpu" and options.precision != "fp32" else None
    amp = use_bf16(options.precision, device, native)
    if (slow := bf16_cpu_warning(amp, device, native)):
        rep.warn(slow)
    resolved = None
    if not options.resume:  # resolved first: a bad recipe or setting leaves no run folder behind
        if recipe is None:
            raise ConfigError("no recipe given")
        resolved = resolve_recipe(recipe, overrides)
    folder = RunDir(Path(out))
    resume_from = folder.check_start(resume=options.resume, force=options.force)
    if resume_from is not None:
        resolved = resumed_recipe(resume_from["recipe"], recipe, overrides)
    dataset = options.open_dataset(data)
    if resume_from is not None and (resume_from["data"]["sha256"]
                                    != folder.data_fingerprint(dataset)["sha256"]):
        rep.warn(f"{dataset.source} is not the data this run started on (its fingerprint changed); "
                 "resuming anyway")
    train_split, val_split = training_splits(dataset, resolved.val_fraction, resolved.carve_seed)
    rep.print(f"[bold]{escape(dataset.source)}[/bold] ({dataset.kind}): classes {dataset.classes} -> "
              f"labels {list(range(dataset.num_classes))}")
    rep.print(f"train {len(train_split)} / val {len(val_split)} images; recipe "
              f"[bold]{resolved.name}[/bold] ({resolved.model}, {resolved.size[0]}x{resolved.size[1]}x"
              f"{resolved.channels})")
    return PreparedRun(folder, resolved, dataset, train_split, val_split, device, amp, resume_from,
                       options, rep)


def build_state(run: PreparedRun) -> tuple[TrainingState, CachedSplit, CachedSplit]:
    """The seeded model (with its pretrained weights on a fresh start), the decoded splits, the
    optimizer and callbacks: the training state, restored from the checkpoint when resuming."""
    recipe, device, rep = run.recipe, run.device, run.rep
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input size: the fastest kernels pay at once
    torch.manual_seed(recipe.seed)
    num_outputs = outputs_for(run.dataset.num_classes)
    model = create_model(recipe.model, recipe.channels, num_outputs, recipe.size, **recipe.model_kwargs)
    check_forward(model, recipe.model, recipe.channels, recipe.size)
    if recipe.pretrained:  # recorded on resume too; loaded only on a fresh start
        path, run.pretrained = resolve_pretrained(recipe.pretrained, recipe.model)
        if run.resume_from is None:
            rep.print(load_pretrained(model, path).summary())
    with dist.local_main_first():  # under DDP one process per machine decodes; the rest reuse it
        # Several ranks share one decoded copy on disk, through the page cache, not one each in memory.
        shared = dist.world_size() > 1 and run.options.cache == "auto"
        train, val = prepare_caches(run.train_split, run.val_split, recipe.preprocessing(),
                                    replace(run.options, cache="disk") if shared else run.options, rep)
    model = model.to(device)
    if recipe.channels_last:
        model = model.to(memory_format=torch.channels_last)
    pool_before_relu(model)
    if run.amp and device.type == "cpu" and run.options.precision == "auto":
        run.amp = _measured_bf16(model, recipe, device, rep)
    how = [f"{torch.get_num_threads()} threads"] if device.type == "cpu" else []
    how += ["bf16 autocast"] if run.amp else []
    rep.print(f"model {recipe.model}: {num_params(model):,} parameters on {device}"
              + (f" ({', '.join(how)})" if how else ""))
    if device.type == "cpu" and made("OMP_NUM_THREADS"):
        rep.print("other work was using the cores at start, so training takes only the free ones "
                  "(OMP_NUM_THREADS chooses)")
    opt = build_optimizer(recipe, model)
    # Head-only epochs leave the backbone without gradients, which DDP must be told it may see.
    wrapped = dist.wrap(model, device, find_unused=recipe.freeze_epochs > 0)
    state = TrainingState(model=wrapped, optimizer=opt, num_outputs=num_outputs,
                          ema=ModelEma(model, recipe.ema) if recipe.ema else None, device=device,
                          precision="bf16" if run.amp else "fp32",
                          early=EarlyStopper(recipe.early_stopping) if recipe.early_stopping else None,
                          plateau=PlateauReducer(recipe.reduce_lr, recipe.lr) if recipe.reduce_lr else None)
    if run.resume_from is not None:
        run.folder.restore(state, run.resume_from)
        rep.print(f"resuming at epoch {state.epoch + 1}, step {state.step_in_epoch}")
    return state, train, val


def _measured_bf16(model: nn.Module, recipe: Recipe, device: torch.device, rep: Reporter) -> bool:
    """``--precision auto`` on a CPU with native bf16: bf16 where a step measures faster in it
    (rank 0's measurement for every rank, so that all train alike)."""
    pre = recipe.preprocessing()
    example = torch.rand(recipe.batch_size, pre.channels, *pre.size, device=device)
    if recipe.channels_last:
        example = example.to(memory_format=torch.channels_last)
    faster, speedup = bf16_pays(model, example) if dist.is_main() else (False, 0.0)
    rep.print(f"a bf16 step measured {speedup:.2f}x the fp32 one here: training in "
              f"{'bf16' if faster else 'fp32'} (--precision chooses)")
    return dist.broadcast_flag(faster)


def run_epochs(run: PreparedRun, state: TrainingState, train: CachedSplit, val: CachedSplit,
               on_epoch: Callable[[dict], None] | None = None) -> None:
    """Epochs until the recipe's last or an early stop, each checkpointed. Ctrl-C is held to the
    end of its step and checkpointed there (:class:`~imageclf.training.run.InterruptGuard`)."""
    weights = _class_weights(run, train)
    cw = None if weights is None else torch.tensor(weights, dtype=torch.float32, device=run.device)
    guard = InterruptGuard()
    stopped_early = False
    try:
        guard.install()
        while state.epoch < run.recipe.epochs and not stopped_early:
            row, stopped_early = _epoch(run, state, train, val, cw, guard)
            if on_epoch is not None:
                on_epoch(row)
    except KeyboardInterrupt:
        guard.restore()
        source, path = run.dataset.source, run.folder.path
        if guard.forced:  # the state may be mid-step: keep the last consistent checkpoint
            run.rep.warn(f"interrupted twice; stopped without a new checkpoint. --resume continues "
                         f"from the last one: imageclf train {source} --out {path} --resume")
            raise
        run.folder.checkpoint(state, run.recipe, run.dataset)
        run.rep.warn(f"interrupted; checkpoint saved. Continue with: imageclf train {source} "
                     f"--out {path} --resume")
        raise
    finally:
        guard.restore()


def _class_weights(run: PreparedRun, train: CachedSplit) -> np.ndarray | None:
    """Per-class loss weights ('balanced'), or None when the recipe has none."""
    if run.recipe.class_weights != "balanced":
        return None
    return class_weight_vector(train.labels, run.dataset.num_classes)


def _epoch(run: PreparedRun, state: TrainingState, train: CachedSplit, val: CachedSplit,
           class_w: torch.Tensor | None, guard: InterruptGuard) -> tuple[dict, bool]:
    """Train and validate one epoch (or its rest), checkpoint it; (its history row, whether to stop)."""
    recipe, rep, epoch = run.recipe, run.rep, state.epoch
    if state.step_in_epoch == 0:
        state.start_epoch(epoch_seed(recipe.seed, epoch))
    t0 = time.perf_counter() - state.epoch_seconds
    logs = train_one_epoch(state, recipe, train, class_w, rep, amp=run.amp,
                           on_step=lambda: (run.folder.maybe_checkpoint(state, recipe, run.dataset),
                                            guard.check()))
    vlogs = validate(state, recipe, val).as_row()
    seconds = time.perf_counter() - t0
    # The largest group's rate: the head's when lower layers train at layer-decayed rates.
    row = {"epoch": epoch + 1, "lr": max(g["lr"] for g in state.optimizer.param_groups), **logs, **vlogs,
           "seconds": round(seconds, 3), "images_per_s": round(state.epoch_images() / seconds, 1)}
    state.history.append(row)
    monitor = recipe.early_stopping.monitor if recipe.early_stopping else "val_loss"
    state.track_best(row[monitor], monitor_mode(monitor), epoch)
    rep.print(_epoch_line(row, recipe.epochs))  # before what the callbacks make of it
    if state.plateau is not None and state.plateau.update(row):
        rep.print(f"reducing learning rate to {recipe.lr * state.plateau.factor:.2e}")
    stop = state.early is not None and state.early.update(row)
    if stop:
        rep.print(f"early stop: {monitor} has not improved for {recipe.early_stopping.patience} epochs")
    stop = dist.broadcast_flag(stop)  # all ranks stop together
    state.end_epoch()
    run.folder.save_epoch(state, recipe, run.dataset)
    guard.check()
    return row, stop


def finish(run: PreparedRun, state: TrainingState, train: CachedSplit, val: CachedSplit) -> FitResult:
    """Back to the best epoch's weights (unless the recipe says otherwise), validate them, save."""
    recipe = run.recipe
    restore = recipe.early_stopping is None or recipe.early_stopping.restore_best
    if restore:
        state.restore_best()
    final = _last_validation(state, recipe, restore) or validate(state, recipe, val).as_row()
    ood = fit_for_run(state.eval_model(), train, val, recipe, state.device, run.options.ood_keep,
                      run.rep) if dist.is_main() else None
    metrics = run.folder.finish(state, recipe, run.dataset, train, val, final, run.pretrained, ood)
    dist.barrier()  # every rank may load the model file once this returns: rank 0 has written it
    run.rep.print(f"[green]saved[/green] {run.folder.path} (best epoch {state.best_epoch + 1}: val_loss "
                  f"{final['val_loss']:.4f}, val_accuracy {final['val_accuracy']:.4f}, "
                  f"val_auc {final['val_auc']:.4f})")
    return FitResult(run.folder.path, state.best_epoch + 1, metrics, str(run.device))


def _last_validation(state: TrainingState, recipe: Recipe, restored: bool) -> dict[str, float] | None:
    """The last epoch's validation figures when the final weights are the ones it validated (the
    best epoch was the last, or the best is not restored): validating them again gives the same."""
    if recipe.probe or not state.history or (restored and state.best_epoch != state.history[-1]["epoch"] - 1):
        return None
    return {k: state.history[-1][k] for k in ("val_loss", "val_accuracy", "val_auc")}


def _epoch_line(row: dict, epochs: int) -> str:
    return (f"epoch {row['epoch']}/{epochs}  loss {row['loss']:.4f}  acc {row['accuracy']:.4f}  "
            f"val_loss {row['val_loss']:.4f}  val_acc {row['val_accuracy']:.4f}  "
            f"val_auc {row['val_auc']:.4f}  lr {row['lr']:.2e}  {row['seconds']:.1f} s  "
            f"({row['images_per_s']:,.0f} img/s)")
