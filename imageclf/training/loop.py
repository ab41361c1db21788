"""The training loop, written out: ``fit`` -> ``train_one_epoch`` / ``validate`` per epoch.

Data are decoded once (:mod:`imageclf.data.cache`); each step indexes the uint8 cache, moves
the batch to the device and augments it there as tensors. Every epoch ends with an atomic
checkpoint, so ``--resume`` (after Ctrl-C, a crash or kill -9) continues from it and, on
CPU with a fixed seed, ends with the same weights as an uninterrupted run.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from rich.markup import escape
from torch import nn

from imageclf.core.errors import ConfigError
from imageclf.core.progress import QUIET, Reporter
from imageclf.data.cache import batches
from imageclf.data.sources import Dataset, open_dataset, training_splits
from imageclf.data.transforms import augment, normalize, to_float
from imageclf.evaluation.metrics import binary_roc_auc, log_loss, roc_auc
from imageclf.inference.classifier import Classifier
from imageclf.inference.forward import auto_batch_size, pool_before_relu, predict_probs, resolve_device
from imageclf.models import check_forward, create_model, num_params
from imageclf.recipes.schema import Recipe
from imageclf.training import distributed as dist
from imageclf.training.callbacks import EarlyStopper, ModelEma, PlateauReducer, monitor_mode, schedule_factor
from imageclf.training.optim import build_optimizer, set_lr
from imageclf.training.pretrained import load_pretrained
from imageclf.training.run import InterruptGuard, RunDir, TrainingState, prepare_caches


@dataclass
class TrainOptions:
    """How to run a training (not what to train: that is the recipe)."""

    device: str = "auto"
    workers: int | None = None
    cache: str = "auto"
    cache_dir: str | None = None
    skip_bad: bool = False
    resume: bool = False
    force: bool = False
    class_names: list[str] | None = None
    resume_epochs: int | None = None
    reporter: Reporter = field(default_factory=lambda: QUIET)
    # auto: bf16 autocast on CUDA, fp32 on CPU; bf16: autocast on CPU too (fast with AMX /
    # AVX512-BF16, not bit-exact); fp32: never.
    precision: str = "auto"
    # Called with each epoch's history row (after its checkpoint); may raise to stop (tuning).
    on_epoch: Callable[[dict], None] | None = None


def class_weight_vector(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """'balanced' weights, as scikit-learn and seed 002: n / (k * count_c)."""
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    return np.where(counts > 0, len(labels) / (num_classes * np.maximum(counts, 1)), 0.0)


def loss_per_sample(logits: torch.Tensor, target: torch.Tensor, smoothing: float) -> torch.Tensor:
    """BCE on one logit (target: probability of class 1) or CE on K logits (target: soft labels)."""
    if logits.shape[1] == 1:
        t = target * (1 - smoothing) + 0.5 * smoothing
        return F.binary_cross_entropy_with_logits(logits[:, 0].float(), t, reduction="none")
    k = logits.shape[1]
    t = target * (1 - smoothing) + smoothing / k
    return -(t * F.log_softmax(logits.float(), 1)).sum(1)


def batch_plan(n: int, batch_size: int, epoch: int, seed: int, steps: int | None) -> list[np.ndarray]:
    """The index batches of one epoch: a fresh permutation per pass, reproducible from the seed.

    With ``steps`` (Keras' steps_per_epoch) the epoch takes that many batches from an
    endless stream of passes, as a Keras generator does.
    """
    def one_pass(p: int) -> list[np.ndarray]:
        perm = np.random.default_rng([seed, p]).permutation(n)
        return [perm[i:i + batch_size] for i in range(0, n, batch_size)]

    if steps is None:
        return one_pass(epoch)
    per_pass = -(-n // batch_size)
    first = epoch * steps
    batches: list[np.ndarray] = []
    p = first // per_pass
    while len(batches) < steps + first % per_pass:
        batches += one_pass(1_000_000 + p)
        p += 1
    return batches[first % per_pass: first % per_pass + steps]


def _epoch_seed(seed: int, epoch: int) -> int:
    return (seed * 1_000_003 + epoch * 7_919) % (2**63)


PRECISIONS = ("auto", "fp32", "bf16")


def use_bf16(precision: str, device: torch.device) -> bool:
    """Whether the training step runs under bf16 autocast (see TrainOptions.precision)."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return precision == "bf16" or (precision == "auto" and device.type == "cuda")


def cpu_has_native_bf16(cpuinfo: str | None = None) -> bool | None:
    """Whether this CPU has bf16 arithmetic (AMX or AVX512-BF16), from /proc/cpuinfo's flags;
    None where that cannot be read (not Linux)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return None
    flags = set(next((line.split(":", 1)[1].split() for line in cpuinfo.splitlines()
                      if line.startswith("flags")), []))
    return bool(flags & {"amx_bf16", "avx512_bf16"})


def bf16_cpu_warning(amp: bool, device: torch.device, native: bool | None) -> str | None:
    # Without native bf16 the kernels emulate it: photo-resnet on a 2-core AVX2 EPYC trained at
    # 3.2 img/s in bf16 (one thread, two runs side by side) against 57 img/s in fp32 (two
    # threads, one run), so an unwarned bf16 run there costs hours.
    if amp and device.type == "cpu" and native is False:
        return ("--precision bf16 on a CPU without AMX or AVX512-BF16 is emulated and many times "
                "slower than fp32; use --precision auto or fp32 on this machine")
    return None


def train_one_epoch(state: TrainingState, recipe: Recipe, train, device, class_w, reporter: Reporter,
                    epoch: int, start_step: int, on_step, amp: bool | None = None) -> dict:
    """One epoch of optimisation; returns mean loss and accuracy over the images seen.

    Under DDP each rank trains on its share of every global batch; its loss is its share of
    the global mean (:func:`imageclf.training.distributed.loss_scale`), so the averaged gradient is
    the single-process one. ``amp``: bf16 autocast (default: on CUDA only).
    """
    amp = device.type == "cuda" if amp is None else amp
    model, opt = state.model, state.optimizer
    model.train()
    pre = recipe.preprocessing()
    plan = batch_plan(len(train), recipe.batch_size * dist.world_size(), epoch, recipe.seed,
                      recipe.steps_per_epoch)
    total_steps = len(plan) * recipe.epochs
    sums = state.epoch_sums
    k = state.num_outputs
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
            xb = torch.from_numpy(pixels)
            labels = torch.from_numpy(train.labels[idx])
            if device.type == "cuda":
                xb, labels = xb.pin_memory(), labels.pin_memory()
            xb, labels = xb.to(device, non_blocking=True), labels.to(device, non_blocking=True)
            x = augment(to_float(xb), recipe.augment, state.aug_gen)
            x = normalize(x, pre.mean, pre.std)
            x = x.contiguous(memory_format=torch.channels_last if recipe.channels_last
                             else torch.contiguous_format)
            target = labels.float() if k == 1 else F.one_hot(labels, k).float()
            weight = class_w[labels] if class_w is not None else None
            if recipe.mixup:
                rng = np.random.default_rng([recipe.seed, epoch, step])
                lam = float(rng.beta(recipe.mixup, recipe.mixup))
                perm = torch.randperm(len(x), generator=state.aug_gen, device=device)
                x = lam * x + (1 - lam) * x[perm]
                target = lam * target + (1 - lam) * target[perm]
                if weight is not None:
                    weight = lam * weight + (1 - lam) * weight[perm]
            with torch.autocast(device.type if amp else "cpu", dtype=torch.bfloat16, enabled=amp):
                logits = model(x)
            losses = loss_per_sample(logits, target, recipe.label_smoothing)
            if dist.is_distributed():
                total = (losses * weight).sum() if weight is not None else losses.sum()
                loss = total * (dist.loss_scale(len(plan[step])) if own else 0.0)
            else:
                loss = (losses * weight).mean() if weight is not None else losses.mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if recipe.grad_clip:
                nn.utils.clip_grad_norm_(model.parameters(), recipe.grad_clip)
            opt.step()
            if state.ema is not None:
                state.ema.update(dist.unwrap(model))
            with torch.no_grad():
                pred = (logits[:, 0] > 0).long() if k == 1 else logits.argmax(1)
                if dist.is_distributed():
                    sums["loss"] += total.detach().float() if own else 0.0
                    sums["correct"] += (pred == labels).sum() if own else 0
                else:
                    sums["loss"] += loss.detach().float() * len(idx)
                    sums["correct"] += (pred == labels).sum()
                sums["n"] += own
            state.step_in_epoch = step + 1
            bar.advance(len(plan[step]), **({"loss": float(sums["loss"] / sums["n"])}
                                            if step % 20 == 19 else {}))
            on_step()
    loss_sum, correct, n = dist.all_reduce_sum(torch.stack([sums["loss"], sums["correct"], sums["n"]])
                                               .float()).tolist()
    n = max(n, 1.0)
    return {"loss": loss_sum / n, "accuracy": correct / n}


def validate(state: TrainingState, recipe: Recipe, val, device) -> dict:
    """Validation loss, accuracy and ROC-AUC through the same path prediction uses."""
    model = state.eval_model()
    pre = recipe.preprocessing()
    # Under DDP each rank predicts a block of the validation images; all get all the probabilities.
    images = val.images[dist.contiguous_shard(len(val))] if dist.is_distributed() else val.images
    probs = dist.all_gather_rows(predict_probs(
        model, images, pre, device=device, tta=recipe.tta, channels_last=recipe.channels_last,
        batch_size=auto_batch_size(pre, device) if device.type == "cpu" else max(64, recipe.batch_size)))
    y = val.labels
    pred = (probs[:, 1] >= 0.5).astype(np.int64) if probs.shape[1] == 2 else probs.argmax(1)
    auc = binary_roc_auc(y, probs[:, 1]) if probs.shape[1] == 2 else roc_auc(y, probs)
    return {"val_loss": log_loss(y, probs), "val_accuracy": float((pred == y).mean()),
            "val_auc": auc, "_probs": probs}


def fit(data: str | Path | Dataset, recipe: Recipe | None, out: str | Path,
        options: TrainOptions | None = None):
    """Train ``recipe`` on ``data`` into the run folder ``out``; returns the loaded Classifier."""

    options = options or TrainOptions()
    device = dist.setup(resolve_device(options.device))  # joins torchrun's group, if any
    rep = options.reporter if dist.is_main() else QUIET
    amp = use_bf16(options.precision, device)
    if (slow := bf16_cpu_warning(amp, device, cpu_has_native_bf16() if amp else None)):
        rep.warn(slow)
    run = RunDir(Path(out))
    resume_from = run.check_start(resume=options.resume, force=options.force)
    if resume_from is not None:
        recipe = Recipe.from_dict(resume_from["recipe"])
        if options.resume_epochs:
            recipe = recipe.override({"epochs": options.resume_epochs})
    if recipe is None:
        raise ConfigError("no recipe given")
    dataset = data if isinstance(data, Dataset) else open_dataset(data, options.class_names)
    if resume_from is not None and resume_from["data"]["sha256"] != dataset.fingerprint()["sha256"]:
        rep.warn(f"{dataset.source} is not the data this run started on (its fingerprint changed); "
                 "resuming anyway")
    train_split, val_split = training_splits(dataset, recipe.val_fraction, recipe.carve_seed)
    rep.print(f"[bold]{escape(dataset.source)}[/bold] ({dataset.kind}): classes {dataset.classes} -> "
              f"labels {list(range(dataset.num_classes))}")
    rep.print(f"train {len(train_split)} / val {len(val_split)} images; recipe "
              f"[bold]{recipe.name}[/bold] ({recipe.model}, {recipe.size[0]}x{recipe.size[1]}x"
              f"{recipe.channels})")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input size: the fastest kernels pay at once
    torch.manual_seed(recipe.seed)
    num_outputs = 1 if dataset.num_classes == 2 else dataset.num_classes
    model = create_model(recipe.model, recipe.channels, num_outputs, recipe.size, **recipe.model_kwargs)
    check_forward(model, recipe.model, recipe.channels, recipe.size)
    if recipe.pretrained and resume_from is None:

        rep.print(load_pretrained(model, recipe.pretrained).summary())
    with dist.local_main_first():  # under DDP one process per machine decodes; the rest reuse it
        cache_opts = options
        if dist.world_size() > 1 and options.cache == "auto":
            cache_opts = copy.copy(options)
            cache_opts.cache = "disk"  # one decoded copy, shared by the ranks through the page cache
        train, val = prepare_caches(train_split, val_split, recipe.preprocessing(), cache_opts, rep)
    model = model.to(device)
    if recipe.channels_last:
        model = model.to(memory_format=torch.channels_last)
    pool_before_relu(model)
    rep.print(f"model {recipe.model}: {num_params(model):,} parameters on {device}")
    opt = build_optimizer(recipe, model.parameters())
    state = TrainingState(model=dist.wrap(model, device), optimizer=opt, num_outputs=num_outputs,
                          ema=ModelEma(model, recipe.ema) if recipe.ema else None, device=device,
                          early=EarlyStopper(recipe.early_stopping) if recipe.early_stopping else None,
                          plateau=PlateauReducer(recipe.reduce_lr, recipe.lr) if recipe.reduce_lr else None)
    if resume_from is not None:
        run.restore(state, resume_from)
        rep.print(f"resuming at epoch {state.epoch + 1}, step {state.step_in_epoch}")
    cw = (torch.tensor(class_weight_vector(train.labels, dataset.num_classes), dtype=torch.float32,
                       device=device) if recipe.class_weights == "balanced" else None)
    monitor = recipe.early_stopping.monitor if recipe.early_stopping else "val_loss"
    stopped_early = False
    guard = InterruptGuard()
    try:
        guard.install()
        while state.epoch < recipe.epochs and not stopped_early:
            epoch = state.epoch
            if state.step_in_epoch == 0:
                state.start_epoch(_epoch_seed(recipe.seed, epoch))
            t0 = time.perf_counter() - state.epoch_seconds
            logs = train_one_epoch(state, recipe, train, device, cw, rep, epoch, state.step_in_epoch,
                                   on_step=lambda: (run.maybe_checkpoint(state, recipe, dataset),
                                                    guard.check()), amp=amp)
            vlogs = validate(state, recipe, val, device)
            vlogs.pop("_probs")
            seconds = time.perf_counter() - t0
            row = {"epoch": epoch + 1, "lr": opt.param_groups[0]["lr"], **logs, **vlogs,
                   "seconds": round(seconds, 3), "images_per_s": round(state.epoch_images() / seconds, 1)}
            state.history.append(row)
            state.track_best(row[monitor], monitor_mode(monitor), epoch)
            rep.print(_epoch_line(row, recipe.epochs))  # before what the callbacks make of it
            if state.plateau is not None and state.plateau.update(row):
                rep.print(f"reducing learning rate to {recipe.lr * state.plateau.factor:.2e}")
            if state.early is not None and state.early.update(row):
                stopped_early = True
                rep.print(f"early stop: {monitor} has not improved for "
                          f"{recipe.early_stopping.patience} epochs")
            stopped_early = dist.broadcast_flag(stopped_early)  # all ranks stop together
            state.end_epoch()
            run.save_epoch(state, recipe, dataset, stopped_early)
            guard.check()
            if options.on_epoch is not None:
                options.on_epoch(row)
    except KeyboardInterrupt:
        guard.restore()
        if guard.forced:  # the state may be mid-step: keep the last consistent checkpoint
            rep.warn(f"interrupted twice; stopped without a new checkpoint. --resume continues "
                     f"from the last one: imageclf train {dataset.source} --out {run.path} --resume")
            raise
        run.checkpoint(state, recipe, dataset)
        rep.warn(f"interrupted; checkpoint saved. Continue with: imageclf train {dataset.source} "
                 f"--out {run.path} --resume")
        raise
    finally:
        guard.restore()
    if recipe.early_stopping is None or recipe.early_stopping.restore_best:
        state.restore_best()
    final = validate(state, recipe, val, device)
    probs = final.pop("_probs")
    run.finish(state, recipe, dataset, train, val, final, probs)
    dist.barrier()  # the other ranks load the model file once rank 0 has written it
    rep.print(f"[green]saved[/green] {run.path} (best epoch {state.best_epoch + 1}: val_loss "
              f"{final['val_loss']:.4f}, val_accuracy {final['val_accuracy']:.4f}, "
              f"val_auc {final['val_auc']:.4f})")
    return Classifier.load(run.path, device=str(device))


def _epoch_line(row: dict, epochs: int) -> str:
    return (f"epoch {row['epoch']}/{epochs}  loss {row['loss']:.4f}  acc {row['accuracy']:.4f}  "
            f"val_loss {row['val_loss']:.4f}  val_acc {row['val_accuracy']:.4f}  "
            f"val_auc {row['val_auc']:.4f}  lr {row['lr']:.2e}  {row['seconds']:.1f} s  "
            f"({row['images_per_s']:,.0f} img/s)")
