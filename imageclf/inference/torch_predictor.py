"""The PyTorch engine of a :class:`~imageclf.inference.classifier.Classifier`: a model folder's
network, run on any device through the one forward path (:mod:`imageclf.inference.forward`).

Only this predictor has the network that Grad-CAM, the layer summary and export need; the
graph runtimes (:mod:`imageclf.inference.onnx_predictor`, :mod:`imageclf.inference.openvino_predictor`)
give the same probabilities (to 1e-4) without importing torch.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from imageclf.data.transforms import batch_input
from imageclf.inference.base import FromConfig
from imageclf.inference.forward import (
    FREEZE_MIN_IMAGES,
    auto_batch_size,
    optimize_for_inference,
    optimize_mode,
    predict_probs,
    predict_scored,
    resolve_device,
    view_logits,
)
from imageclf.modelfile.artifact import ModelConfig, build_model, check_weights, load_weights, read_config
from imageclf.modelfile.ood import OodStats, ScoredNet, check_fits, feature_heads, read_ood


class TorchPredictor(FromConfig):
    """A model folder's PyTorch network, run on ``device``."""

    backend = "torch"

    def __init__(self, model: nn.Module, config: ModelConfig, device: torch.device, source: str = "",
                 ood: OodStats | None = None) -> None:
        super().__init__(config, source)
        self.model = model.eval()
        self.device = device
        # The network with its OOD scoring, sharing its weights (None: a model without statistics).
        self.scored = None if ood is None else ScoredNet(self.model, ood).to(device).eval()
        # auto: a frozen oneDNN graph for CPU jobs of FREEZE_MIN_IMAGES or more; none, freeze,
        # compile. An optimised graph is only used when it gives the eager outputs to 1e-5.
        self.optimize = "auto"
        self._fast: dict[tuple, nn.Module] = {}

    @classmethod
    def load(cls, run_dir: str | Path, device: str = "auto") -> TorchPredictor:
        """Load a model folder, checking it fully first (see :mod:`imageclf.modelfile.artifact`)."""
        config = read_config(run_dir)
        check_weights(run_dir, config, build_model)  # before building: a crafted config costs nothing
        ood = read_ood(run_dir, config.ood)
        model = build_model(config)
        load_weights(run_dir, model, config, checked=True)
        if ood is not None:
            check_fits(ood, feature_heads(model), config.preprocessing.channels)
        dev = resolve_device(device)
        model = model.to(dev).to(memory_format=torch.channels_last)
        return cls(model, config, dev, str(run_dir), ood)

    @property
    def ood(self) -> OodStats | None:
        return None if self.scored is None else self.scored.stats

    def auto_batch_size(self) -> int:
        """Images per forward pass when the caller leaves it to the predictor (chosen for the device)."""
        return auto_batch_size(self.preprocessing, self.device)

    def chunk_size(self, n_images: int, batch_size: int) -> int:
        """Decoded images predicted at once while decoding runs ahead: a job worth optimising
        (FREEZE_MIN_IMAGES or more) is handed over in chunks that large, so predict_arrays
        sees it as one."""
        return max(batch_size, FREEZE_MIN_IMAGES) if n_images >= FREEZE_MIN_IMAGES else batch_size

    def predict_arrays(self, images: np.ndarray, batch_size: int | None = None,
                       on_batch: Callable[[int], None] | None = None) -> np.ndarray:
        """Probabilities (N, K) for preprocessed (N, H, W, C) uint8 images.

        ``batch_size`` None: chosen for the device (:func:`~imageclf.inference.forward.auto_batch_size`).
        """
        pre = self.preprocessing
        batch_size = batch_size or auto_batch_size(pre, self.device)
        network = self._network(images[:batch_size], len(images))
        return predict_probs(network, images, pre, device=self.device,
                             batch_size=batch_size, tta=self.config.tta,
                             temperature=self.config.temperature, on_batch=on_batch)

    def predict_scored(self, images: np.ndarray, batch_size: int | None = None,
                       on_batch: Callable[[int], None] | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        """Probabilities (N, K) and OOD scores (N,) from one forward pass (scores None: the
        model has no OOD statistics). Scored passes run the eager network, whose heads the
        scoring hooks into."""
        if self.scored is None:
            return self.predict_arrays(images, batch_size, on_batch), None
        pre = self.preprocessing
        return predict_scored(self.scored, images, pre, device=self.device,
                              batch_size=batch_size or auto_batch_size(pre, self.device),
                              tta=self.config.tta, temperature=self.config.temperature, on_batch=on_batch)

    def _network(self, first: np.ndarray, n_images: int) -> nn.Module:
        """The eager network, or its optimised graph (built once, on the first large job)."""
        mode = optimize_mode(self.optimize, self.device, n_images)
        if self.optimize == "auto" and ("freeze", first.shape[1:]) in self._fast:
            mode = "freeze"  # built for an earlier large job: small ones use it too
        if mode == "none" or len(first) == 0:
            return self.model
        key = (mode, first.shape[1:])
        if key not in self._fast:
            x = batch_input(first, self.preprocessing, self.device)
            self._fast[key] = optimize_for_inference(self.model, x, mode)
        return self._fast[key]

    def view_logits(self, images: np.ndarray, batch_size: int | None = None) -> np.ndarray:
        """Raw logits (views, N, outputs) of the test-time views, the plain image first."""
        return view_logits(self.model, images, self.preprocessing, device=self.device,
                           batch_size=batch_size or auto_batch_size(self.preprocessing, self.device),
                           tta=self.config.tta)

    def torch_predictor(self) -> TorchPredictor:
        return self
