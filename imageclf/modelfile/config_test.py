"""The torch-free config parser, the OOD field names and the ONNX metadata reader."""

from __future__ import annotations

import subprocess
import sys

import pytest

from imageclf.core.errors import ModelFileError
from imageclf.modelfile import artifact, ood, ood_field
from imageclf.modelfile.config import parse_config, read_config
from imageclf.modelfile.onnx_meta import metadata_props, read_onnx_metadata


def test_config_modules_import_without_torch():
    code = ("import sys; import imageclf.modelfile.config, imageclf.modelfile.onnx_meta, "
            "imageclf.modelfile.inputs, imageclf.data.arrays; print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_artifact_reexports_the_same_config_names():
    assert artifact.read_config is read_config and artifact.parse_config is parse_config
    assert artifact.ModelConfig is parse_config.__globals__["ModelConfig"]


def test_the_ood_field_check_refuses_what_config_field_does_not_write():
    good = {"method": "mahalanobis+knn", "threshold": 1.5, "sha256": "ab", "members": [
        {"parts": [{"source": "features", "method": "knn", "scale": 2.0, "pool": 1}]}]}
    bad = [{**good, "threshold": float("nan")}, {**good, "method": "knn+knn"}, {**good, "members": []},
           {**good, "members": [{"parts": [{"source": "features", "method": "knn", "pool": 0}]}]},
           {**good, "threshold": True}, {**good, "file": "../x"}]
    ood_field.check_ood_field(good, "c.json")
    ood_field.check_ood_field({}, "c.json")
    for d in bad:
        with pytest.raises(ModelFileError, match="malformed 'ood'"):
            ood_field.check_ood_field(d, "c.json")
    # The torch module names the same check (one rule, written once).
    assert ood.check_ood_field is ood_field.check_ood_field


def test_metadata_reader_gives_what_onnx_reads(trained_run, tmp_path):
    onnx = pytest.importorskip("onnx")
    from imageclf.inference.backends import load_backend
    from imageclf.modelfile.onnx import export_onnx

    path = export_onnx(load_backend(trained_run, "torch", device="cpu"), tmp_path / "m.onnx")
    data = path.read_bytes()
    expected = {p.key: p.value for p in onnx.load_from_string(data).metadata_props}
    assert metadata_props(data) == expected and len(expected) >= 9
    meta = read_onnx_metadata(data, "m.onnx")
    assert parse_config(__import__("json").loads(meta["config"])).classes == ["NORMAL", "PNEUMONIA"]
    for broken in (data[: len(data) // 2], b"\xff" * 12):
        with pytest.raises(ModelFileError, match="m.onnx: not a valid ONNX file"):
            read_onnx_metadata(broken, "m.onnx")
    no_meta = onnx.load_from_string(data)
    del no_meta.metadata_props[:]
    with pytest.raises(ModelFileError, match="not exported by imageclf"):
        read_onnx_metadata(no_meta.SerializeToString(), "m.onnx")
