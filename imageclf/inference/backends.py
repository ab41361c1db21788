"""Loading a model on a backend: ``load_backend(source, name)`` -> a Classifier.

The backends are a registry (:data:`BACKENDS`, added to with :func:`register_backend`):

- ``torch``: a model folder's network (:class:`~imageclf.inference.torch_predictor.TorchPredictor`);
- ``onnx`` / ``openvino``: the exported graph on ONNX Runtime / OpenVINO, on the CPU, from a
  model folder (``RUN/model.onnx`` when it was exported from these very weights and config,
  else exported in memory, which imports torch) or from a ``.onnx`` file written by export;
- ``onnx-int8`` / ``openvino-int8``: the graph quantised to int8 (``RUN/model.int8.onnx``,
  written by ``imageclf export RUN --int8``; refused when missing or stale);
- ``auto``: the fastest of them that ``imageclf export`` measured equal to torch on the model's
  own validation images (``RUN/backends.json``, :mod:`imageclf.inference.auto`), else torch.

The Classifier is the same on each, so file decoding, ``predict``, ``evaluate`` and the server
work unchanged. Only ``torch`` (and an in-memory export) imports torch::

    model = load_backend("runs/xray", "onnx")      # no torch when RUN/model.onnx is current
    model.predict(["a.png"]).probs                   # same probabilities as load_backend(..., "torch")
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path

from imageclf.core.errors import ConfigError, ImageclfError, ModelFileError
from imageclf.inference.auto import agrees, choose_backend, read_measurement
from imageclf.inference.classifier import Classifier
from imageclf.inference.graph_predictor import GraphPredictor
from imageclf.modelfile.config import ModelConfig, checked_weights, read_config
from imageclf.modelfile.onnx_meta import (
    INT8_FILE,
    ONNX_FILE,
    config_from_metadata,
    read_onnx_metadata,
    same_config,
)

Loader = Callable[..., Classifier]
BACKENDS: dict[str, Loader] = {}
# Runtime -> (the Python package it needs, the extra that installs it).
RUNTIMES = {"onnx": ("onnxruntime", "onnx"), "openvino": ("openvino", "openvino")}


def register_backend(name: str) -> Callable[[Loader], Loader]:
    """Add a backend: ``loader(source, device=..., threads=...) -> Classifier``."""
    def add(loader: Loader) -> Loader:
        BACKENDS[name] = loader
        return loader
    return add


def runtime_installed(runtime: str) -> bool:
    """Whether a graph runtime's package is importable (found without importing it)."""
    return runtime == "torch" or importlib.util.find_spec(RUNTIMES[runtime][0]) is not None


def _require(runtime: str) -> None:
    package, extra = RUNTIMES[runtime]
    if not runtime_installed(runtime):
        raise ImageclfError(f"the {runtime} backend needs {package}; pip install 'imageclf[{extra}]'")


def _predictor(runtime: str, data: bytes, config: ModelConfig, source: str, run_dir: str | None,
               threads: int | None, variant: str) -> GraphPredictor:
    if runtime == "onnx":
        # Lazy: onnxruntime is an optional extra, imported by the one backend that uses it.
        from imageclf.inference.onnx_predictor import OnnxPredictor

        return OnnxPredictor(data, config, source, run_dir, threads, variant)
    # Lazy: openvino is an optional extra, imported by the one backend that uses it.
    from imageclf.inference.openvino_predictor import OpenVinoPredictor

    return OpenVinoPredictor(data, config, source, run_dir, threads, variant)


def current_config(run_dir: Path) -> ModelConfig:
    """RUN/config.json, with the weights checked against it by their hash (torch-free)."""
    config = read_config(run_dir)
    checked_weights(run_dir, config)
    return config


def graph_bytes(run_dir: Path, config: ModelConfig, variant: str) -> bytes | None:
    """The exported graph file of a model folder (``model.onnx``, or ``model.int8.onnx`` for
    int8) when it was exported from exactly this config and weights; None when missing or stale."""
    path = run_dir / (INT8_FILE if variant == "int8" else ONNX_FILE)
    if not path.is_file():
        return None
    data = path.read_bytes()
    meta = read_onnx_metadata(data, str(path))
    return data if same_config(meta, config) else None


