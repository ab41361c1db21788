"""The output rule, in one place: two classes are one sigmoid logit, K > 2 classes K softmax logits.

The seed articles' Keras models end in ``Dense(1, sigmoid)`` for two classes; imageclf keeps
that shape so their figures and thresholds carry over. Every place that turns a class count
into network outputs, logits into probabilities or a label into a training target asks here
instead of testing ``shape[1] == 1`` itself; probabilities become a decision by the torch-free
:func:`imageclf.core.decision.decide`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from imageclf.core.decision import num_outputs  # noqa: F401  (the one-logit rule, torch-free)


def logits_to_probs(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """(N, 1) sigmoid logits -> (N, 2) [p0, p1]; (N, K) logits -> softmax."""
    logits = logits.float() / temperature
    if logits.shape[1] == 1:
        p1 = torch.sigmoid(logits[:, 0])
        return torch.stack([1 - p1, p1], 1)
    return torch.softmax(logits, 1)


def logit_predictions(logits: torch.Tensor) -> torch.Tensor:
    """Class indices at the default decision (p1 >= 0.5, i.e. logit > 0; argmax for K)."""
    return (logits[:, 0] > 0).long() if logits.shape[1] == 1 else logits.argmax(1)


def class_score(logits: torch.Tensor, target: int) -> torch.Tensor:
    """The score of class ``target`` for one image ((1, outputs) logits); minus the one
    logit for class 0 of a two-class model (Grad-CAM's class score)."""
    if logits.shape[1] == 1:
        return logits[0, 0] if target == 1 else -logits[0, 0]
    return logits[0, target]


def training_targets(labels: torch.Tensor, outputs: int) -> torch.Tensor:
    """Float targets for a loss: p(class 1) for one logit, one-hot rows for K logits."""
    return labels.float() if outputs == 1 else F.one_hot(labels, outputs).float()


