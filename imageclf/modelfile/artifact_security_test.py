"""Hostile and mismatched model folders: refused with one clear line, and never able to run code.

A model folder is ``model.safetensors`` + ``config.json``; loading reads only those two,
as safetensors and JSON. Each test crafts what a careless copy or an attacker would:
a pickle under the safetensors name, crafted safetensors headers, edited configs, weights
from another run, and a config that asks for a model of absurd size.
"""

from __future__ import annotations

import builtins
import json
import pickle
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch

import imageclf
from imageclf.cli.testing import exit_code
from imageclf.core.errors import ImageclfError, ModelFileError
from imageclf.core.io import file_sha256
from imageclf.data import synthetic as testing
from imageclf.modelfile.artifact import CONFIG_FILE, MODEL_FILE, build_model, read_config, save_model
from imageclf.modelfile.ood import OOD_FILE
from imageclf.training.checkpoint import CHECKPOINT_FILE


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return testing.make_class_folders(tmp_path_factory.mktemp("data") / "d", n=16, size=16)


@pytest.fixture(scope="module")
def good_run(tmp_path_factory, data) -> Path:
    out = tmp_path_factory.mktemp("runs") / "good"
    assert _cli(["train", data, "-o", out, "-r", "catsdogs-2conv", "--img-size", "16", "--channels", "1",
                 "--epochs", "1", "--batch-size", "8", "--set", "steps_per_epoch=null",
                 "--device", "cpu", "-q"]) == 0
    return out


_cli = exit_code


def copy_run(good_run: Path, where: Path) -> Path:
    run = where / "run"
    run.mkdir(parents=True)
    for name in (MODEL_FILE, CONFIG_FILE, CHECKPOINT_FILE, OOD_FILE):  # the OOD statistics belong too
        shutil.copy(good_run / name, run / name)
    return run


def edit_config(run: Path, edit) -> None:
    d = json.loads((run / CONFIG_FILE).read_text())
    edit(d)
    (run / CONFIG_FILE).write_text(json.dumps(d))


def rehash(run: Path) -> None:
    """What an attacker who controls both files does: make config.json's hash match the weights."""
    edit_config(run, lambda d: d.update(weights_sha256=file_sha256(run / MODEL_FILE)))


# --- code execution ------------------------------------------------------------------------

