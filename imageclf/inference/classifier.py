"""A loaded model: ``imageclf.load(RUN)`` -> :class:`Classifier` with ``predict``, ``evaluate``,
``explain`` and ``summary``."""

from __future__ import annotations

import csv
import glob
import io
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from imageclf.core.errors import BadImageError, ImageclfError
from imageclf.core.io import atomic_write_text
from imageclf.core.progress import QUIET, Reporter
from imageclf.data.cache import decode_paths
from imageclf.data.images import Preprocessing, is_image_file
from imageclf.data.sources import Dataset
from imageclf.evaluation.evaluate import EvaluationResult, evaluate
from imageclf.evaluation.explain import Explanation, explain_image
from imageclf.evaluation.summary import ModelSummary, summarize
from imageclf.inference.forward import FREEZE_MIN_IMAGES, auto_batch_size
from imageclf.inference.predictors import TorchPredictor
from imageclf.modelfile.artifact import ModelConfig
from imageclf.modelfile.predictor import ImageInput, Predictor, prepare_input
from imageclf.models.heads import decide


@dataclass
class Predictions:
    """Per-image results: ``paths[i]``, ``labels[i]`` (class name) and ``probs[i]`` (per class)."""

    paths: list[str]
    probs: np.ndarray
    classes: list[str]
    threshold: float
    errors: list[tuple[str, str]]

    @property
    def indices(self) -> np.ndarray:
        return decide(self.probs, self.threshold) if len(self.probs) else np.zeros(0, np.int64)

    @property
    def labels(self) -> list[str]:
        return [self.classes[i] for i in self.indices]

    def __len__(self) -> int:
        return len(self.paths)

    def rows(self) -> list[dict]:
        return [{"path": p, "predicted": self.classes[k],
                 **{f"p_{c}": float(v) for c, v in zip(self.classes, probs)}}
                for p, k, probs in zip(self.paths, self.indices, self.probs)]

    def to_csv(self, path: str | Path | None = None) -> str:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=["path", "predicted", *(f"p_{c}" for c in self.classes)])
        writer.writeheader()
        for row in self.rows():
            writer.writerow({k: (f"{v:.6f}" if isinstance(v, float) else v) for k, v in row.items()})
        if path is not None:
            atomic_write_text(path, buf.getvalue())
        return buf.getvalue()


def expand_inputs(inputs: Iterable[str | Path]) -> list[str]:
    """Files as given, folders walked (image files, sorted), globs expanded; missing -> error."""
    out: list[str] = []
    for item in inputs:
        s = str(item)
        p = Path(s).expanduser()
        if p.is_dir():
            found = sorted(str(f) for f in p.rglob("*") if is_image_file(f))
            if not found:
                raise ImageclfError(f"{p}: folder has no images")
            out += found
        elif p.is_file():
            out.append(str(p))
        elif any(ch in s for ch in "*?["):
            found = sorted(f for f in glob.glob(s, recursive=True) if Path(f).is_file())
            if not found:
                raise ImageclfError(f"{s}: no files match")
            out += found
        else:
            raise ImageclfError(f"{s}: no such file or folder")
    return out


class Classifier:
    """A trained model with its preprocessing, classes and decision threshold, and the verbs on it.

    The forward pass is its ``predictor``'s: a :class:`~imageclf.inference.predictors.TorchPredictor`
    (what :meth:`load` gives) or an :class:`~imageclf.inference.predictors.OnnxPredictor`
    (``load_backend(RUN, "onnx")``). A Classifier is a :class:`~imageclf.modelfile.predictor.Predictor`
    itself, answering from the one it holds, so evaluate, calibrate, export and the server take it.
    """

    def __init__(self, predictor: Predictor) -> None:
        self.predictor = predictor

    @classmethod
    def load(cls, run_dir: str | Path, device: str = "auto") -> Classifier:
        """Load a model folder on PyTorch, checked fully first (:mod:`imageclf.modelfile.artifact`)."""
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
    def model(self) -> nn.Module:
        """The PyTorch network; :class:`~imageclf.core.errors.ImageclfError` on a backend without one."""
        return self.predictor.model

    def predict_arrays(self, images: np.ndarray, batch_size: int | None = None,
                       on_batch: Callable[[int], None] | None = None) -> np.ndarray:
        """Probabilities (N, K) for preprocessed (N, H, W, C) uint8 images; ``batch_size`` None:
        the predictor's choice (for PyTorch, :func:`~imageclf.inference.forward.auto_batch_size`)."""
        return self.predictor.predict_arrays(images, batch_size, on_batch)

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
                workers: int | None = None, reporter: Reporter = QUIET) -> Predictions:
        """Predict files, folders, globs, PIL images or arrays, with the training preprocessing.

        >>> model = imageclf.load("runs/xray")                       # doctest: +SKIP
        >>> model.predict(["a.png", "scans/"]).labels                # doctest: +SKIP
        ['normal', 'pneumonia', ...]
        """
        if isinstance(inputs, str | Path) or not isinstance(inputs, Sequence):
            inputs = [inputs]
        pre = self.preprocessing
        if all(isinstance(i, str | Path) for i in inputs):
            names = expand_inputs(inputs)
            bs = batch_size or auto_batch_size(pre, self.device)
            # Decoded images are predicted a chunk at a time while the decode workers run ahead;
            # a chunk as large as a job worth optimising lets predict_arrays see it as one.
            chunk = max(bs, FREEZE_MIN_IMAGES) if len(names) >= FREEZE_MIN_IMAGES else bs
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
                        parts.append(self.predict_arrays(np.stack(arrays), bs, bar.advance))
                        arrays = []
                if arrays or not parts:
                    batch = np.stack(arrays) if arrays else np.zeros((0, *pre.size, pre.channels), np.uint8)
                    parts.append(self.predict_arrays(batch, bs, bar.advance))
            return Predictions(kept, np.concatenate(parts), self.classes, self.threshold, errors)
        kept = [f"<input {i}>" for i in range(len(inputs))]
        batch = np.stack([self.prepare(x) for x in inputs])
        with reporter.task("predicting", total=len(batch)) as bar:
            probs = self.predict_arrays(batch, batch_size, on_batch=bar.advance)
        return Predictions(kept, probs, self.classes, self.threshold, [])

    def evaluate(self, data: str | Path | Dataset, split: str | None = None, **kwargs) -> EvaluationResult:
        """Evaluate on a dataset (path or :class:`~imageclf.data.sources.Dataset`); see
        :mod:`imageclf.evaluation.evaluate`."""
        return evaluate(self, data, split=split, **kwargs)

    def explain(self, image: ImageInput, layer: str | None = None) -> Explanation:
        """Grad-CAM of the predicted class for one image; see
        :func:`imageclf.evaluation.explain.explain_image`. Needs the PyTorch network: on another
        backend, an :class:`~imageclf.core.errors.ImageclfError` says to load with backend='torch'."""
        return explain_image(self, image, layer)

    def summary(self) -> ModelSummary:
        """Keras-style layer table (print it); ``.draw(path)`` draws the diagram
        (:mod:`imageclf.evaluation.summary`). Needs the PyTorch network, as :meth:`explain` does."""
        pre = self.preprocessing
        return summarize(self.model, (pre.channels, *pre.size), self.config.name or self.config.architecture)

    def __repr__(self) -> str:
        pre = self.preprocessing
        return (f"Classifier({self.config.architecture}, backend={self.backend}, classes={self.classes}, "
                f"input={pre.size[0]}x{pre.size[1]}x{pre.channels}, threshold={self.threshold})")
