"""The decision rule every layer shares, in plain numpy (torch-free).

Two classes are one logit (:mod:`imageclf.models.heads`): an image is positive (class 1) when
p1 reaches the model's decision threshold; with more classes it is the most probable one.
Here, below every layer, so that training, evaluation, the torch path and the torch-free
ONNX / OpenVINO path decide with the same function.
"""

from __future__ import annotations

import numpy as np


def decide(probs: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Predicted labels: positive (class 1) when p1 >= threshold for two classes, else argmax."""
    probs = np.asarray(probs)
    if probs.shape[1] == 2:
        return (probs[:, 1] >= threshold).astype(np.int64)
    return probs.argmax(1)
