"""ONNX export and the onnx backend: same probabilities and logits as PyTorch, metadata, stale files,
errors."""

from __future__ import annotations

import copy
import dataclasses
import json
import shutil

import numpy as np
import pytest

from imageclf.core.errors import ConfigError, ImageclfError, ModelFileError
from imageclf.inference.backends import load_backend
from imageclf.inference.classifier import Classifier
from imageclf.inference.onnx_predictor import OnnxPredictor
from imageclf.inference.openvino_predictor import OpenVinoPredictor
from imageclf.modelfile.onnx import export_onnx, onnx_bytes

pytest.importorskip("onnxruntime")
pytest.importorskip("openvino")
GRAPH_PREDICTORS = [OnnxPredictor, OpenVinoPredictor]


@pytest.fixture(scope="module")
def torch_model(trained_run):
    return load_backend(trained_run, "torch", device="cpu")


@pytest.fixture(scope="module")
def test_images(torch_model, tiny_folders):
    """The tiny dataset's test split, decoded as the model expects (the parity inputs)."""
    paths = sorted((tiny_folders / "test").rglob("*.png"))
    return np.stack([torch_model.prepare(p) for p in paths])


def variant(model, **changes):
    """A copy of the model with config fields (or preprocessing fields) changed."""
    m = copy.deepcopy(model)
    pre_changes = {k: changes.pop(k) for k in ("mean", "std") if k in changes}
    if pre_changes:
        m.config.preprocessing = dataclasses.replace(m.config.preprocessing, **pre_changes)
    for key, value in changes.items():
        setattr(m.config, key, value)
    return m


@pytest.mark.parametrize("changes", [
    {},
    {"tta": ["hflip", "vflip"], "temperature": 1.7},
    {"mean": (0.3,), "std": (0.2,)},
], ids=["plain", "tta+temperature", "normalised"])
@pytest.mark.parametrize("runtime", GRAPH_PREDICTORS, ids=["onnx", "openvino"])
def test_graph_runtimes_give_pytorch_probabilities_to_1e4(torch_model, test_images, changes, runtime):
    model = variant(torch_model, **changes)
    onnx_model = runtime(onnx_bytes(model), model.config, "mem")
    expected = model.predict_arrays(test_images)
    got = onnx_model.predict_arrays(test_images, batch_size=7)  # uneven batches: dynamic axis
    assert got.shape == expected.shape == (len(test_images), 2)
    np.testing.assert_allclose(got, expected, atol=1e-4)
    if changes.get("tta"):
        # The flips really are in the graph: without them the answers differ.
        plain = torch_model.predict_arrays(test_images)
        assert np.abs(plain - expected).max() > 1e-3


def test_exported_file_carries_its_preprocessing_and_decision(torch_model, tmp_path):
    import onnx

    path = export_onnx(torch_model, tmp_path / "m.onnx")
    proto = onnx.load(str(path))
    meta = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(meta["imageclf.classes"]) == torch_model.classes
    assert float(meta["imageclf.threshold"]) == torch_model.threshold
    assert float(meta["imageclf.temperature"]) == torch_model.config.temperature
    assert json.loads(meta["imageclf.preprocessing"]) == torch_model.preprocessing.to_dict()
    assert "NCHW" in meta["imageclf.input"]
    assert [i.name for i in proto.graph.input] == ["input"]
    assert [o.name for o in proto.graph.output] == ["probs", "logits", "ood"]  # its OOD score, too
    assert float(meta["imageclf.ood_threshold"]) == torch_model.ood_threshold
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    loaded = load_backend(path, "onnx")
    assert loaded.classes == torch_model.classes and loaded.predictor.run_dir is None
    assert loaded.config.weights_sha256 == torch_model.config.weights_sha256


def test_run_folder_uses_its_model_onnx_only_while_it_is_current(trained_run, torch_model, tmp_path,
                                                                 test_images):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    # A model.onnx exported with another temperature is stale for this config.json.
    export_onnx(variant(torch_model, temperature=5.0), run / "model.onnx")
    fresh = load_backend(run, "onnx")
    np.testing.assert_allclose(fresh.predict_arrays(test_images),
                               torch_model.predict_arrays(test_images), atol=1e-4)
    export_onnx(torch_model, run / "model.onnx")
    current = load_backend(run, "onnx")
    assert current.predictor.session is not None and current.predictor.run_dir == str(run)
    np.testing.assert_allclose(current.predict_arrays(test_images[:3]),
                               torch_model.predict_arrays(test_images[:3]), atol=1e-4)


@pytest.mark.parametrize("backend", ["onnx", "openvino"])
def test_graph_model_predicts_files_like_the_torch_one(trained_run, torch_model, tiny_folders, backend):
    files = sorted(str(p) for p in (tiny_folders / "test").rglob("*.png"))[:6]
    a = torch_model.predict(files)
    b = load_backend(trained_run, backend).predict(files)
    assert a.labels == b.labels
    np.testing.assert_allclose(a.probs, b.probs, atol=1e-4)
    # The OOD score comes out of the graph, as torch computes it.
    np.testing.assert_allclose(a.ood_scores, b.ood_scores, rtol=1e-3)


def test_backend_errors(trained_run, tmp_path):
    with pytest.raises(ConfigError, match="unknown backend 'tensorrt'"):
        load_backend(trained_run, "tensorrt")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"this is not a protobuf")
    with pytest.raises(ModelFileError, match="bad.onnx"):
        load_backend(bad, "onnx")
    with pytest.raises(ModelFileError, match=r"no current model.int8.onnx.*imageclf export .* --int8"):
        load_backend(trained_run, "onnx-int8")


def test_what_needs_the_pytorch_network_says_to_load_with_torch(trained_run, tiny_folders):
    onnx_model = load_backend(trained_run, "onnx")
    assert onnx_model.backend == "onnx" and isinstance(onnx_model.predictor, OnnxPredictor)
    image = sorted((tiny_folders / "test").rglob("*.png"))[0]
    for use in (lambda: onnx_model.model, lambda: onnx_model.explain(image), onnx_model.summary,
                lambda: onnx_bytes(onnx_model)):
        with pytest.raises(ImageclfError, match="onnx backend .*load the model with backend='torch'") as info:
            use()
        assert "\n" not in str(info.value)
    # Its PyTorch twin, loaded from the folder it came from (once), has the network.
    twin = onnx_model.torch_predictor()
    assert twin.backend == "torch" and twin is onnx_model.torch_predictor()
    assert Classifier(twin).explain(image).heatmap.shape == (32, 32)


@pytest.mark.parametrize("runtime", GRAPH_PREDICTORS, ids=["onnx", "openvino"])
def test_graph_view_logits_are_the_pytorch_ones(torch_model, test_images, runtime):
    """What temperature scaling fits: the same views, in the same order, on either backend."""
    model = variant(torch_model, tta=["hflip", "vflip"])
    onnx_model = Classifier(runtime(onnx_bytes(model), model.config, "mem"))
    expected = model.view_logits(test_images, batch_size=9)
    assert expected.shape == (3, len(test_images), 1)
    np.testing.assert_allclose(onnx_model.view_logits(test_images, batch_size=7), expected, atol=1e-4)
