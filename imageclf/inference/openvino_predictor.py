"""An exported graph on OpenVINO (the ``openvino`` extra), torch-free.

OpenVINO compiles the same ONNX graph for the CPU it runs on. Two settings matter (measured in
docs/performance.md, "Runtimes"): ``INFERENCE_PRECISION_HINT`` is pinned to ``f32``, since on a
CPU with AVX-512 BF16 or AMX OpenVINO would otherwise run the fp32 graph in bfloat16 and give
probabilities 1e-2 away from PyTorch's; and ``PERFORMANCE_HINT`` is ``LATENCY`` (one stream
using every thread for each batch: what a predict call, batch after batch, wants).
"""

from __future__ import annotations

import numpy as np

from imageclf.core.signalstack import keep_signal_stack
from imageclf.inference.graph_predictor import GraphPredictor
from imageclf.modelfile.config import ModelConfig

PERFORMANCE_HINT = "LATENCY"


def compile_graph(onnx_model: bytes, threads: int | None = None, hint: str = PERFORMANCE_HINT):
    """The graph compiled for the CPU: an ``openvino.CompiledModel``."""
    # Lazy: openvino is the optional extra 'imageclf[openvino]' (load_openvino says so when absent).
    import openvino as ov

    core = ov.Core()
    config = {"PERFORMANCE_HINT": hint, "INFERENCE_PRECISION_HINT": "f32"}
    if threads:
        config["INFERENCE_NUM_THREADS"] = int(threads)
    # Compiling leaves this thread an alternate signal stack that OpenVINO frees later: the next
    # Ctrl-C would land on freed memory (imageclf/core/signalstack.py).
    with keep_signal_stack():
        return core.compile_model(core.read_model(onnx_model), "CPU", config)


class OpenVinoPredictor(GraphPredictor):
    """An exported graph compiled by OpenVINO for the CPU."""

    backend = "openvino"

    def __init__(self, onnx_model: bytes, config: ModelConfig, source: str,
                 run_dir: str | None = None, threads: int | None = None, variant: str = "fp32") -> None:
        self.compiled = compile_graph(onnx_model, threads)
        with keep_signal_stack():
            self.request = self.compiled.create_infer_request()
        # An output answers to every tensor name the graph gives it ("probs" and internal ones).
        self._ports = {name: o for o in self.compiled.outputs for name in o.get_names()}
        super().__init__(config, source, run_dir, set(self._ports), variant)

    def infer(self, names: list[str], x: np.ndarray) -> list[np.ndarray]:
        with keep_signal_stack():
            results = self.request.infer({0: x})
        # Copies: the request reuses its output buffers on the next call.
        return [np.array(results[self._ports[n]]) for n in names]
