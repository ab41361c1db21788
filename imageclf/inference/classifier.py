"""A loaded model: ``imageclf.load(RUN)`` -> :class:`Classifier` with ``predict``, ``evaluate``,
``explain`` and ``summary``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from imageclf.core.errors import BadImageError
from imageclf.core.progress import QUIET, Reporter
from imageclf.data.cache import decode_paths
from imageclf.data.images import Preprocessing
from imageclf.inference.predictions import (  # noqa: F401  (check_ood_mode, expand_inputs: re-exported)
    Predictions,
    check_ood_mode,
    expand_inputs,
    no_ood_note,
)
from imageclf.modelfile.config import ModelConfig
from imageclf.modelfile.inputs import ImageInput, prepare_input

if TYPE_CHECKING:
    import torch
    from torch import nn

    from imageclf.data.sources import Dataset
    from imageclf.evaluation.evaluate import EvaluationResult
    from imageclf.evaluation.explain import Explanation
    from imageclf.evaluation.summary import ModelSummary
    from imageclf.modelfile.ood import OodStats
    from imageclf.modelfile.predictor import Predictor

# Images per forward pass when neither the caller nor the predictor says.
DEFAULT_BATCH = 64


def even_batch_size(n_images: int, most: int) -> int:
    """The size of the fewest equal batches of at most ``most`` that hold ``n_images``.

    A graph runtime prepares each new input shape at its first run (OpenVINO: ~5 ms on a
    2-core CPU): 400 images in batches of 100 meet one shape, where 3 x 128 + 16 meet two.
    """
    batches = max(1, -(-n_images // max(1, most)))
    return max(1, -(-n_images // batches))


class Classifier:
    """A trained model with its preprocessing, classes and decision threshold, and the verbs on it.

    The forward pass is its ``predictor``'s: a :class:`~imageclf.inference.torch_predictor.TorchPredictor`
    (what :meth:`load` gives) or a :class:`~imageclf.inference.graph_predictor.GraphPredictor` on
    ONNX Runtime or OpenVINO (``load_backend(RUN, "onnx")``). A Classifier is a
    :class:`~imageclf.modelfile.predictor.Predictor` itself, answering from the one it holds, so
    evaluate, calibrate, export and the server take it.
    """

    def __init__(self, predictor: Predictor, ood_mode: str = "refuse") -> None:
        self.predictor = predictor
        # refuse: an input past the OOD threshold is answered OUTSIDE; flag: it keeps its class.
        self.ood_mode = check_ood_mode(ood_mode)
        self._told_no_ood = False

    @classmethod
    def load(cls, run_dir: str | Path, device: str = "auto") -> Classifier:
        """Load a model folder on PyTorch, checked fully first (:mod:`imageclf.modelfile.artifact`)."""
        # Lazy: the PyTorch engine imports torch, which the graph runtimes' predictions never need.
        from imageclf.inference.torch_predictor import TorchPredictor

        return cls(TorchPredictor.load(run_dir, device))

    @property
    def backend(self) -> str:
        return self.predictor.backend

    @property
    def config(self) -> ModelConfig:
        return self.predictor.config

    @property
    def source(self) -> str:
        return self.predictor.source

    @property
    def device(self) -> torch.device:
        return self.predictor.device

    @property
    def optimize(self) -> str:
        """auto (a frozen oneDNN graph for CPU jobs of 2,048 images or more), none, freeze or compile."""
        return self.predictor.optimize

    @optimize.setter
    def optimize(self, mode: str) -> None:
        self.predictor.optimize = mode

    @property
    def classes(self) -> list[str]:
        return self.predictor.classes

    @property
    def preprocessing(self) -> Preprocessing:
        return self.predictor.preprocessing

    @property
    def threshold(self) -> float:
        return self.predictor.threshold

    @property
    def ood_threshold(self) -> float | None:
        return self.predictor.ood_threshold

    @property
    def ood(self) -> OodStats | None:
        """The OOD statistics of a PyTorch model (None on another backend, or without them)."""
        return getattr(self.predictor, "ood", None)

    def tell_no_ood(self, reporter: Reporter) -> None:
        """Say, once per loaded model, that it has no OOD statistics (a folder from before them)."""
        if self.ood_threshold is None and not self._told_no_ood:
            self._told_no_ood = True
            reporter.warn(no_ood_note(self.source))

    @property
    def model(self) -> nn.Module:
        """The PyTorch network; :class:`~imageclf.core.errors.ImageclfError` on a backend without one."""
        return self.predictor.model

    def predict_arrays(self, images: np.ndarray, batch_size: int | None = None,
                       on_batch: Callable[[int], None] | None = None) -> np.ndarray:
        """Probabilities (N, K) for preprocessed (N, H, W, C) uint8 images; ``batch_size`` None:
        the predictor's choice (for PyTorch, :func:`~imageclf.inference.forward.auto_batch_size`)."""
        return self.predictor.predict_arrays(images, batch_size, on_batch)

    def predict_scored(self, images: np.ndarray, batch_size: int | None = None,
                       on_batch: Callable[[int], None] | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        """Probabilities (N, K) and OOD scores (N,; None without statistics), one forward pass."""
        return self.predictor.predict_scored(images, batch_size, on_batch)

    def view_logits(self, images: np.ndarray, batch_size: int | None = None) -> np.ndarray:
        """Raw logits (views, N, outputs) of the test-time views, the plain image first."""
        return self.predictor.view_logits(images, batch_size)

    def torch_predictor(self) -> Predictor:
        """This model where it runs on PyTorch; else the predictor's PyTorch twin (see
        :meth:`~imageclf.modelfile.predictor.Predictor.torch_predictor`)."""
        twin = self.predictor.torch_predictor()
        return self if twin is self.predictor else twin

    def prepare(self, image: ImageInput) -> np.ndarray:
        """One image (path, bytes, PIL image or array) as the model's uint8 input."""
        return prepare_input(image, self.preprocessing)

    def predict(self, inputs: str | Path | Sequence, batch_size: int | None = None, skip_bad: bool = False,
                workers: int | None = None, reporter: Reporter = QUIET,
                ood_mode: str | None = None) -> Predictions:
        """Predict files, folders, globs, PIL images or arrays, with the training preprocessing.

        ``ood_mode`` (default: this Classifier's, ``refuse``): what an input unlike the training
        images is answered; see :class:`Predictions`.

        >>> model = imageclf.load("runs/xray")                       # doctest: +SKIP
        >>> model.predict(["a.png", "scans/"]).labels                # doctest: +SKIP
        ['normal', 'pneumonia', ...]
        """
        mode = check_ood_mode(ood_mode or self.ood_mode)
        self.tell_no_ood(reporter)
        if isinstance(inputs, str | Path) or not isinstance(inputs, Sequence):
            inputs = [inputs]
        if all(isinstance(i, str | Path) for i in inputs):
            kept, errors, probs, scores = self._predict_files(inputs, batch_size, skip_bad, workers, reporter)
        else:
            kept, errors = [f"<input {i}>" for i in range(len(inputs))], []
            batch = np.stack([self.prepare(x) for x in inputs])
            with reporter.task("predicting", total=len(batch)) as bar:
                probs, scores = self.predict_scored(batch, batch_size, on_batch=bar.advance)
        return Predictions(kept, probs, self.classes, self.threshold, errors, scores, self.ood_threshold,
                           mode)

    def _predict_files(self, inputs: Sequence, batch_size: int | None, skip_bad: bool, workers: int | None,
                       reporter: Reporter) -> tuple[list[str], list[tuple[str, str]], np.ndarray,
                                                    np.ndarray | None]:
        """Decode and predict files a chunk at a time: (kept names, errors, probabilities, OOD scores)."""
        pre = self.preprocessing
        names = expand_inputs(inputs)
        auto = getattr(self.predictor, "auto_batch_size", None)
        bs = even_batch_size(len(names), batch_size or (auto() if auto else DEFAULT_BATCH))
        # Decoded images are predicted a chunk at a time while the decode workers (threads)
        # run ahead, so decoding overlaps the forward pass; the torch predictor asks for
        # chunks as large as a job worth optimising, so predict_arrays sees it as one.
        chunking = getattr(self.predictor, "chunk_size", None)
        chunk = chunking(len(names), bs) if chunking else bs
        kept, errors, arrays, parts = [], [], [], []
        with reporter.task("predicting", total=len(names)) as bar:
            for name, result in zip(names, decode_paths(names, pre, workers, threads=True)):
                if isinstance(result, str):
                    if not skip_bad:
                        raise BadImageError(name, result)
                    errors.append((name, result))
                    bar.advance(1)
                else:
                    arrays.append(result)
                    kept.append(name)
                if len(arrays) == chunk:
                    parts.append(self.predict_scored(np.stack(arrays), bs, bar.advance))
                    arrays = []
            if arrays or not parts:
                batch = np.stack(arrays) if arrays else np.zeros((0, *pre.size, pre.channels), np.uint8)
                parts.append(self.predict_scored(batch, bs, bar.advance))
        probs = np.concatenate([p for p, _ in parts])
        scores = None if parts[0][1] is None else np.concatenate([s for _, s in parts])
        return kept, errors, probs, scores

    def evaluate(self, data: str | Path | Dataset, split: str | None = None, **kwargs) -> EvaluationResult:
        """Evaluate on a dataset (path or :class:`~imageclf.data.sources.Dataset`); see
        :mod:`imageclf.evaluation.evaluate`."""
        # Lazy: evaluation's metrics import torch, which a prediction on ONNX Runtime never needs.
        from imageclf.evaluation.evaluate import evaluate

        return evaluate(self, data, split=split, **kwargs)

    def explain(self, image: ImageInput, layer: str | None = None) -> Explanation:
        """Grad-CAM of the predicted class for one image; see
        :func:`imageclf.evaluation.explain.explain_image`. Needs the PyTorch network: on another
        backend, an :class:`~imageclf.core.errors.ImageclfError` says to load with backend='torch'."""
        # Lazy: Grad-CAM is torch; the verbs that need it import it when called.
        from imageclf.evaluation.explain import explain_image

        return explain_image(self, image, layer)

    def summary(self) -> ModelSummary:
        """Keras-style layer table (print it); ``.draw(path)`` draws the diagram
        (:mod:`imageclf.evaluation.summary`). Needs the PyTorch network, as :meth:`explain` does."""
        # Lazy: the layer summary is torch; the verbs that need it import it when called.
        from imageclf.evaluation.summary import summarize

        pre = self.preprocessing
        return summarize(self.model, (pre.channels, *pre.size), self.config.name or self.config.architecture)

    def __repr__(self) -> str:
        pre = self.preprocessing
        return (f"Classifier({self.config.architecture}, backend={self.backend}, classes={self.classes}, "
                f"input={pre.size[0]}x{pre.size[1]}x{pre.channels}, threshold={self.threshold})")
