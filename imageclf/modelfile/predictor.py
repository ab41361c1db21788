"""The Predictor protocol: what evaluation, calibration, export and the server need of a loaded model.

It is defined here, below the layers that implement it (:mod:`imageclf.inference`: the torch
and ONNX predictors, and :class:`~imageclf.inference.classifier.Classifier`, which holds one)
and the layers that consume it (:mod:`imageclf.evaluation`, :mod:`imageclf.serve`), so that
neither side imports the other's concrete classes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import numpy as np
from torch import nn

from imageclf.data.images import Preprocessing
from imageclf.modelfile.artifact import ModelConfig


class Predictor(Protocol):
    """A model file made runnable: probabilities for preprocessed images, and what they mean."""

    config: ModelConfig
    source: str

    @property
    def classes(self) -> list[str]: ...

    @property
    def preprocessing(self) -> Preprocessing: ...

    @property
    def threshold(self) -> float: ...

    @property
    def model(self) -> nn.Module:
        """The PyTorch network; raises :class:`~imageclf.core.errors.ImageclfError` saying so
        where the backend has none (ONNX Runtime)."""
        ...

    def predict_arrays(self, images: np.ndarray, batch_size: int | None = None,
                       on_batch: Callable[[int], None] | None = None) -> np.ndarray:
        """Probabilities (N, K) for preprocessed (N, H, W, C) uint8 images."""
        ...
