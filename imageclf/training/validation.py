"""One pass over the validation split, through the forward path that prediction uses, so a
validation figure means what ``evaluate`` and ``predict`` would say of the same model."""

from __future__ import annotations

from dataclasses import dataclass

from imageclf.core.decision import decide
from imageclf.data.cache import CachedSplit
from imageclf.evaluation.metrics import binary_roc_auc, log_loss, roc_auc
from imageclf.inference.forward import auto_batch_size, predict_probs
from imageclf.recipes.schema import Recipe
from imageclf.training import distributed as dist
from imageclf.training.run import TrainingState


@dataclass
class Validation:
    """One pass over the validation split."""

    loss: float
    accuracy: float
    auc: float

    def as_row(self) -> dict[str, float]:
        """The history / metrics columns."""
        return {"val_loss": self.loss, "val_accuracy": self.accuracy, "val_auc": self.auc}


def validate(state: TrainingState, recipe: Recipe, val: CachedSplit) -> Validation:
    """Validation loss, accuracy and ROC-AUC through the same path prediction uses."""
    model, device = state.eval_model(), state.device
    pre = recipe.preprocessing()
    # Under DDP each rank predicts a block of the validation images; all get all the probabilities.
    images = val.images[dist.contiguous_shard(len(val))] if dist.is_distributed() else val.images
    probs = dist.all_gather_rows(predict_probs(
        model, images, pre, device=device, tta=recipe.tta, channels_last=recipe.channels_last,
        batch_size=auto_batch_size(pre, device) if device.type == "cpu" else max(64, recipe.batch_size)))
    y = val.labels
    pred = decide(probs, 0.5)
    auc = binary_roc_auc(y, probs[:, 1]) if probs.shape[1] == 2 else roc_auc(y, probs)
    return Validation(log_loss(y, probs), float((pred == y).mean()), auc)
