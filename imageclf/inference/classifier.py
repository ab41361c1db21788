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

from imageclf.core.errors import BadImageError, ConfigError, ImageclfError
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
from imageclf.modelfile.ood import OOD_MODES, OUTSIDE, OodStats
from imageclf.modelfile.predictor import ImageInput, Predictor, prepare_input
from imageclf.models.heads import decide


def check_ood_mode(mode: str) -> str:
    if mode not in OOD_MODES:
        raise ConfigError(f"--ood must be one of {', '.join(OOD_MODES)}, got {mode!r}")
    return mode


def no_ood_note(source: str) -> str:
    return (f"{source}: this model has no out-of-distribution statistics (trained before imageclf recorded "
            "them): its answers carry no OOD score; add them with 'imageclf ood RUN DATA'")


@dataclass
class Predictions:
    """Per-image results: ``paths[i]``, ``labels[i]`` (class name) and ``probs[i]`` (per class).

    With OOD scores (``ood_scores[i]``; None for a model without the statistics) an image whose
    score is past ``ood_threshold`` is :attr:`outside`; in ``refuse`` mode (the default) its label
    is :data:`~imageclf.modelfile.ood.OUTSIDE` instead of a class, in ``flag`` mode it keeps its
    class and is only flagged. ``indices`` are always the model's class decisions.
    """

    paths: list[str]
    probs: np.ndarray
    classes: list[str]
    threshold: float
    errors: list[tuple[str, str]]
    ood_scores: np.ndarray | None = None
    ood_threshold: float | None = None
    ood_mode: str = "refuse"

    @property
    def indices(self) -> np.ndarray:
        return decide(self.probs, self.threshold) if len(self.probs) else np.zeros(0, np.int64)

    @property
    def outside(self) -> np.ndarray:
        """Whether each image's OOD score is past the threshold (all False without scores)."""
        if self.ood_scores is None or self.ood_threshold is None:
            return np.zeros(len(self.paths), bool)
        return np.asarray(self.ood_scores) > self.ood_threshold

    @property
    def refused(self) -> np.ndarray:
        """The images answered :data:`~imageclf.modelfile.ood.OUTSIDE` instead of a class."""
        return self.outside & (self.ood_mode == "refuse")

    @property
    def labels(self) -> list[str]:
        return [OUTSIDE if r else self.classes[i] for i, r in zip(self.indices, self.refused)]

    def __len__(self) -> int:
        return len(self.paths)

    def rows(self) -> list[dict]:
        scored = self.ood_scores is not None
        return [{"path": p, "predicted": label, **{f"p_{c}": float(v) for c, v in zip(self.classes, probs)},
                 **({"ood_score": float(self.ood_scores[i]), "outside": bool(self.outside[i])}
                    if scored else {})}
                for i, (p, label, probs) in enumerate(zip(self.paths, self.labels, self.probs))]

    def to_csv(self, path: str | Path | None = None) -> str:
        buf = io.StringIO()
        extra = ["ood_score", "outside"] if self.ood_scores is not None else []
        columns = ["path", "predicted", *(f"p_{c}" for c in self.classes), *extra]
        writer = csv.DictWriter(buf, fieldnames=columns)
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

    def __init__(self, predictor: Predictor, ood_mode: str = "refuse") -> None:
        self.predictor = predictor
        # refuse: an input past the OOD threshold is answered OUTSIDE; flag: it keeps its class.
        self.ood_mode = check_ood_mode(ood_mode)
        self._told_no_ood = False

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
