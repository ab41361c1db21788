"""ONNX export: the trained network plus its decision rule, with the preprocessing in the metadata.

The exported graph takes what the PyTorch model takes: ``input``, float32 (N, C, H, W),
the image decoded and resized as the model's preprocessing says, scaled to [0, 1] and,
when the recipe has them, normalised per channel with ``mean`` / ``std``. It gives two
outputs: ``probs`` (N, K), class probabilities with the model's temperature and
test-time flips already applied (exactly what ``Classifier.predict_arrays`` returns),
and ``logits`` (N, 1 or K), the raw network output for the unflipped input; a model with
out-of-distribution statistics (:mod:`imageclf.modelfile.ood`) gives a third, ``ood`` (N,),
its score of each unflipped input, computed in the graph (past ``imageclf.ood_threshold``:
out of distribution). The batch axis is dynamic. Everything else a consumer needs (classes,
threshold, preprocessing,
the full model config) is in the file's ``metadata_props`` under ``imageclf.*`` keys.
"""

from __future__ import annotations

import copy
import io
import json
import warnings
from pathlib import Path

import torch
from torch import nn

from imageclf.core.errors import ImageclfError
from imageclf.core.io import atomic_write_bytes
from imageclf.modelfile.onnx_meta import (  # noqa: F401  (read_onnx_metadata: re-exported)
    INPUT_NAME,
    META_PREFIX,
    OOD_OUTPUT,
    OPSET,
    OUTPUT_NAMES,
    read_onnx_metadata,
)
from imageclf.modelfile.ood import ScoredNet, read_ood
from imageclf.modelfile.predictor import Predictor
from imageclf.models.heads import logits_to_probs

INPUT_DOC = ("float32 NCHW (batch, channels, height, width): pixels decoded and resized as "
             "imageclf.preprocessing says, divided by 255, then (x - mean) / std per channel "
             "when mean is not null")
OUTPUT_DOC = ("probs: (batch, classes) probabilities, temperature and test-time flips applied; "
              "logits: raw network output (one sigmoid logit for two classes); ood (when present): "
              "(batch,) out-of-distribution score, past imageclf.ood_threshold the input is unlike "
              "the training images")


class _Exported(nn.Module):
    """The network followed by temperature, sigmoid / softmax and the averaged TTA flips."""

    def __init__(self, model: nn.Module, tta: list[str], temperature: float,
                 scored: ScoredNet | None = None) -> None:
        super().__init__()
        self.model = model
        self.scored = scored
        # Flip dims of an NCHW tensor: width is 3, height is 2 (as data.transforms.tta_views).
        self.flips = [3 for t in tta if t == "hflip"] + [2 for t in tta if t == "vflip"]
        self.temperature = float(temperature)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if self.scored is not None:
            logits, ood = self.scored(x)
        else:
            logits, ood = self.model(x), None
        probs = logits_to_probs(logits, self.temperature)
        for dim in self.flips:
            probs = probs + logits_to_probs(self.model(x.flip(dim)), self.temperature)
        probs = probs / (1 + len(self.flips))
        return (probs, logits) if ood is None else (probs, logits, ood)


def onnx_metadata(model: Predictor) -> dict[str, str]:
    """The ``metadata_props`` written into an exported file (all values are strings)."""
    cfg = model.config
    return {
        f"{META_PREFIX}config": json.dumps(cfg.to_dict()),
        f"{META_PREFIX}classes": json.dumps(cfg.classes),
        f"{META_PREFIX}threshold": repr(float(cfg.threshold)),
        f"{META_PREFIX}temperature": repr(float(cfg.temperature)),
        f"{META_PREFIX}tta": json.dumps(list(cfg.tta)),
        f"{META_PREFIX}preprocessing": json.dumps(cfg.preprocessing.to_dict()),
        f"{META_PREFIX}input": INPUT_DOC,
        f"{META_PREFIX}outputs": OUTPUT_DOC,
        f"{META_PREFIX}weights_sha256": cfg.weights_sha256,
        **({f"{META_PREFIX}ood_threshold": repr(float(cfg.ood["threshold"]))} if cfg.ood else {}),
    }


def onnx_bytes(model: Predictor, opset: int = OPSET) -> bytes:
    """Serialise a loaded model to ONNX in memory (see the module docstring for the graph)."""
    import onnx

    pre = model.preprocessing
    net = copy.deepcopy(model.model).to("cpu").float().eval()
    stats = getattr(model, "ood", None)
    if stats is None and model.config.ood and Path(model.source or "-").is_dir():  # a predictor without them
        stats = read_ood(model.source, model.config.ood)
    scored = None if stats is None else ScoredNet(net, copy.deepcopy(stats)).to("cpu").eval()
    wrapper = _Exported(net, list(model.config.tta), model.config.temperature, scored).eval()
    outputs = [*OUTPUT_NAMES, *([OOD_OUTPUT] if scored is not None else [])]
    example = torch.zeros(1, pre.channels, *pre.size)
    buf = io.BytesIO()
    with warnings.catch_warnings():
        # The TorchScript exporter is deprecated in favour of the torch.export one, which needs
        # the extra onnxscript package; this graph (convolutions, pooling, dense) exports the
        # same either way.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(
            wrapper, (example,), buf, dynamo=False, opset_version=opset,
            input_names=[INPUT_NAME], output_names=outputs,
            dynamic_axes={INPUT_NAME: {0: "batch"}, **{n: {0: "batch"} for n in outputs}},
        )
    proto = onnx.load_from_string(buf.getvalue())
    proto.doc_string = f"imageclf {model.config.architecture}: input {INPUT_DOC}; {OUTPUT_DOC}"
    for key, value in onnx_metadata(model).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    return proto.SerializeToString()


def export_onnx(model: Predictor, path: str | Path, opset: int = OPSET) -> Path:
    """Write ``model`` as an ONNX file (atomically) and return its path.

    >>> export_onnx(imageclf.load("runs/xray"), "xray.onnx")   # doctest: +SKIP
    """
    try:
        data = onnx_bytes(model, opset)
    except ImportError as exc:
        raise ImageclfError(f"ONNX export needs the onnx package ({exc}); "
                            "pip install 'imageclf[onnx]'") from None
    path = Path(path)
    atomic_write_bytes(path, data)
    return path
