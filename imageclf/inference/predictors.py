"""The engines a :class:`~imageclf.inference.classifier.Classifier` can hold, each a
:class:`~imageclf.modelfile.predictor.Predictor`, under one name for importers that want them all.

:class:`TorchPredictor` (:mod:`imageclf.inference.torch_predictor`) runs a model folder's
network on any device; :class:`OnnxPredictor` (:mod:`imageclf.inference.onnx_predictor`) and
:class:`OpenVinoPredictor` (:mod:`imageclf.inference.openvino_predictor`) run the exported graph
on the CPU without torch (import them from their own modules to keep it that way).
:func:`~imageclf.inference.backends.load_backend` picks and loads one.
"""

from __future__ import annotations

from imageclf.inference.graph_predictor import GRAPH_BATCH, GraphPredictor
from imageclf.inference.onnx_predictor import OnnxPredictor
from imageclf.inference.openvino_predictor import OpenVinoPredictor
from imageclf.inference.torch_predictor import TorchPredictor

ONNX_BATCH = GRAPH_BATCH  # the name this module gave it before the split

__all__ = ["GRAPH_BATCH", "ONNX_BATCH", "GraphPredictor", "OnnxPredictor", "OpenVinoPredictor",
           "TorchPredictor"]
