import json
import shutil

import pytest

import imageclf
from imageclf.core.errors import ModelFileError
from imageclf.modelfile.artifact import CONFIG_FILE, MODEL_FILE, parse_config, read_config


@pytest.fixture
def run_copy(trained_run, tmp_path):
    dst = tmp_path / "run"
    shutil.copytree(trained_run, dst)
    return dst


def _edit(run, **changes):
    cfg = json.loads((run / CONFIG_FILE).read_text())
    cfg.update(changes)
    (run / CONFIG_FILE).write_text(json.dumps(cfg))


def test_round_trip(trained_run):
    cfg = read_config(trained_run)
    again = parse_config(cfg.to_dict())
    assert again == cfg


def test_model_file_has_no_pickle(trained_run):
    data = (trained_run / MODEL_FILE).read_bytes()
    header_len = int.from_bytes(data[:8], "little")
    assert json.loads(data[8:8 + header_len])  # a safetensors header, not a pickle stream
    assert b"\x80\x04\x95" not in data[:16]


@pytest.mark.parametrize("changes, message", [
    ({"classes": ["NORMAL"]}, "two or more distinct names"),
    ({"threshold": 2.0}, "not in \\[0, 1\\]"),
    ({"threshold": "high"}, "wrong type"),
    ({"format": "keras"}, "not an imageclf model"),
    ({"format_version": 99}, "upgrade imageclf"),
    ({"surprise": 1}, "unknown fields"),
    ({"preprocessing": {"size": [32, 32], "channels": 2}}, "bad 'preprocessing'"),
])
def test_edited_config_refused(run_copy, changes, message):
    _edit(run_copy, **changes)
    with pytest.raises(ModelFileError, match=message):
        imageclf.load(run_copy)


def test_missing_config(run_copy):
    (run_copy / CONFIG_FILE).unlink()
    with pytest.raises(ModelFileError, match="no config.json"):
        imageclf.load(run_copy)


def test_weights_from_elsewhere_refused(run_copy):
    (run_copy / MODEL_FILE).write_bytes((run_copy / MODEL_FILE).read_bytes()[:-4] + b"\0\0\0\0")
    with pytest.raises(ModelFileError, match="does not match config.json"):
        imageclf.load(run_copy)


def test_architecture_swap_refused(run_copy):
    _edit(run_copy, architecture="mnist_basic", weights_sha256="")
    with pytest.raises(ModelFileError, match="mnist_basic"):
        imageclf.load(run_copy)