def load_graph(source: str | Path, runtime: str, variant: str = "fp32",
               threads: int | None = None) -> GraphPredictor:
    """A graph runtime's predictor for a model folder or a ``.onnx`` file."""
    _require(runtime)
    path = Path(source)
    if path.is_file() and path.suffix.lower() == ".onnx":
        data = path.read_bytes()
        meta = read_onnx_metadata(data, str(path))
        kind = "int8" if "quantization" in meta else "fp32"
        config = config_from_metadata(meta, str(path))
        return _predictor(runtime, data, config, str(path), None, threads, kind)
    config = current_config(path)
    data = graph_bytes(path, config, variant)
    if data is None and variant == "int8":
        raise ModelFileError(f"{path}: no current {INT8_FILE} (none, or quantised from other weights or "
                             f"another config.json); write it with 'imageclf export {path} --int8'")
    if data is None:
        # Lazy: exporting needs the PyTorch network; a current RUN/model.onnx spares it.
        from imageclf.inference.torch_predictor import TorchPredictor
        from imageclf.modelfile.onnx import onnx_bytes

        data = onnx_bytes(TorchPredictor.load(path, device="cpu"))
    return _predictor(runtime, data, config, str(path), str(path), threads, variant)


@register_backend("torch")
def load_torch(source: str | Path, device: str = "auto", threads: int | None = None,
               images: int | None = None) -> Classifier:
    """A model folder on PyTorch; ``threads`` is ignored (``torch.set_num_threads`` governs it)."""
    return Classifier.load(source, device=device)


def check_measured_equal(source: str | Path, backend: str) -> None:
    """Refuse an int8 backend that ``imageclf export`` measured unequal to torch on the model's
    validation images (quantisation is lossy, and a runtime can get it badly wrong)."""
    measured = read_measurement(source) if Path(source).is_dir() else None
    entry = (measured or {}).get("backends", {}).get(backend)
    if isinstance(entry, dict) and not agrees(entry):
        torch_acc = measured["backends"].get("torch", {}).get("accuracy", float("nan"))
        raise ImageclfError(
            f"{source}: {backend} was measured unequal to torch on {measured.get('images')} validation "
            f"images at export (accuracy {entry.get('accuracy', float('nan')):.4f} against {torch_acc:.4f}, "
            f"out-of-distribution answers {entry.get('same_ood_answers', 1.0):.1%} the same); use --backend "
            "auto, which skips it, or another backend")


def _graph_loader(runtime: str, variant: str) -> Loader:
    def load(source: str | Path, device: str = "auto", threads: int | None = None,
             images: int | None = None) -> Classifier:
        """The graph on the CPU (``device`` is ignored); ``threads`` caps the runtime's threads."""
        if variant == "int8":
            check_measured_equal(source, f"{runtime}-int8")
        return Classifier(load_graph(source, runtime, variant, threads))
    return load


for _runtime in RUNTIMES:
    register_backend(_runtime)(_graph_loader(_runtime, "fp32"))
    register_backend(f"{_runtime}-int8")(_graph_loader(_runtime, "int8"))
load_onnx = BACKENDS["onnx"]
load_openvino = BACKENDS["openvino"]


@register_backend("auto")
def load_auto(source: str | Path, device: str = "auto", threads: int | None = None,
              images: int | None = None) -> Classifier:
    """The fastest backend measured equal to torch on the model's validation images
    (``RUN/backends.json``, written by ``imageclf export``) that is installed here, for a job of
    ``images`` when the caller knows it (start-up counted, :func:`~imageclf.inference.auto.pick`);
    torch without a measurement. A ``.onnx`` file runs on the first installed graph runtime."""
    path = Path(source)
    if path.is_file() and path.suffix.lower() == ".onnx":
        runtime = next((r for r in RUNTIMES if runtime_installed(r)), "onnx")
        return BACKENDS[runtime](source, device=device, threads=threads)
    name = choose_backend(path, [b for b in BACKENDS if b != "auto" and runtime_installed(b.split("-")[0])],
                          images)
    return BACKENDS[name](source, device=device, threads=threads)


def load_backend(source: str | Path, backend: str = "torch", device: str = "auto",
                 threads: int | None = None, images: int | None = None) -> Classifier:
    """Load a model folder (or, for a graph runtime, an exported ``.onnx`` file) on a backend.
    ``images``: how many this process is about to predict, when known (``auto`` weighs each
    runtime's start-up against its speed for them)."""
    try:
        loader = BACKENDS[backend]
    except KeyError:
        raise ConfigError(f"unknown backend {backend!r}; known: {', '.join(BACKENDS)}") from None
    return loader(source, device=device, threads=threads, images=images)
