"""int8 post-training quantisation of an exported graph (ONNX Runtime's static quantiser).

``quantize_graph`` takes the fp32 graph of :mod:`imageclf.modelfile.onnx` and calibration
inputs (the model's own validation images, as the graph's float32 NCHW ``input``) and gives
the QDQ graph: the network's layers with int8 weights (one scale per output channel) and
int8 activations (their ranges from the calibration images); the probabilities after it and
the out-of-distribution scoring stay float32 (distances are no place for 8 bits). The file
keeps the fp32 file's ``imageclf.*`` metadata and adds ``imageclf.quantization`` (how it was
made and, written by the caller, what it measured).
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from imageclf.core.errors import ImageclfError
from imageclf.modelfile.onnx_meta import INPUT_NAME, META_PREFIX

# The exported network's nodes ("/model/...", "/scored/model/...", a test-time flip's "/model_1/..."):
# all of them are quantised (pooling and ReLU too, so activations stay int8 from one convolution to
# the next: measured 1.3x the fp32 graph, against none for the convolutions alone); the wrapper's
# probabilities and the OOD scorer ("/scored/scorers.0/...") stay float32.
NETWORK_NODE = re.compile(r"(^|/)model(_\d+)?/")
QUANT_KEY = f"{META_PREFIX}quantization"
# Weights quantised to 7 bits (ONNX Runtime's reduce_range). On a CPU without VNNI (AVX2 only),
# ONNX Runtime multiplies uint8 by int8 with instructions that saturate 16-bit pair sums: there
# the full-range graph of xray-5block at 128 px gave probabilities 0.21 away from fp32, 94.1 %
# of its decisions and -0.006 ROC-AUC; the 7-bit one 0.03, 99.6 % and +0.0001, at 1.12x fp32's
# speed against 0.90x (524 validation images, 2-core AMD EPYC with AVX2). The file is made once
# and may run on either kind of CPU, so it is always 7-bit.
REDUCE_RANGE = True


def _modules():
    try:
        import onnx
        from onnxruntime import quantization
    except ImportError as exc:
        raise ImageclfError(f"int8 quantisation needs onnx and onnxruntime ({exc}); "
                            "pip install 'imageclf[onnx]'") from None
    return onnx, quantization


def network_nodes(proto: Any, fp32_tail: bool = False) -> list[str]:
    """The graph's nodes to quantise: the network's (see :data:`NETWORK_NODE`); with
    ``fp32_tail``, not those of :func:`tail_nodes`."""
    tail = tail_nodes(proto) if fp32_tail else set()
    return [n.name for n in proto.graph.node if NETWORK_NODE.search(n.name) and n.name not in tail]


def tail_nodes(proto: Any) -> set[str]:
    """Each copy of the network's nodes from its last convolution on (the graph lists them in
    order; a test-time flip's copy has its own): the layers that make the features the OOD
    score measures distances in, and little of the arithmetic.

    Kept in float32 where the whole network in int8 moves OOD answers: xray-5block at 128 px
    on an AVX-512 VNNI Xeon put 3 of 524 validation images (99.4 %) on the other side of the
    threshold, against 1 (99.8 %) with its last block and dense layers in float32, at 2.15x the
    fp32 graph's speed on OpenVINO instead of 2.2x (BENCHMARKS.md, Speed).
    """
    copies: dict[str, list[Any]] = {}
    for node in proto.graph.node:
        if (match := NETWORK_NODE.search(node.name)):
            copies.setdefault(node.name[:match.end()], []).append(node)
    tail: set[str] = set()
    for nodes in copies.values():
        convs = [i for i, node in enumerate(nodes) if node.op_type == "Conv"]
        if convs:
            tail.update(node.name for node in nodes[convs[-1]:])
    return tail


def can_keep_tail(fp32: bytes) -> bool:
    """Whether ``fp32`` has network layers left to quantise with its :func:`tail_nodes` in
    float32 (a network whose only convolution comes first has none)."""
    onnx, _ = _modules()
    return bool(network_nodes(onnx.load_from_string(fp32), fp32_tail=True))


@contextlib.contextmanager
def _quiet_logging() -> Iterator[None]:
    """ONNX Runtime's quantiser logs its advice as warnings on the root logger: kept out of the output."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def _reader(quantization, batches: list[np.ndarray]):
    class Reader(quantization.CalibrationDataReader):
        def __init__(self) -> None:
            self._it: Iterator[np.ndarray] = iter(batches)

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self._it, None)
            return None if batch is None else {INPUT_NAME: batch}

        def rewind(self) -> None:
            self._it = iter(batches)

    return Reader()


def quantize_graph(fp32: bytes, calibration: list[np.ndarray], per_channel: bool = True,
                   info: dict[str, Any] | None = None, fp32_tail: bool = False) -> bytes:
    """The int8 QDQ graph of ``fp32`` calibrated on ``calibration`` (float32 NCHW batches of
    the graph's input); ``info`` goes into its ``imageclf.quantization`` metadata; ``fp32_tail``:
    the network's layers from its last convolution on stay float32 (:func:`tail_nodes`)."""
    onnx, quantization = _modules()
    # Lazy: part of onnxruntime, the optional extra that _modules() checks for.
    from onnxruntime.quantization.shape_inference import quant_pre_process

    proto = onnx.load_from_string(fp32)
    with tempfile.TemporaryDirectory(prefix="imageclf-int8-") as tmp:
        src, pre, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "pre.onnx", Path(tmp) / "int8.onnx"
        src.write_bytes(fp32)
        # Shapes inferred and the graph folded first, as ONNX Runtime's quantiser asks.
        with _quiet_logging():
            quant_pre_process(str(src), str(pre))
        nodes = network_nodes(onnx.load(str(pre)), fp32_tail)
        if not nodes:
            raise ImageclfError("the graph has no network layers to quantise (not exported by imageclf?)")
        with _quiet_logging():
            quantization.quantize_static(
                str(pre), str(dst), _reader(quantization, calibration),
                quant_format=quantization.QuantFormat.QDQ, per_channel=per_channel,
                activation_type=quantization.QuantType.QUInt8, weight_type=quantization.QuantType.QInt8,
                nodes_to_quantize=nodes, calibrate_method=quantization.CalibrationMethod.MinMax,
                reduce_range=REDUCE_RANGE,
                extra_options={"ActivationSymmetric": False, "WeightSymmetric": True},
            )
        out = onnx.load(str(dst))
    meta = {p.key: p.value for p in proto.metadata_props}
    meta[QUANT_KEY] = json.dumps({
        "method": "onnxruntime.quantization.quantize_static", "format": "QDQ",
        "activations": "uint8", "weights": "int8", "reduce_range": REDUCE_RANGE,
        "per_channel": per_channel, "calibration": "MinMax", "fp32_tail": fp32_tail,
        "calibration_images": int(sum(len(b) for b in calibration)), "quantized_nodes": len(nodes),
        **(info or {}),
    })
    del out.metadata_props[:]
    for key, value in meta.items():
        entry = out.metadata_props.add()
        entry.key, entry.value = key, value
    return out.SerializeToString()


def with_quantization_info(int8: bytes, figures: dict[str, Any]) -> bytes:
    """``int8`` with ``figures`` (fp32 against int8 accuracy, ROC-AUC, speed) added to its
    ``imageclf.quantization`` metadata."""
    onnx, _ = _modules()
    proto = onnx.load_from_string(int8)
    for entry in proto.metadata_props:
        if entry.key == QUANT_KEY:
            entry.value = json.dumps({**json.loads(entry.value), **figures})
    return proto.SerializeToString()
