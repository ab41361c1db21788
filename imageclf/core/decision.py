"""The two-class rules every layer shares, in plain numpy (torch-free).

Two classes are one logit (:func:`num_outputs`; :mod:`imageclf.models.heads` turns logits into
probabilities and targets): an image is positive (class 1) when p1 reaches the model's decision
threshold; with more classes it is the most probable one (:func:`decide`). Here, below every
layer, so that training, evaluation, the model file's config, the torch path and the torch-free
ONNX / OpenVINO path use the same functions.
"""

from __future__ import annotations

import numpy as np


def num_outputs(num_classes: int) -> int:
    """Network outputs for ``num_classes`` classes: 1 for two, else one per class."""
    return 1 if num_classes == 2 else num_classes


def decide(probs: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Predicted labels: positive (class 1) when p1 >= threshold for two classes, else argmax."""
    probs = np.asarray(probs)
    if probs.shape[1] == 2:
        return (probs[:, 1] >= threshold).astype(np.int64)
    return probs.argmax(1)
