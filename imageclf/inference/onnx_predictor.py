"""An exported graph on ONNX Runtime (the ``onnx`` extra), torch-free.

The session is tuned for a CPU (measured in docs/performance.md, "Runtimes"): every graph
optimisation (``ORT_ENABLE_ALL``: constant folding, conv + activation fusion, layout
changes), ``threads`` intra-op threads (default: the physical cores), one inter-op thread and
sequential execution (the graph is one chain: parallel branches would only compete for the
same cores), and idle threads that sleep instead of spinning, as ``OMP_WAIT_POLICY=PASSIVE``
does for torch (on a shared machine a spinning thread steals the core the working one needs).
"""

from __future__ import annotations

import numpy as np

from imageclf.inference.graph_predictor import GraphPredictor
from imageclf.modelfile.config import ModelConfig
from imageclf.modelfile.onnx_meta import INPUT_NAME


def session_options(threads: int | None = None):
    """The ``onnxruntime.SessionOptions`` a predictor's session is built with."""
    # Lazy: onnxruntime is the optional extra 'imageclf[onnx]' (load_onnx says so when absent).
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


class OnnxPredictor(GraphPredictor):
    """An exported graph run by an ONNX Runtime session on the CPU."""

    backend = "onnx"

    def __init__(self, onnx_model: bytes, config: ModelConfig, source: str,
                 run_dir: str | None = None, threads: int | None = None, variant: str = "fp32") -> None:
        # Lazy: onnxruntime is the optional extra 'imageclf[onnx]' (load_onnx says so when absent).
        import onnxruntime as ort

        self.session = ort.InferenceSession(onnx_model, session_options(threads),
                                            providers=["CPUExecutionProvider"])
        super().__init__(config, source, run_dir, {o.name for o in self.session.get_outputs()}, variant)

    def infer(self, names: list[str], x: np.ndarray) -> list[np.ndarray]:
        return self.session.run(names, {INPUT_NAME: x})
