"""One training step's pieces: the epoch's index batches, the batch on the device, the loss
and the epoch's running sums. :func:`imageclf.training.loop.train_one_epoch` strings them
together; the learning-rate finder (:mod:`imageclf.training.lr_find`) uses them too."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from imageclf.data.images import Preprocessing
from imageclf.data.transforms import augment, normalize, to_float
from imageclf.models.heads import logit_predictions, training_targets
from imageclf.recipes.schema import Recipe
from imageclf.training.run import TrainingState


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


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of epoch ``epoch``'s random streams (torch's and the augmentation's)."""
    return (seed * 1_000_003 + epoch * 7_919) % (2**63)


def step_inputs(state: TrainingState, recipe: Recipe, pre: Preprocessing, pixels: np.ndarray,
                 labels: np.ndarray, class_w: torch.Tensor | None, mix_seed: list[int]):
    """One step's batch on the device: augmented and normalised images, labels, (mixed) targets
    and per-image weights (None without class weights)."""
    device, k = state.device, state.num_outputs
    xb, yb = torch.from_numpy(pixels), torch.from_numpy(labels)
    if device.type == "cuda":
        xb, yb = xb.pin_memory(), yb.pin_memory()
    xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
    x = augment(to_float(xb), recipe.augment, state.aug_gen)
    x = normalize(x, pre.mean, pre.std)
    x = x.contiguous(memory_format=torch.channels_last if recipe.channels_last else torch.contiguous_format)
    target = training_targets(yb, k)
    weight = class_w[yb] if class_w is not None else None
    if recipe.mixup:
        lam = float(np.random.default_rng(mix_seed).beta(recipe.mixup, recipe.mixup))
        perm = torch.randperm(len(x), generator=state.aug_gen, device=device)
        x = lam * x + (1 - lam) * x[perm]
        target = lam * target + (1 - lam) * target[perm]
        if weight is not None:
            weight = lam * weight + (1 - lam) * weight[perm]
    return x, yb, target, weight


def tally(sums: dict[str, torch.Tensor], logits: torch.Tensor, labels: torch.Tensor,
           loss_sum: torch.Tensor, own: int) -> None:
    """Add one step to the epoch's loss, correct and image counts (this rank's own images only)."""
    with torch.no_grad():
        pred = logit_predictions(logits)
        if own:
            sums["loss"] += loss_sum.detach().float()
            sums["correct"] += (pred == labels).sum()
        sums["n"] += own
