"""Predicting on ONNX Runtime and OpenVINO without importing torch; the runtimes' registry."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from imageclf.core.errors import ImageclfError
from imageclf.inference import backends
from imageclf.inference.backends import BACKENDS, load_backend
from imageclf.modelfile.onnx import export_onnx

pytest.importorskip("onnxruntime")
pytest.importorskip("openvino")


@pytest.fixture(scope="module")
def exported_run(trained_run, tmp_path_factory):
    """A copy of the tiny run with a current RUN/model.onnx."""
    run = tmp_path_factory.mktemp("exported") / "run"
    shutil.copytree(trained_run, run)
    export_onnx(load_backend(run, "torch", device="cpu"), run / "model.onnx")
    return run


def _python(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout


@pytest.mark.parametrize("backend", ["onnx", "openvino"])
def test_predicting_on_a_graph_runtime_never_imports_torch(exported_run, tiny_folders, backend):
    image = sorted((tiny_folders / "test").rglob("*.png"))[0]
    expected = load_backend(exported_run, "torch", device="cpu").predict([image])
    out = _python(
        "import sys\n"
        "from imageclf.inference.backends import load_backend\n"
        f"p = load_backend({str(exported_run)!r}, {backend!r}).predict([{str(image)!r}])\n"
        "print(p.labels[0], float(p.probs[0, 1]), float(p.ood_scores[0]), 'torch' in sys.modules)\n")
    label, p1, score, torch_loaded = out.split()
    assert torch_loaded == "False"
    assert label == expected.labels[0] and float(p1) == pytest.approx(float(expected.probs[0, 1]), abs=1e-4)
    assert float(score) == pytest.approx(float(expected.ood_scores[0]), rel=1e-3)


@pytest.mark.parametrize("backend", ["onnx", "openvino"])
def test_imageclf_predict_on_a_graph_runtime_never_imports_torch(exported_run, tiny_folders, backend):
    """The command's entry point, as the console script runs it; nor pydantic (which Typer 0.29
    imports to parse options: 0.12-0.15 s) nor OpenVINO's model-conversion tools (0.15-0.2 s)."""
    image = sorted((tiny_folders / "test").rglob("*.png"))[0]
    out = _python(
        "import sys\n"
        "from imageclf.cli import main\n"
        f"main(['predict', {str(exported_run)!r}, {str(image)!r}, '-q', '--backend', {backend!r}])\n"
        "print([m in sys.modules for m in ('torch', 'pydantic', 'openvino.tools.ovc')])\n")
    assert out.splitlines()[-1] == "[False, False, False]" and image.name in out


def test_a_stale_model_onnx_is_exported_again_in_memory(exported_run, tmp_path, tiny_folders):
    from imageclf.modelfile.artifact import update_config

    run = tmp_path / "run"
    shutil.copytree(exported_run, run)
    update_config(run, threshold=0.9)  # model.onnx now carries another config: not used
    model = load_backend(run, "openvino")
    assert model.threshold == 0.9
    images = sorted(str(p) for p in (tiny_folders / "test").rglob("*.png"))[:8]
    assert model.predict(images).labels == load_backend(run, "torch", device="cpu").predict(images).labels


def test_registry_holds_every_runtime_and_a_missing_one_says_what_to_install(trained_run, monkeypatch):
    assert {"torch", "onnx", "openvino", "onnx-int8", "openvino-int8", "auto"} <= set(BACKENDS)
    monkeypatch.setattr(backends, "runtime_installed", lambda runtime: runtime == "torch")
    for name, extra in (("openvino", "openvino"), ("onnx-int8", "onnx")):
        with pytest.raises(ImageclfError, match=rf"pip install 'imageclf\[{extra}\]'") as info:
            load_backend(trained_run, name)
        assert "\n" not in str(info.value)


def test_an_edited_weights_file_is_refused_without_torch(exported_run, tmp_path):
    from imageclf.core.errors import ModelFileError

    run = tmp_path / "run"
    shutil.copytree(exported_run, run)
    weights = run / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-4] + b"\0\0\0\0")
    with pytest.raises(ModelFileError, match="model.safetensors: does not match config.json"):
        load_backend(run, "onnx")
