"""Inference backends: one interface, ``predict_arrays(uint8 NHWC) -> probs``, two engines.

``torch`` is :class:`~imageclf.inference.classifier.Classifier` itself. ``onnx`` is
:class:`OnnxClassifier`, the same class with the forward pass run by ONNX Runtime, so
file decoding, ``predict``, ``evaluate`` and the server work unchanged on either::

    model = load_backend("runs/xray", "onnx")     # RUN/model.onnx if present, else exported in memory
    model.predict(["a.png"]).probs                  # same probabilities as load_backend(..., "torch")
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch import nn

from imageclf.core.errors import ConfigError, ImageclfError, ModelFileError
from imageclf.data.images import Preprocessing
from imageclf.inference.classifier import Classifier
from imageclf.modelfile.artifact import ModelConfig, parse_config
from imageclf.modelfile.onnx import INPUT_NAME, onnx_bytes, read_onnx_metadata

ONNX_FILE = "model.onnx"


class Backend(Protocol):
    """What the server and ``predict`` need from a model, whatever runs it."""

    config: ModelConfig
    source: str

    @property
    def classes(self) -> list[str]: ...

    @property
    def preprocessing(self) -> Preprocessing: ...

    @property
    def threshold(self) -> float: ...

    def predict_arrays(self, images: np.ndarray, batch_size: int = 128,
                       on_batch: Callable[[int], None] | None = None) -> np.ndarray: ...


class _NoTorchNetwork(nn.Module):
    """Stands in for the PyTorch network of a model that runs on ONNX Runtime."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise ImageclfError("this model runs on ONNX Runtime; load it with backend='torch' "
                            "for anything that needs the PyTorch network (e.g. Grad-CAM)")


class OnnxClassifier(Classifier):
    """A :class:`Classifier` whose forward pass is an ONNX Runtime session.

    ``run_dir`` is the model folder it came from (``None`` for a bare ``.onnx`` file):
    what needs the PyTorch network (Grad-CAM) can load it from there.
    """

    def __init__(self, onnx_model: bytes, config: ModelConfig, source: str,
                 run_dir: str | None = None, threads: int | None = None) -> None:
        super().__init__(_NoTorchNetwork(), config, torch.device("cpu"), source)
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(onnx_model, options, providers=["CPUExecutionProvider"])
        self.run_dir = run_dir
        pre = config.preprocessing
        self._mean = None if pre.mean is None else np.asarray(pre.mean, np.float32).reshape(1, -1, 1, 1)
        self._std = None if pre.std is None else np.asarray(pre.std, np.float32).reshape(1, -1, 1, 1)

    def to_input(self, images: np.ndarray) -> np.ndarray:
        """(N, H, W, C) uint8 -> the graph's normalised float32 NCHW input (as transforms.to_model_input)."""
        x = np.ascontiguousarray(images.transpose(0, 3, 1, 2), dtype=np.float32) / np.float32(255.0)
        if self._mean is not None:
            x = (x - self._mean) / self._std
        return x

    def predict_arrays(self, images: np.ndarray, batch_size: int | None = 128,
                       on_batch: Callable[[int], None] | None = None) -> np.ndarray:
        """Probabilities (N, K) for preprocessed (N, H, W, C) uint8 images."""
        out = []
        batch_size = batch_size or 128  # None: the caller leaves it to the backend
        for start in range(0, len(images), batch_size):
            batch = np.asarray(images[start:start + batch_size])
            out.append(self.session.run(["probs"], {INPUT_NAME: self.to_input(batch)})[0])
            if on_batch:
                on_batch(len(batch))
        if not out:
            return np.zeros((0, len(self.classes)), np.float32)
        return np.concatenate(out).astype(np.float32, copy=False)

    def __repr__(self) -> str:
        return "Onnx" + super().__repr__()


def _onnx_from_file(path: Path, threads: int | None) -> OnnxClassifier:
    data = path.read_bytes()
    meta = read_onnx_metadata(data, str(path))
    try:
        config = parse_config(json.loads(meta["config"]), f"{path} (imageclf.config)")
    except json.JSONDecodeError as exc:
        raise ModelFileError(f"{path}: imageclf.config metadata is not JSON ({exc})") from None
    return OnnxClassifier(data, config, str(path), None, threads)


def _onnx_from_run(run_dir: Path, threads: int | None) -> OnnxClassifier:
    """RUN/model.onnx when it was exported from this very model file, else an in-memory export."""
    torch_model = Classifier.load(run_dir, device="cpu")
    exported = run_dir / ONNX_FILE
    if exported.is_file():
        data = exported.read_bytes()
        meta = read_onnx_metadata(data, str(exported))
        # Stale when the weights or anything in config.json (threshold, temperature) changed.
        current = json.loads(json.dumps(torch_model.config.to_dict()))
        if json.loads(meta["config"]) == current:
            return OnnxClassifier(data, torch_model.config, str(run_dir), str(run_dir), threads)
    return OnnxClassifier(onnx_bytes(torch_model), torch_model.config, str(run_dir), str(run_dir),
                          threads)


def load_torch(source: str | Path, device: str = "auto", threads: int | None = None) -> Classifier:
    return Classifier.load(source, device=device)


def load_onnx(source: str | Path, device: str = "auto", threads: int | None = None) -> OnnxClassifier:
    """An ONNX Runtime model from a model folder or from a ``.onnx`` file written by export."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        raise ImageclfError("the onnx backend needs onnxruntime; pip install 'imageclf[onnx]'") from None
    path = Path(source)
    if path.is_file() and path.suffix.lower() == ".onnx":
        return _onnx_from_file(path, threads)
    return _onnx_from_run(path, threads)


BACKENDS: dict[str, Callable[..., Classifier]] = {"torch": load_torch, "onnx": load_onnx}


def load_backend(source: str | Path, backend: str = "torch", device: str = "auto",
                 threads: int | None = None) -> Classifier:
    """Load a model folder (or, for ``onnx``, an exported ``.onnx`` file) on a backend."""
    try:
        loader = BACKENDS[backend]
    except KeyError:
        raise ConfigError(f"unknown backend {backend!r}; known: {', '.join(BACKENDS)}") from None
    return loader(source, device=device, threads=threads)
