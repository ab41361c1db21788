"""A linear probe: a frozen pretrained backbone, its features computed once, a logistic head fitted.

What fastai users get from ``learn.freeze(); learn.fit(...)`` and what the timm literature calls
linear probing, in seconds instead of epochs: each training image goes through the backbone once
(cached on disk by content, so a second run is instant), then a logistic-regression head is
fitted on the features with L-BFGS, its L2 strength chosen by cross-validation on the training
features alone (never the validation split). The fitted weights become the network's own head,
so the saved model predicts, serves and exports like any other.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from imageclf.core.errors import ConfigError
from imageclf.core.io import atomic_path, cache_root
from imageclf.core.progress import QUIET, Reporter
from imageclf.data.cache import CachedSplit
from imageclf.data.images import Preprocessing
from imageclf.evaluation.metrics import log_loss
from imageclf.inference.embed import embed_arrays, head_layer
from imageclf.models.heads import logits_to_probs
from imageclf.models.heads import num_outputs as outputs_for
from imageclf.recipes.schema import Recipe
from imageclf.training import distributed as dist
from imageclf.training.optim import eager
from imageclf.training.run import TrainingState
from imageclf.training.validation import validate

# Inverse L2 strengths tried (scikit-learn's C: larger is weaker): the probe's one setting.
C_VALUES = (0.01, 0.1, 1.0, 10.0)
CV_FOLDS = 3


@dataclass
class LinearHead:
    """A fitted head: ``weight`` (outputs, D), ``bias`` (outputs,), the C chosen and its CV accuracy."""

    weight: torch.Tensor
    bias: torch.Tensor
    c: float
    cv_accuracy: float


def _objective(w: torch.Tensor, b: torch.Tensor, x: torch.Tensor, y: torch.Tensor,
               sample_w: torch.Tensor, c: float) -> torch.Tensor:
    """scikit-learn's logistic objective, divided by n: mean weighted log-loss + ||w||^2 / (2 C n)."""
    logits = x @ w.T + b
    if w.shape[0] == 1:
        losses = F.binary_cross_entropy_with_logits(logits[:, 0], y.float(), reduction="none")
    else:
        losses = F.cross_entropy(logits, y, reduction="none")
    return (losses * sample_w).mean() + (w * w).sum() / (2 * c * len(x))


