"""The Predictor protocol: what evaluation, calibration, export and the server need of a loaded model.

It is defined here, below the layers that implement it (:mod:`imageclf.inference`: the torch
and ONNX predictors, and :class:`~imageclf.inference.classifier.Classifier`, which holds one)
and the layers that consume it (:mod:`imageclf.evaluation`, :mod:`imageclf.serve`), so that
neither side imports the other's concrete classes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from imageclf.modelfile.config import ModelConfig
from imageclf.modelfile.inputs import ImageInput, prepare_input  # noqa: F401  (the protocol's input)

if TYPE_CHECKING:  # annotations only: a prediction on ONNX Runtime or OpenVINO never loads torch
    from collections.abc import Callable

    import numpy as np
    import torch
    from torch import nn

    from imageclf.data.images import Preprocessing


class Predictor(Protocol):
    """A model file made runnable: probabilities for preprocessed images, and what they mean.

    Images are (N, H, W, C) uint8 arrays as :func:`prepare_input` (or the disk cache) gives
    them; the predictor applies normalisation, test-time flips and temperature itself.
    """

    @property
    def backend(self) -> str:
        """What runs the forward pass: ``torch`` or ``onnx`` (ONNX Runtime)."""
        ...

    @property
    def config(self) -> ModelConfig:
        """The model file's ``config.json``; calibration sets its temperature in place."""
        ...

    @property
    def source(self) -> str:
        """Where it was loaded from: a model folder, an ``.onnx`` file, or a label (``mem``)."""
        ...

    @property
    def device(self) -> torch.device:
        """Where the forward pass runs (always the CPU for ONNX Runtime)."""
        ...

    # auto, none, freeze or compile (see inference.forward.optimize_mode); a PyTorch setting,
    # which ONNX Runtime, optimising its session itself, keeps and ignores.
    optimize: str

    @property
    def classes(self) -> list[str]: ...

    @property
    def preprocessing(self) -> Preprocessing: ...

    @property
    def threshold(self) -> float: ...

    @property
    def ood_threshold(self) -> float | None:
        """The out-of-distribution score past which an input is unlike the training images
        (:mod:`imageclf.modelfile.ood`); None for a model without the statistics."""
        ...

    @property
    def model(self) -> nn.Module:
        """The PyTorch network (Grad-CAM, the layer summary and ONNX export need it); raises
        :class:`~imageclf.core.errors.ImageclfError` saying so where the backend has none."""
        ...

    def predict_arrays(self, images: np.ndarray, batch_size: int | None = None,
                       on_batch: Callable[[int], None] | None = None) -> np.ndarray:
        """Probabilities (N, K) for preprocessed (N, H, W, C) uint8 images; ``batch_size``
        None leaves it to the predictor; ``on_batch(n)`` after each forward pass."""
        ...

    def predict_scored(self, images: np.ndarray, batch_size: int | None = None,
                       on_batch: Callable[[int], None] | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        """Probabilities (N, K) as :meth:`predict_arrays` gives them and OOD scores (N,), from
        one forward pass; the scores are None for a model without OOD statistics."""
        ...

    def view_logits(self, images: np.ndarray, batch_size: int | None = None) -> np.ndarray:
        """Raw logits (views, N, outputs) of the model's test-time views, the plain image
        first: what temperature scaling fits."""
        ...

    def torch_predictor(self) -> Predictor:
        """A predictor of the same model that has its PyTorch network: this one where it
        does, else one loaded from the model folder this one came from; raises
        :class:`~imageclf.core.errors.ImageclfError` where there is none (a bare ``.onnx`` file)."""
        ...
