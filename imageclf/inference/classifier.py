"""A loaded model: ``imageclf.load(RUN)`` -> :class:`Classifier` with ``predict`` and ``evaluate``."""

from __future__ import annotations

import csv
import glob
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from imageclf.core.errors import BadImageError, ImageclfError
from imageclf.core.io import atomic_write_text
from imageclf.core.progress import QUIET, Reporter
from imageclf.data.cache import decode_paths
from imageclf.data.images import ImageSource, is_image_file, load_image, prepare_array
from imageclf.data.transforms import batch_input
from imageclf.evaluation.evaluate import evaluate
from imageclf.evaluation.explain import explain_image
from imageclf.evaluation.summary import summarize
from imageclf.inference.forward import (
    FREEZE_MIN_IMAGES,
    auto_batch_size,
    optimize_for_inference,
    optimize_mode,
    predict_probs,
    resolve_device,
)
from imageclf.modelfile.artifact import ModelConfig, build_model, check_weights, load_weights, read_config
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
    """A trained model with its preprocessing, classes and decision threshold."""

    def __init__(self, model: torch.nn.Module, config: ModelConfig, device: torch.device,
                 source: str = "") -> None:
        self.model = model.eval()
        self.config = config
        self.device = device
        self.source = source
        # auto: a frozen oneDNN graph for CPU jobs of FREEZE_MIN_IMAGES or more; none, freeze,
        # compile. An optimised graph is only used when it gives the eager outputs to 1e-5.
        self.optimize = "auto"
        self._fast: dict[tuple, torch.nn.Module] = {}

    @classmethod
    def load(cls, run_dir: str | Path, device: str = "auto") -> Classifier:
        """Load a model folder, checking it fully first (see :mod:`imageclf.modelfile.artifact`)."""
        config = read_config(run_dir)
        check_weights(run_dir, config, build_model)  # before building: a crafted config costs nothing
        model = build_model(config)
        load_weights(run_dir, model, config, checked=True)
        dev = resolve_device(device)
        model = model.to(dev).to(memory_format=torch.channels_last)
        return cls(model, config, dev, str(run_dir))

    @property
    def classes(self) -> list[str]:
        return self.config.classes

    @property
    def preprocessing(self):
        return self.config.preprocessing

    @property
    def threshold(self) -> float:
        return self.config.threshold

    def predict_arrays(self, images: np.ndarray, batch_size: int | None = None, on_batch=None) -> np.ndarray:
        """Probabilities (N, K) for preprocessed (N, H, W, C) uint8 images.

        ``batch_size`` None: chosen for the device (:func:`~imageclf.inference.forward.auto_batch_size`).
        """
        pre = self.preprocessing
        batch_size = batch_size or auto_batch_size(pre, self.device)
        network = self._network(images[:batch_size], len(images))
        return predict_probs(network, images, pre, device=self.device,
                             batch_size=batch_size, tta=self.config.tta,
                             temperature=self.config.temperature, on_batch=on_batch)

    def _network(self, first: np.ndarray, n_images: int) -> torch.nn.Module:
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

    def prepare(self, image: ImageSource | np.ndarray | Image.Image) -> np.ndarray:
        """One image (path, bytes, PIL image or array) as the model's uint8 input."""
        if isinstance(image, np.ndarray):
            return prepare_array(image, self.preprocessing)
        if isinstance(image, Image.Image):
            buf = io.BytesIO()
            image.save(buf, format="PNG")
            return load_image(buf.getvalue(), self.preprocessing)
        return load_image(image, self.preprocessing)

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

    def evaluate(self, data, split: str | None = None, **kwargs):
        """Evaluate on a dataset (path or :class:`~imageclf.data.sources.Dataset`); see
        :mod:`imageclf.evaluation.evaluate`."""
        return evaluate(self, data, split=split, **kwargs)

    def explain(self, image, layer: str | None = None):
        """Grad-CAM of the predicted class for one image; see
        :func:`imageclf.evaluation.explain.explain_image`."""
        return explain_image(self, image, layer)

    def summary(self):
        """Keras-style layer table (print it); ``.draw(path)`` draws the diagram
        (:mod:`imageclf.evaluation.summary`)."""
        pre = self.preprocessing
        return summarize(self.model, (pre.channels, *pre.size), self.config.name or self.config.architecture)

    def __repr__(self) -> str:
        pre = self.preprocessing
        return (f"Classifier({self.config.architecture}, classes={self.classes}, "
                f"input={pre.size[0]}x{pre.size[1]}x{pre.channels}, threshold={self.threshold})")