def _fit_one(x: torch.Tensor, y: torch.Tensor, sample_w: torch.Tensor, outputs: int, c: float
             ) -> tuple[torch.Tensor, torch.Tensor]:
    w = torch.zeros(outputs, x.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros(outputs, dtype=torch.float64, requires_grad=True)
    opt = eager(torch.optim.LBFGS)([w, b], lr=1.0, max_iter=500, tolerance_grad=1e-7,
                                   tolerance_change=1e-10, history_size=20, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = _objective(w, b, x, y, sample_w, c)
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach(), b.detach()


def _predict(w: torch.Tensor, b: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    logits = x @ w.T + b
    return (logits[:, 0] > 0).long() if w.shape[0] == 1 else logits.argmax(1)


def fit_linear_head(features: np.ndarray, labels: np.ndarray, num_classes: int,
                    class_weights: np.ndarray | None = None, seed: int = 0) -> LinearHead:
    """Fit the head on ``features``: C by stratified 3-fold CV accuracy, then refitted on all."""
    x = torch.from_numpy(np.asarray(features, np.float64))
    y = torch.from_numpy(np.asarray(labels, np.int64))
    sw = torch.ones(len(y), dtype=torch.float64) if class_weights is None else \
        torch.from_numpy(np.asarray(class_weights, np.float64))[y]
    outputs = outputs_for(num_classes)
    rng = np.random.default_rng(seed)
    fold = np.empty(len(y), np.int64)
    for k in range(num_classes):  # stratified: each class dealt round-robin over the folds
        idx = np.flatnonzero(labels == k)
        fold[rng.permutation(idx)] = np.arange(len(idx)) % CV_FOLDS
    scores = {}
    for c in C_VALUES:
        hits = 0
        for f in range(CV_FOLDS):
            tr, te = torch.from_numpy(fold != f), torch.from_numpy(fold == f)
            w, b = _fit_one(x[tr], y[tr], sw[tr], outputs, c)
            hits += int((_predict(w, b, x[te]) == y[te]).sum())
        scores[c] = hits / len(y)
    best = max(C_VALUES, key=lambda c: (scores[c], -c))  # ties: the stronger regularisation
    w, b = _fit_one(x, y, sw, outputs, best)
    return LinearHead(w.float(), b.float(), best, scores[best])


def set_head(network: nn.Module, head: LinearHead) -> None:
    """Write the fitted weights into the network's own linear head."""
    layer = head_layer(network)
    with torch.no_grad():
        layer.weight.copy_(head.weight.to(layer.weight))
        layer.bias.copy_(head.bias.to(layer.bias))


def _features_key(network: nn.Module, images, pre: Preprocessing, tta: list[str]) -> str:
    """Content of the images and of the backbone's weights: the same pixels through the same
    network give the same features, whatever file or run they came from."""
    h = hashlib.sha256(json.dumps([pre.to_dict(), list(tta)]).encode())
    for name, tensor in network.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    for start in range(0, len(images), 1024):
        h.update(np.ascontiguousarray(images[start:start + 1024]).tobytes())
    return h.hexdigest()[:32]


def cached_features(network: nn.Module, images, pre: Preprocessing, *, device: torch.device,
                    tta: list[str], what: str, reporter: Reporter = QUIET) -> np.ndarray:
    """:func:`~imageclf.inference.embed.embed_arrays`, kept in ``<cache>/features/`` by content."""
    path = cache_root() / "features" / f"{_features_key(network, images, pre, tta)}.npy"
    if path.is_file():
        return np.load(path)
    with reporter.task(f"features of {what}", total=len(images)) as bar:
        feats = embed_arrays(network, images, pre, device=device, tta=tta, on_batch=bar.advance)
    with atomic_path(path) as tmp, tmp.open("wb") as f:
        np.save(f, feats, allow_pickle=False)
    return feats


def run_probe(state: TrainingState, recipe: Recipe, train: CachedSplit, val: CachedSplit,
              class_weights: np.ndarray | None, reporter: Reporter = QUIET) -> dict:
    """The probe as the one "epoch" of a run: features, the fitted head in the network, its
    validation through the forward path; returns the history row (also appended to ``state``)."""
    if dist.world_size() > 1:
        raise ConfigError("a linear probe runs in one process; drop --nproc")
    t0 = time.perf_counter()
    net, pre = state.net, recipe.preprocessing()
    feats = cached_features(net, train.images, pre, device=state.device, tta=recipe.tta,
                            what="the training images", reporter=reporter)
    head = fit_linear_head(feats, train.labels, outputs_classes(state), class_weights, recipe.seed)
    set_head(net, head)
    logits = torch.from_numpy(feats) @ head.weight.T + head.bias
    probs = logits_to_probs(logits).numpy()
    row = {"epoch": 1, "lr": 0.0, "loss": log_loss(train.labels, probs),
           "accuracy": float((probs.argmax(1) == train.labels).mean()),
           **validate(state, recipe, val).as_row()}
    seconds = time.perf_counter() - t0
    row.update(seconds=round(seconds, 3), images_per_s=round(len(train) / seconds, 1))
    reporter.print(f"linear probe: C={head.c:g} (3-fold CV accuracy {head.cv_accuracy:.4f} on the training "
                   f"features); val_acc {row['val_accuracy']:.4f}  val_auc {row['val_auc']:.4f}  "
                   f"{seconds:.1f} s")
    state.history.append(row)
    state.track_best(row["val_loss"], "min", 0)
    state.end_epoch()
    return row


def outputs_classes(state: TrainingState) -> int:
    """The class count behind the network's outputs (one logit: two classes)."""
    return 2 if state.num_outputs == 1 else state.num_outputs
