"""The two engines a :class:`~imageclf.inference.classifier.Classifier` can hold, each a
:class:`~imageclf.modelfile.predictor.Predictor`: PyTorch and ONNX Runtime.

:class:`TorchPredictor` runs a model folder's network on any device through the one forward
path (:mod:`imageclf.inference.forward`); :class:`OnnxPredictor` runs a graph exported by
:mod:`imageclf.modelfile.onnx` on the CPU. They take the same uint8 images and give the same
probabilities (to 1e-4); only the PyTorch one has the network that Grad-CAM, the layer summary
and export need. :func:`~imageclf.inference.backends.load_backend` picks and loads one.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from imageclf.core.errors import ImageclfError
from imageclf.data.images import Preprocessing
from imageclf.data.transforms import batch_input, tta_views
from imageclf.inference.forward import (
    auto_batch_size,
    optimize_for_inference,
    optimize_mode,
    predict_probs,
    predict_scored,
    resolve_device,
    view_logits,
)
from imageclf.modelfile.artifact import ModelConfig, build_model, check_weights, load_weights, read_config
from imageclf.modelfile.onnx import INPUT_NAME, OOD_OUTPUT
from imageclf.modelfile.ood import OodStats, ScoredNet, check_fits, feature_heads, read_ood

ONNX_BATCH = 128  # images per session run when the caller leaves it to the backend


class _FromConfig:
    """What both predictors answer from the model file's config."""

    def __init__(self, config: ModelConfig, source: str) -> None:
        self.config = config
        self.source = source

    @property
    def classes(self) -> list[str]:
        return self.config.classes

    @property
    def preprocessing(self) -> Preprocessing:
        return self.config.preprocessing

    @property
    def threshold(self) -> float:
        return self.config.threshold

    @property
    def ood_threshold(self) -> float | None:
        """The OOD score past which an input is out of distribution (None: the model has no score)."""
        return float(self.config.ood["threshold"]) if self.config.ood else None


class TorchPredictor(_FromConfig):
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


class OnnxPredictor(_FromConfig):
    """An exported graph run by an ONNX Runtime session on the CPU.

    ``run_dir`` is the model folder it came from (``None`` for a bare ``.onnx`` file): what
    needs the PyTorch network (the server's Grad-CAM) loads it from there.
    """

    backend = "onnx"
    device = torch.device("cpu")

    def __init__(self, onnx_model: bytes, config: ModelConfig, source: str,
                 run_dir: str | None = None, threads: int | None = None) -> None:
        super().__init__(config, source)
        # Lazy: onnxruntime is the optional extra 'imageclf[onnx]' (load_onnx says so when absent).
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(onnx_model, options, providers=["CPUExecutionProvider"])
        self.run_dir = run_dir
        self.has_ood = OOD_OUTPUT in {o.name for o in self.session.get_outputs()}
        self.optimize = "auto"  # the protocol's PyTorch setting: ONNX Runtime optimises its session itself
        self._torch: TorchPredictor | None = None
        pre = config.preprocessing
        self._mean = None if pre.mean is None else np.asarray(pre.mean, np.float32).reshape(1, -1, 1, 1)
        self._std = None if pre.std is None else np.asarray(pre.std, np.float32).reshape(1, -1, 1, 1)

    @property
    def ood_threshold(self) -> float | None:
        return super().ood_threshold if self.has_ood else None

    @property
    def model(self) -> nn.Module:
        raise ImageclfError(f"{self.source}: the onnx backend (ONNX Runtime) has no PyTorch network, which "
                            "explain, summary and export need; load the model with backend='torch'")

    def to_input(self, images: np.ndarray) -> np.ndarray:
        """(N, H, W, C) uint8 -> the graph's normalised float32 NCHW input (as transforms.to_model_input)."""
        x = np.ascontiguousarray(images.transpose(0, 3, 1, 2), dtype=np.float32) / np.float32(255.0)
        if self._mean is not None:
            x = (x - self._mean) / self._std
        return x

    def _run(self, output: str, images: np.ndarray, batch_size: int | None,
             on_batch: Callable[[int], None] | None = None) -> list[np.ndarray]:
        """The graph's ``output`` for ``images``, one array per batch."""
        out = []
        batch_size = batch_size or ONNX_BATCH
        for start in range(0, len(images), batch_size):
            batch = np.asarray(images[start:start + batch_size])
            out.append(self.session.run([output], {INPUT_NAME: self.to_input(batch)})[0])
            if on_batch:
                on_batch(len(batch))
        return out

    def predict_arrays(self, images: np.ndarray, batch_size: int | None = None,
                       on_batch: Callable[[int], None] | None = None) -> np.ndarray:
        """Probabilities (N, K) for preprocessed (N, H, W, C) uint8 images (the graph's ``probs``:
        temperature and test-time flips are in it)."""
        out = self._run("probs", images, batch_size, on_batch)
        if not out:
            return np.zeros((0, len(self.classes)), np.float32)
        return np.concatenate(out).astype(np.float32, copy=False)

    def predict_scored(self, images: np.ndarray, batch_size: int | None = None,
                       on_batch: Callable[[int], None] | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        """Probabilities and the graph's ``ood`` scores from one session run per batch (None: a
        graph exported without them)."""
        if not self.has_ood:
            return self.predict_arrays(images, batch_size, on_batch), None
        probs, scores = [], []
        batch_size = batch_size or ONNX_BATCH
        for start in range(0, len(images), batch_size):
            batch = np.asarray(images[start:start + batch_size])
            p, s = self.session.run(["probs", OOD_OUTPUT], {INPUT_NAME: self.to_input(batch)})
            probs.append(p)
            scores.append(s)
            if on_batch:
                on_batch(len(batch))
        if not probs:
            return np.zeros((0, len(self.classes)), np.float32), np.zeros(0, np.float32)
        return np.concatenate(probs).astype(np.float32, copy=False), np.concatenate(scores).astype(np.float32)

    def view_logits(self, images: np.ndarray, batch_size: int | None = None) -> np.ndarray:
        """Raw logits (views, N, outputs) of the test-time views, the plain image first: the
        graph's ``logits`` (those of its unflipped input) for each view fed to it."""
        x = torch.from_numpy(np.array(images))  # a copy: torch warns on a read-only disk cache
        # The views as uint8 NHWC images: tta_views flips NCHW dims 3 and 2, width and height.
        views = [v.permute(0, 2, 3, 1).numpy() for v in tta_views(x.permute(0, 3, 1, 2), self.config.tta)]
        return np.stack([np.concatenate(self._run("logits", v, batch_size)) for v in views])

    def torch_predictor(self) -> TorchPredictor:
        if self._torch is None:
            if not self.run_dir:
                raise ImageclfError(f"{self.source}: a bare .onnx file has no PyTorch network; load (or "
                                    "serve) the model folder it was exported from")
            self._torch = TorchPredictor.load(self.run_dir, device="cpu")
        return self._torch
