"""Loading a model on a backend: ``load_backend(source, "torch" | "onnx")`` -> a Classifier.

``torch`` runs a model folder's network (:class:`~imageclf.inference.predictors.TorchPredictor`);
``onnx`` runs ONNX Runtime (:class:`~imageclf.inference.predictors.OnnxPredictor`) on a model
folder or on a ``.onnx`` file written by export. The Classifier is the same either way, so
file decoding, ``predict``, ``evaluate`` and the server work unchanged on both::

    model = load_backend("runs/xray", "onnx")     # RUN/model.onnx if current, else exported in memory
    model.predict(["a.png"]).probs                  # same probabilities as load_backend(..., "torch")
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from imageclf.core.errors import ConfigError, ImageclfError, ModelFileError
from imageclf.inference.classifier import Classifier
from imageclf.inference.predictors import OnnxPredictor, TorchPredictor
from imageclf.modelfile.artifact import parse_config
from imageclf.modelfile.onnx import onnx_bytes, read_onnx_metadata

ONNX_FILE = "model.onnx"


def _onnx_from_file(path: Path, threads: int | None) -> OnnxPredictor:
    data = path.read_bytes()
    meta = read_onnx_metadata(data, str(path))
    try:
        config = parse_config(json.loads(meta["config"]), f"{path} (imageclf.config)")
    except json.JSONDecodeError as exc:
        raise ModelFileError(f"{path}: imageclf.config metadata is not JSON ({exc})") from None
    return OnnxPredictor(data, config, str(path), None, threads)


def _onnx_from_run(run_dir: Path, threads: int | None) -> OnnxPredictor:
    """RUN/model.onnx when it was exported from this very model file, else an in-memory export."""
    torch_model = TorchPredictor.load(run_dir, device="cpu")
    exported = run_dir / ONNX_FILE
    if exported.is_file():
        data = exported.read_bytes()
        meta = read_onnx_metadata(data, str(exported))
        # Stale when the weights or anything in config.json (threshold, temperature) changed.
        current = json.loads(json.dumps(torch_model.config.to_dict()))
        if json.loads(meta["config"]) == current:
            return OnnxPredictor(data, torch_model.config, str(run_dir), str(run_dir), threads)
    return OnnxPredictor(onnx_bytes(torch_model), torch_model.config, str(run_dir), str(run_dir), threads)


def load_torch(source: str | Path, device: str = "auto", threads: int | None = None) -> Classifier:
    """A model folder on PyTorch; ``threads`` is ignored (``torch.set_num_threads`` governs it)."""
    return Classifier.load(source, device=device)


def load_onnx(source: str | Path, device: str = "auto", threads: int | None = None) -> Classifier:
    """A model on ONNX Runtime, from a model folder or a ``.onnx`` file written by export;
    ``device`` is ignored (the session runs on the CPU), ``threads`` caps its intra-op threads."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        raise ImageclfError("the onnx backend needs onnxruntime; pip install 'imageclf[onnx]'") from None
    path = Path(source)
    if path.is_file() and path.suffix.lower() == ".onnx":
        return Classifier(_onnx_from_file(path, threads))
    return Classifier(_onnx_from_run(path, threads))


BACKENDS: dict[str, Callable[..., Classifier]] = {"torch": load_torch, "onnx": load_onnx}


def load_backend(source: str | Path, backend: str = "torch", device: str = "auto",
                 threads: int | None = None) -> Classifier:
    """Load a model folder (or, for ``onnx``, an exported ``.onnx`` file) on a backend."""
    try:
        loader = BACKENDS[backend]
    except KeyError:
        raise ConfigError(f"unknown backend {backend!r}; known: {', '.join(BACKENDS)}") from None
    return loader(source, device=device, threads=threads)
