"""The alternate signal stack around native code: put back as it was, even after an error."""

from __future__ import annotations

import ctypes
import sys

import pytest

from imageclf.core import signalstack
from imageclf.core.signalstack import keep_signal_stack, signal_stack

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="sigaltstack is Linux's")


def _install_a_stack(size: int = 1 << 16) -> ctypes.Array:
    """What OpenVINO does to the compiling thread: an alternate signal stack of its own."""
    memory = ctypes.create_string_buffer(size)
    stack = signalstack._StackT(ctypes.cast(memory, ctypes.c_void_p), 0, size)
    assert signalstack._LIBC.sigaltstack(ctypes.byref(stack), None) == 0
    return memory


def test_the_block_leaves_the_thread_the_stack_it_had():
    before = signal_stack()
    with keep_signal_stack():
        memory = _install_a_stack()
        assert signal_stack()[0] == ctypes.addressof(memory)
    assert signal_stack() == before
    with pytest.raises(RuntimeError), keep_signal_stack():
        memory = _install_a_stack()
        raise RuntimeError("the native call failed")
    assert signal_stack() == before


def test_compiling_and_running_an_openvino_model_leaves_the_stack_alone(trained_run, tmp_path):
    pytest.importorskip("openvino")
    import numpy as np

    from imageclf.inference.backends import load_backend
    from imageclf.inference.openvino_predictor import OpenVinoPredictor
    from imageclf.modelfile.onnx import onnx_bytes

    torch_model = load_backend(trained_run, "torch", device="cpu").predictor
    before = signal_stack()
    model = OpenVinoPredictor(onnx_bytes(torch_model), torch_model.config, str(trained_run))
    size = torch_model.preprocessing.size
    model.predict_arrays(np.zeros((2, *size, torch_model.preprocessing.channels), np.uint8))
    assert signal_stack() == before