class Payload:
    """Unpickling this runs code: it creates ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (builtins.exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


def pickle_payloads(marker: Path, where: Path) -> dict[str, bytes]:
    torch_file = where / "torch_save.pt"
    torch.save({"state_dict": Payload(marker)}, torch_file)  # the zip format torch.load reads
    return {"pickle": pickle.dumps(Payload(marker)), "torch.save": torch_file.read_bytes()}


@pytest.mark.parametrize("kind", ["pickle", "torch.save"])
@pytest.mark.parametrize("hash_matches", [False, True], ids=["stale-hash", "matching-hash"])
def test_a_pickle_named_model_safetensors_cannot_run_code(good_run, data, tmp_path, kind, hash_matches,
                                                         capsys):
    marker = tmp_path / "pwned"
    run = copy_run(good_run, tmp_path)
    payload = pickle_payloads(marker, tmp_path)[kind]
    (run / MODEL_FILE).write_bytes(payload)
    (run / CHECKPOINT_FILE).write_bytes(payload)
    if hash_matches:
        rehash(run)
        why = "not a valid safetensors file"
    else:
        why = "does not match config.json"

    with pytest.raises(ModelFileError, match=why):
        imageclf.load(run, device="cpu")
    for argv in (["predict", run, data, "-q"], ["evaluate", run, data, "-q"]):
        assert _cli(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"error: {run / MODEL_FILE}: ") and why in err[0]
    with pytest.raises(ImageclfError, match="unreadable checkpoint"):
        imageclf.train(data, out=run, resume=True, device="cpu")
    assert not marker.exists(), "loading the model folder ran the payload"

    # The payload is live: what a pickle-based loader would have done with this folder.
    if kind == "pickle":
        pickle.loads(payload)
    else:
        torch.load(tmp_path / "torch_save.pt", weights_only=False)
    assert marker.read_text() == "pwned"


# --- crafted safetensors headers -----------------------------------------------------------

def _safetensors(header: dict | bytes, data: bytes = b"", length: int | None = None) -> bytes:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(raw) if length is None else length) + raw + data


CRAFTED_HEADERS = {
    "header-length-2**63": _safetensors({}, length=2**63),
    "header-length-past-the-end": _safetensors({"a": {}}, length=10_000),
    "header-not-json": _safetensors(b"{'this': is not json"),
    "header-a-list": _safetensors(b"[1, 2, 3]"),
    "header-nested-10k-deep": _safetensors(b"[" * 10_000 + b"]" * 10_000),
    "offsets-past-the-end": _safetensors(
        {"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 1 << 40]}}, b"\0" * 16),
    "shape-of-a-terabyte": _safetensors(
        {"w": {"dtype": "F32", "shape": [1 << 20, 1 << 20], "data_offsets": [0, 16]}}, b"\0" * 16),
    "overlapping-tensors": _safetensors(
        {"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
         "b": {"dtype": "F32", "shape": [4], "data_offsets": [8, 24]}}, b"\0" * 24),
    "unknown-dtype": _safetensors({"w": {"dtype": "PICKLE", "shape": [1], "data_offsets": [0, 4]}},
                                  b"\0" * 4),
    "metadata-not-strings": _safetensors({"__metadata__": {"format": {"exec": "os.system"}}}),
    "empty-file": b"",
}


@pytest.mark.parametrize("name", list(CRAFTED_HEADERS))
def test_crafted_safetensors_headers_are_refused(good_run, tmp_path, name):
    run = copy_run(good_run, tmp_path)
    (run / MODEL_FILE).write_bytes(CRAFTED_HEADERS[name])
    rehash(run)
    with pytest.raises(ModelFileError, match=f"{MODEL_FILE}: not a valid safetensors file"):
        imageclf.load(run, device="cpu")


# --- edited and mismatched configs ---------------------------------------------------------

def _set(key, value):
    return lambda d: d.update({key: value})


def _set_pre(key, value):
    return lambda d: d["preprocessing"].update({key: value})


CONFIG_EDITS = {
    "unknown-field": (_set("run_this", "rm -rf /"), "unknown fields ['run_this']"),
    "missing-field": (lambda d: d.pop("architecture"), "missing field 'architecture'"),
    "classes-a-string": (_set("classes", "NORMAL,PNEUMONIA"), "field 'classes' has the wrong type (str)"),
    "threshold-a-string": (_set("threshold", "0.5"), "field 'threshold' has the wrong type (str)"),
    "threshold-a-bool": (_set("threshold", True), "field 'threshold' has the wrong type (bool)"),
    "preprocessing-a-list": (_set("preprocessing", [32, 32]), "field 'preprocessing' has the wrong type"),
    "size-not-numbers": (_set_pre("size", "big"), "bad 'preprocessing'"),
    "threshold-out-of-range": (_set("threshold", 7), "threshold 7 is not in [0, 1]"),
    "not-an-imageclf-model": (_set("format", "pickle"), "not an imageclf model"),
    "from-the-future": (_set("format_version", 99), "format version 99 is newer"),
    "swapped-architecture": (_set("architecture", "mnist_basic"),
                             "architecture 'mnist_basic' does not match model.safetensors"),
    "unknown-architecture": (_set("architecture", "os.system"), "architecture 'os.system' does not match"),
    "classes-swapped": (_set("classes", ["PNEUMONIA", "NORMAL"]),
                        "classes ['PNEUMONIA', 'NORMAL'] does not match model.safetensors, trained with "
                        "['NORMAL', 'PNEUMONIA']"),
    "class-added": (_set("classes", ["NORMAL", "PNEUMONIA", "COVID"]), "classes"),
    "classes-with-escape-codes": (_set("classes", ["NORMAL", "\x1b]0;owned\x07"]), "printable"),
    "channels-edited": (_set_pre("channels", 3), "channels 3 does not match"),
    "size-edited": (_set_pre("size", [32, 32]), "size [32, 32] does not match"),
    "jpeg-draft-edited": (_set_pre("jpeg_draft", 2), "jpeg_draft 2 does not match"),
    "jpeg-scales-edited": (_set_pre("jpeg_scales", "halves"), "jpeg_scales 'halves' does not match"),
    "input-of-a-gigapixel": (_set_pre("size", [40_000, 40_000]), "over 16384 pixels per side"),
    "tta-not-a-flip": (_set("tta", ["__import__('os')"]), "'tta' may only list hflip, vflip"),
}


@pytest.mark.parametrize("name", list(CONFIG_EDITS))
def test_edited_configs_are_refused_with_the_reason(good_run, tmp_path, name):
    edit, reason = CONFIG_EDITS[name]
    run = copy_run(good_run, tmp_path)
    edit_config(run, edit)
    with pytest.raises(ModelFileError, match=None) as err:
        imageclf.load(run, device="cpu")
    assert str(err.value).startswith(str(run / CONFIG_FILE)) and reason in str(err.value), str(err.value)


def test_max_pixels_stays_editable(good_run, tmp_path):
    # A safety limit on input files, not part of the model: raising it is the user's call.
    run = copy_run(good_run, tmp_path)
    edit_config(run, _set_pre("max_pixels", 400_000_000))
    assert imageclf.load(run, device="cpu").preprocessing.max_pixels == 400_000_000


@pytest.mark.parametrize("text, reason", [
    ("{", "not valid JSON"),
    ("[" * 100_000 + "]" * 100_000, "not valid JSON"),
    ('{"threshold": 1' + "0" * 5000 + "}", "not valid JSON"),
    ("\udcff", "not valid JSON"),
    ("[]", "must be a JSON object"),
])
def test_config_that_is_not_a_json_object(good_run, tmp_path, text, reason):
    run = copy_run(good_run, tmp_path)
    (run / CONFIG_FILE).write_bytes(text.encode("utf-8", "surrogateescape"))
    with pytest.raises(ModelFileError, match=reason):
        imageclf.load(run, device="cpu")


def test_weights_from_another_run_are_refused(good_run, tmp_path):
    other = tmp_path / "other"
    config = read_config(good_run)
    model = build_model(config)
    torch.nn.init.normal_(next(model.parameters()))
    save_model(other, model, config)
    run = copy_run(good_run, tmp_path)
    shutil.copy(other / MODEL_FILE, run / MODEL_FILE)
    with pytest.raises(ModelFileError, match=f"{MODEL_FILE}: does not match {CONFIG_FILE}"):
        imageclf.load(run, device="cpu")


def _consistent_forgery(good_run: Path, tmp_path: Path, edit) -> Path:
    """An edited config with weights whose header agrees with it: every cheap check passes."""
    run = copy_run(good_run, tmp_path)
    edit_config(run, edit)
    config = json.loads((run / CONFIG_FILE).read_text())
    with safetensors.safe_open(run / MODEL_FILE, "pt") as f:
        header = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    trained_for = json.loads(header["trained_for"])
    trained_for.update(architecture_kwargs=config["architecture_kwargs"],
                       size=config["preprocessing"]["size"])
    header["trained_for"] = json.dumps(trained_for)
    safetensors.torch.save_file(tensors, run / MODEL_FILE, metadata=header)
    rehash(run)
    return run


def test_a_config_asking_for_a_huge_model_is_refused_before_it_is_built(good_run, tmp_path):
    # 16,000 px input: catsdogs-2conv's dense layer alone would take ~0.5 TB. The architecture is built
    # on the meta device (no memory) and its shapes compared with the file before any real build.
    run = _consistent_forgery(good_run, tmp_path, _set_pre("size", [16_000, 16_000]))
    with pytest.raises(ModelFileError, match="the architecture needs"):
        imageclf.load(run, device="cpu")


def test_architecture_arguments_the_builder_does_not_take_are_refused(good_run, tmp_path):
    run = _consistent_forgery(good_run, tmp_path, _set("architecture_kwargs", {"shell": "rm -rf /"}))
    with pytest.raises(ModelFileError, match="architecture 'catsdogs_2conv' cannot be built from it"):
        imageclf.load(run, device="cpu")


@pytest.mark.parametrize("name", ["unknown-field", "classes-swapped", "swapped-architecture"])
def test_predict_and_evaluate_exit_2_with_one_line(good_run, data, tmp_path, capsys, name):
    run = copy_run(good_run, tmp_path)
    edit_config(run, CONFIG_EDITS[name][0])
    for argv in (["predict", run, data, "-q"], ["evaluate", run, data, "-q"]):
        assert _cli(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"error: {run / CONFIG_FILE}: ")
        assert CONFIG_EDITS[name][1] in err[0]


def test_the_untouched_folder_loads(good_run):
    # The control: every refusal above comes from the edit, not from the folder.
    assert imageclf.load(good_run, device="cpu").classes == ["NORMAL", "PNEUMONIA"]


# --- data integrity: what the model file says about its data -------------------------------

def test_the_model_records_its_data(good_run, data):
    config = read_config(good_run)
    assert config.data["classes"] == ["NORMAL", "PNEUMONIA"] and len(config.data["sha256"]) == 64
    assert config.data["split_sizes"] == {"all": 16}
    hashes = np.load(good_run / "train_hashes.npy", allow_pickle=False)
    assert len(hashes) == json.loads((good_run / "metrics.json").read_text())["train_images"]


def test_evaluate_warns_when_evaluation_images_are_training_images(good_run, data, tmp_path, capsys):
    report = tmp_path / "eval.json"
    assert _cli(["evaluate", good_run, data, "-q", "--json", report]) == 0
    train_images = json.loads((good_run / "metrics.json").read_text())["train_images"]
    err = capsys.readouterr().err
    assert f"warning: {train_images} of 16 evaluation images are identical to training images" in err
    assert json.loads(report.read_text())["train_overlap"] == train_images


def test_evaluate_is_quiet_on_disjoint_data(good_run, tmp_path, capsys):
    fresh = testing.make_class_folders(tmp_path / "fresh", n=16, size=16, seed=99)
    report = tmp_path / "eval.json"
    assert _cli(["evaluate", good_run, fresh, "-q", "--json", report]) == 0
    assert "identical to training images" not in capsys.readouterr().err
    assert json.loads(report.read_text())["train_overlap"] == 0


def test_a_damaged_training_hash_file_does_not_break_evaluate(good_run, data, tmp_path, capsys):
    run = copy_run(good_run, tmp_path)
    (run / "train_hashes.npy").write_bytes(b"\x93NUMPY garbage")
    assert _cli(["evaluate", run, data, "-q"]) == 0
    assert "identical to training images" not in capsys.readouterr().err
