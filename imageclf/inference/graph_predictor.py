"""What the runtimes of an exported ONNX graph share (ONNX Runtime, OpenVINO), torch-free.

A :class:`GraphPredictor` feeds the graph of :mod:`imageclf.modelfile.onnx` (``input`` float32
NCHW; outputs ``probs``, ``logits`` and, with OOD statistics, ``ood``) batch by batch with the
NumPy preprocessing of :mod:`imageclf.data.arrays`; a subclass says only how one batch runs
(:meth:`GraphPredictor.infer`). Nothing here imports torch: ``imageclf predict RUN x.png
--backend onnx`` answers without it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from imageclf.core.errors import ImageclfError
from imageclf.data.arrays import model_input, tta_views
from imageclf.inference.base import FromConfig
from imageclf.modelfile.config import ModelConfig
from imageclf.modelfile.onnx_meta import OOD_OUTPUT

if TYPE_CHECKING:
    import torch
    from torch import nn

GRAPH_BATCH = 128  # the most images per run when the caller leaves it to the backend
# Pixels per run the default batch aims at: ONNX Runtime's tuned session measured fastest at 128
# images of 28x28 (mnist-basic: 2,783 img/s against 2,484 at 64) and 64 of 128x128 (xray-5block).
GRAPH_PIXELS = 2_000_000


class GraphPredictor(FromConfig):
    """An exported graph on a CPU runtime. ``run_dir`` is the model folder it came from (None
    for a bare ``.onnx`` file): what needs the PyTorch network (Grad-CAM) loads it from there.
    ``variant``: ``fp32``, or ``int8`` for the quantised graph (``RUN/model.int8.onnx``)."""

    backend = "graph"
    # The protocol's PyTorch setting: a graph runtime optimises the graph itself and ignores it.
    optimize = "auto"

    def __init__(self, config: ModelConfig, source: str, run_dir: str | None, outputs: set[str],
                 variant: str = "fp32") -> None:
        super().__init__(config, source)
        self.run_dir = run_dir
        self.variant = variant
        if variant == "int8":  # what the Classifier, serve's /health and its errors call it
            self.backend = f"{type(self).backend}-int8"
        self.has_ood = OOD_OUTPUT in outputs
        self._torch: Any = None

    def infer(self, names: list[str], x: np.ndarray) -> list[np.ndarray]:
        """The graph's outputs ``names`` for one float32 NCHW batch ``x``."""
        raise NotImplementedError

    @property
    def device(self) -> torch.device:
        """Always the CPU."""
        # Lazy: torch only for a caller that asks for a torch.device; predicting never does.
        import torch

        return torch.device("cpu")

    @property
    def ood_threshold(self) -> float | None:
        return super().ood_threshold if self.has_ood else None

    @property
    def model(self) -> nn.Module:
        raise ImageclfError(f"{self.source}: the {self.backend} backend has no PyTorch network, which "
                            "explain, summary and export need; load the model with backend='torch'")

    def auto_batch_size(self) -> int:
        """Images per run: GRAPH_PIXELS' worth (a power of two, 8 to GRAPH_BATCH)."""
        h, w = self.preprocessing.size
        fit = max(1, GRAPH_PIXELS // (h * w))
        return max(8, min(GRAPH_BATCH, 2 ** (fit.bit_length() - 1)))

    def chunk_size(self, n_images: int, batch_size: int) -> int:
        return batch_size

    def to_input(self, images: np.ndarray) -> np.ndarray:
        """(N, H, W, C) uint8 -> the graph's normalised float32 NCHW input."""
        return model_input(images, self.preprocessing)

    def _run(self, names: list[str], images: np.ndarray, batch_size: int | None,
             on_batch: Callable[[int], None] | None = None) -> list[np.ndarray]:
        """The graph's outputs ``names`` for all ``images``, each concatenated over the batches."""
        parts: list[list[np.ndarray]] = [[] for _ in names]
        batch_size = batch_size or self.auto_batch_size()
        for start in range(0, len(images), batch_size):
            batch = np.asarray(images[start:start + batch_size])
            for part, out in zip(parts, self.infer(names, self.to_input(batch))):
                part.append(np.asarray(out, np.float32))
            if on_batch:
                on_batch(len(batch))
        return [np.concatenate(p) for p in parts] if parts[0] else []

    def predict_arrays(self, images: np.ndarray, batch_size: int | None = None,
                       on_batch: Callable[[int], None] | None = None) -> np.ndarray:
        """Probabilities (N, K) for preprocessed (N, H, W, C) uint8 images (the graph's ``probs``:
        temperature and test-time flips are in it)."""
        out = self._run(["probs"], images, batch_size, on_batch)
        return out[0] if out else np.zeros((0, len(self.classes)), np.float32)

    def predict_scored(self, images: np.ndarray, batch_size: int | None = None,
                       on_batch: Callable[[int], None] | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        """Probabilities and the graph's ``ood`` scores from one run per batch (None: a graph
        exported without them)."""
        if not self.has_ood:
            return self.predict_arrays(images, batch_size, on_batch), None
        out = self._run(["probs", OOD_OUTPUT], images, batch_size, on_batch)
        if not out:
            return np.zeros((0, len(self.classes)), np.float32), np.zeros(0, np.float32)
        return out[0], out[1]

    def view_logits(self, images: np.ndarray, batch_size: int | None = None) -> np.ndarray:
        """Raw logits (views, N, outputs) of the test-time views, the plain image first: the
        graph's ``logits`` (those of its unflipped input) for each view fed to it."""
        views = tta_views(np.asarray(images), self.config.tta)
        return np.stack([self._run(["logits"], v, batch_size)[0] for v in views])

    def torch_predictor(self) -> Any:
        """The model folder's PyTorch predictor (what Grad-CAM and calibration need)."""
        if self._torch is None:
            if not self.run_dir:
                raise ImageclfError(f"{self.source}: a bare .onnx file has no PyTorch network; load (or "
                                    "serve) the model folder it was exported from")
            # Lazy: the PyTorch network is loaded only when something asks for it (explain).
            from imageclf.inference.torch_predictor import TorchPredictor

            self._torch = TorchPredictor.load(self.run_dir, device="cpu")
        return self._torch
