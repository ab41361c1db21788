"""OpenVINO's start-up: imported without its conversion tools, compiled graphs cached (issue 21:
a one-image prediction within 1 s)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("openvino")
onnx = pytest.importorskip("onnx")

from imageclf.inference import openvino_predictor  # noqa: E402


def _scaled_relu() -> bytes:
    """A small ONNX graph: relu(2 x) on a (N, 3) float input."""
    from onnx import TensorProto, helper

    two = helper.make_tensor("two", TensorProto.FLOAT, [1], [2.0])
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "two"], ["y"]), helper.make_node("Relu", ["y"], ["probs"])],
        "scaled_relu", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["n", 3])], initializer=[two])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def _run(graph: bytes, x: np.ndarray) -> np.ndarray:
    request = openvino_predictor.compile_graph(graph, threads=1).create_infer_request()
    return np.array(request.infer({0: x})[0])


def test_import_leaves_out_the_conversion_tools_and_lets_them_be_imported_later():
    code = textwrap.dedent("""
        import json, sys
        from imageclf.inference.openvino_predictor import CONVERSION_TOOLS, import_openvino
        ov = import_openvino()
        after = {"core": hasattr(ov, "Core"), "tools_loaded": CONVERSION_TOOLS in sys.modules}
        import openvino.tools.ovc  # the caller's own import still works
        after["tools_later"] = sys.modules[CONVERSION_TOOLS] is not None
        print(json.dumps(after))
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == {
        "core": True, "tools_loaded": False, "tools_later": True}


def test_compiled_graph_is_cached_and_gives_the_same_answers(tmp_path, monkeypatch):
    monkeypatch.setenv("IMAGECLF_CACHE", str(tmp_path / "cache"))
    graph, x = _scaled_relu(), np.array([[-1.0, 0.5, 2.0]], dtype=np.float32)
    first = _run(graph, x)
    blobs = list((tmp_path / "cache" / openvino_predictor.CACHE_FOLDER).iterdir())
    assert blobs, "compiling wrote no cache entry"
    np.testing.assert_array_equal(_run(graph, x), first)  # compiled from the cache
    np.testing.assert_allclose(first, [[0.0, 1.0, 4.0]])
    assert list((tmp_path / "cache" / openvino_predictor.CACHE_FOLDER).iterdir()) == blobs


def test_a_cache_that_cannot_be_made_compiles_without_one(tmp_path, monkeypatch):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder would go")
    monkeypatch.setenv("IMAGECLF_CACHE", str(blocker))
    assert openvino_predictor.model_cache_dir() is None
    out = _run(_scaled_relu(), np.array([[1.0, -1.0, 0.0]], dtype=np.float32))
    np.testing.assert_allclose(out, [[2.0, 0.0, 0.0]])
    assert Path(blocker).read_text().startswith("a file")
