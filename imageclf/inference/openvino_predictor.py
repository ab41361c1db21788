"""An exported graph on OpenVINO (the ``openvino`` extra), torch-free.

OpenVINO compiles the same ONNX graph for the CPU it runs on. Two settings matter (measured in
docs/performance.md, "Runtimes"): ``INFERENCE_PRECISION_HINT`` is pinned to ``f32``, since on a
CPU with AVX-512 BF16 or AMX OpenVINO would otherwise run the fp32 graph in bfloat16 and give
probabilities 1e-2 away from PyTorch's; and ``PERFORMANCE_HINT`` is ``LATENCY`` (one stream
using every thread for each batch: what a predict call, batch after batch, wants).

A person waiting on ``imageclf predict RUN one.png --backend openvino`` pays OpenVINO's import
and its compile; both are cut where they do work this module never uses (:func:`import_openvino`,
:data:`CACHE_FOLDER`).
"""

from __future__ import annotations

import os
import sys

import numpy as np

from imageclf.core.io import cache_root
from imageclf.core.signalstack import keep_signal_stack
from imageclf.inference.graph_predictor import GraphPredictor
from imageclf.modelfile.config import ModelConfig

PERFORMANCE_HINT = "LATENCY"
# OpenVINO's model cache (its CACHE_DIR), under imageclf's cache folder: a graph compiled once
# for this CPU and these settings is read back next time, keyed by OpenVINO on the graph's own
# hash. A one-image prediction's compile went from 0.12 to 0.05 s (fp32) and from 0.22 to
# 0.06 s (int8), xray-5block at 128 px, 2-core EPYC; a blob is about the weights' size.
CACHE_FOLDER = "openvino"
# Imported by ``import openvino`` for its convert_model (PyTorch / TensorFlow to OpenVINO), which
# a graph read from ONNX never needs; its import starts OpenVINO's telemetry and looks up
# installed packages: 0.15-0.2 s of the 0.25 s ``import openvino`` took (numpy already loaded).
CONVERSION_TOOLS = "openvino.tools.ovc"


def import_openvino():
    """The ``openvino`` module, imported without its model-conversion tools.

    openvino imports them in a ``try`` that passes over an ImportError; a None in
    ``sys.modules`` is one. The None is removed straight after, so a later ``import
    openvino.tools.ovc`` of the caller's own imports them as usual. (Before openvino itself is
    imported its tools cannot have been: they are its subpackage.)"""
    if "openvino" in sys.modules:
        return sys.modules["openvino"]
    sys.modules[CONVERSION_TOOLS] = None
    try:
        # Lazy: openvino is the optional extra 'imageclf[openvino]' (load_openvino says so when absent).
        import openvino
    finally:
        del sys.modules[CONVERSION_TOOLS]
    return openvino


def model_cache_dir() -> str | None:
    """The folder for OpenVINO's compiled graphs, made if need be; None where it cannot be
    (a read-only home): then each process compiles afresh, as without a cache."""
    folder = cache_root() / CACHE_FOLDER
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    return str(folder) if os.access(folder, os.W_OK | os.X_OK) else None


def compile_graph(onnx_model: bytes, threads: int | None = None, hint: str = PERFORMANCE_HINT):
    """The graph compiled for the CPU: an ``openvino.CompiledModel``."""
    ov = import_openvino()
    core = ov.Core()
    config = {"PERFORMANCE_HINT": hint, "INFERENCE_PRECISION_HINT": "f32"}
    if threads:
        config["INFERENCE_NUM_THREADS"] = int(threads)
    cache = model_cache_dir()
    # Compiling leaves this thread an alternate signal stack that OpenVINO frees later: the next
    # Ctrl-C would land on freed memory (imageclf/core/signalstack.py).
    with keep_signal_stack():
        model = core.read_model(onnx_model)
        if cache is not None:
            try:
                return core.compile_model(model, "CPU", {**config, "CACHE_DIR": cache})
            except RuntimeError:
                pass  # a cache OpenVINO cannot use (full disk, a damaged blob): compile without it
        return core.compile_model(model, "CPU", config)


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
