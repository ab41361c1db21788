"""``imageclf export``'s int8 graph and backend measurement, and ``--backend auto`` reading it."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from imageclf.core.errors import ConfigError, DataError, ImageclfError
from imageclf.inference import auto, backends
from imageclf.inference.auto import BACKENDS_FILE, choose_backend, config_digest
from imageclf.inference.backends import load_backend
from imageclf.inference.measure import export_run
from imageclf.modelfile.config import read_config
from imageclf.modelfile.onnx_meta import INT8_FILE, read_onnx_metadata

pytest.importorskip("onnxruntime")
pytest.importorskip("openvino")


@pytest.fixture(scope="module")
def measured_run(trained_run, tmp_path_factory):
    """A copy of the tiny run, exported with --int8 and measured (its recorded data is here)."""
    run = tmp_path_factory.mktemp("measured") / "run"
    shutil.copytree(trained_run, run)
    out = export_run(run, int8=True)
    return run, out


def test_int8_file_carries_its_figures_and_the_model_config(measured_run, tiny_folders):
    run, out = measured_run
    meta = read_onnx_metadata((run / INT8_FILE).read_bytes(), INT8_FILE)
    quant = json.loads(meta["quantization"])
    assert quant["format"] == "QDQ" and quant["per_channel"] and quant["calibration_images"] == 64
    figures = quant["figures"]
    assert figures == json.loads(json.dumps(out["int8"]))
    assert set(figures["fp32"]) == set(figures["int8"]) == {"accuracy", "auc", "img_per_s"}
    assert json.loads(meta["config"]) == json.loads(json.dumps(read_config(run).to_dict()))
    # The figures are what evaluating the int8 backend on the same (validation) images gives.
    result = load_backend(run, "onnx-int8").evaluate(tiny_folders, split="val")
    assert result.metrics["accuracy"] == pytest.approx(figures["int8"]["accuracy"])
    # Small drift only: a 2-conv network on 64 images keeps its decisions nearly all.
    assert figures["same_decisions"] >= 0.9 and abs(figures["auc_change"]) < 0.05


@pytest.mark.parametrize("backend", ["onnx-int8", "openvino-int8"])
def test_int8_backends_run_the_quantised_graph(measured_run, tiny_folders, backend):
    run, _ = measured_run
    images = sorted(str(p) for p in (tiny_folders / "test").rglob("*.png"))[:16]
    model = load_backend(run, backend)
    assert model.predictor.variant == "int8" and model.backend == backend
    fp32, int8 = load_backend(run, "torch", device="cpu").predict(images), model.predict(images)
    diff = np.abs(int8.probs - fp32.probs).max()
    assert 0 < diff < 0.1  # quantised: close, not equal
    assert int8.ood_scores is not None  # the OOD scorer stays in the graph (in float32)


def test_backends_json_measures_every_installed_backend(measured_run):
    run, out = measured_run
    d = json.loads((run / BACKENDS_FILE).read_text())
    assert set(d["backends"]) == {"torch", "onnx", "openvino", "onnx-int8", "openvino-int8"}
    assert d["config_sha256"] == config_digest(read_config(run)) and d["images"] == 64
    for name in ("onnx", "openvino"):
        e = d["backends"][name]
        assert e["max_abs_diff"] < 1e-4 and e["same_decisions"] == 1.0 and e["agrees"]
    assert all(e["img_per_s"] > 0 for e in d["backends"].values())
    assert all(e["load_s"] > 0 for name, e in d["backends"].items() if name != "torch")
    assert d["auto"] == choose_backend(run, list(d["backends"]))


def test_int8_export_refuses_to_overwrite_without_force(measured_run):
    run, _ = measured_run
    before = (run / INT8_FILE).read_bytes()
    with pytest.raises(ConfigError, match="model.int8.onnx: already exists; use --force"):
        export_run(run, int8=True, measure=False)
    assert (run / INT8_FILE).read_bytes() == before


def test_without_its_data_int8_asks_for_calibration_data(trained_run, tiny_folders, tmp_path):
    from imageclf.modelfile.artifact import update_config

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    config = read_config(run)
    update_config(run, data={**config.data, "source": str(tmp_path / "moved")})
    with pytest.raises(DataError, match="--calibration DATA"):
        export_run(run, int8=True)
    assert not (run / INT8_FILE).exists()
    out = export_run(run, measure=False)  # plain export needs no data
    assert out["onnx"] == run / "model.onnx" and out["backends"] is None
    out = export_run(run, int8=True, calibration=tiny_folders, measure=False)
    assert out["int8"]["images"] == 64 and (run / INT8_FILE).is_file()


def _write_measurement(run, backends_: dict, digest: str | None = None) -> None:
    d = {"config_sha256": digest or config_digest(read_config(run)), "backends": backends_}
    (run / BACKENDS_FILE).write_text(json.dumps(d))


def test_auto_picks_the_fastest_equal_installed_backend(trained_run, tmp_path, monkeypatch):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    installed = ["torch", "onnx", "openvino", "onnx-int8"]
    assert choose_backend(run, installed) == "torch"  # nothing measured
    fp32 = {"variant": "fp32", "max_abs_diff": 1e-6, "same_decisions": 1.0}
    _write_measurement(run, {
        "torch": {"img_per_s": 100.0},
        "onnx": {**fp32, "img_per_s": 500.0},
        "openvino": {**fp32, "img_per_s": 900.0, "same_decisions": 0.99},  # a decision changed
        "onnx-int8": {"variant": "int8", "img_per_s": 800.0, "accuracy_drop": 0.01, "auc_drop": 0.0},
        "openvino-int8": {"variant": "int8", "img_per_s": 2000.0, "accuracy_drop": 0.0, "auc_drop": 0.0},
    })
    assert choose_backend(run, installed) == "onnx"  # openvino-int8 is fastest but not installed
    assert choose_backend(run, [*installed, "openvino-int8"]) == "openvino-int8"
    assert choose_backend(run, ["torch", "openvino"]) == "torch"
    # torch must beat the best equal graph backend by TORCH_MARGIN, which spares torch's import.
    _write_measurement(run, {"torch": {"img_per_s": 110.0}, "onnx": {**fp32, "img_per_s": 100.0}})
    assert choose_backend(run, installed) == "onnx"
    _write_measurement(run, {"torch": {"img_per_s": 100.0 * auto.TORCH_MARGIN + 1},
                             "onnx": {**fp32, "img_per_s": 100.0}})
    assert choose_backend(run, installed) == "torch"
    _write_measurement(run, {"onnx": {**fp32, "img_per_s": 500.0}}, digest="0" * 64)  # another config
    assert choose_backend(run, installed) == "torch"
    (run / BACKENDS_FILE).write_text("{not json")
    assert choose_backend(run, installed) == "torch"
    # load_backend(RUN, "auto") follows the choice, among the backends installed here.
    _write_measurement(run, {"torch": {"img_per_s": 1.0}, "openvino": {**fp32, "img_per_s": 9.0}})
    assert load_backend(run, "auto").backend == "openvino"
    monkeypatch.setattr(backends, "runtime_installed", lambda r: r in ("torch", "onnx"))
    assert load_backend(run, "auto").backend == "torch"
    assert auto.agrees({"variant": "int8", "accuracy_drop": -0.02, "auc_drop": 0.005})  # int8 better: fine


def test_auto_for_a_known_number_of_images_counts_each_runtimes_start_up(trained_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    fp32 = {"variant": "fp32", "max_abs_diff": 1e-6, "same_decisions": 1.0}
    _write_measurement(run, {"torch": {"img_per_s": 100.0},
                             "onnx": {**fp32, "img_per_s": 1000.0, "load_s": 0.07},
                             "openvino": {**fp32, "img_per_s": 2000.0, "load_s": 0.3}})
    installed = ["torch", "onnx", "openvino"]
    # 0.07 + n / 1000 against 0.3 + n / 2000: ONNX Runtime up to 460 images, OpenVINO beyond.
    assert [choose_backend(run, installed, n) for n in (1, 400, 500)] == ["onnx", "onnx", "openvino"]
    assert choose_backend(run, installed) == "openvino"  # a job of unknown size: the fastest
    assert load_backend(run, "auto", images=1).backend == "onnx"
    assert load_backend(run, "auto").backend == "openvino"


def test_evaluate_on_a_backend_says_the_change_against_torch(measured_run, tiny_folders):
    from imageclf.inference.measure import evaluate_backend

    run, _ = measured_run
    result, line = evaluate_backend(run, "onnx-int8", tiny_folders, split="test", device="cpu")
    torch_result, none = evaluate_backend(run, "torch", tiny_folders, split="test", device="cpu")
    assert none is None and result.metrics["n"] == torch_result.metrics["n"] == 64
    acc = (result.metrics["accuracy"] - torch_result.metrics["accuracy"]) * 100
    assert line.startswith("onnx-int8 against torch (fp32) on these 64 images: accuracy ")
    assert f"({acc:+.2f} pt)" in line and "ROC-AUC" in line and "as fast" in line


def test_the_evaluate_command_prints_the_change_on_its_backend(measured_run, tiny_folders, capsys):
    from imageclf.cli.testing import exit_code

    run, _ = measured_run
    assert exit_code(["evaluate", run, tiny_folders, "--split", "test", "--device", "cpu", "-q",
                      "--backend", "onnx"]) == 0
    out = capsys.readouterr().out
    assert "accuracy" in out and "onnx against torch (fp32) on these 64 images" in out
    assert exit_code(["evaluate", run, tiny_folders, "--backend", "tflite"]) == 2
    assert "unknown backend 'tflite'" in capsys.readouterr().err


def test_an_int8_backend_measured_unequal_is_refused_and_skipped(trained_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    fp32 = {"variant": "fp32", "max_abs_diff": 1e-6, "same_decisions": 1.0}
    broken = {"variant": "int8", "img_per_s": 9000.0, "accuracy": 0.2, "accuracy_drop": 0.7, "auc_drop": 0.3,
              "same_ood_answers": 0.1}
    _write_measurement(run, {"torch": {"img_per_s": 100.0, "accuracy": 0.9},
                             "onnx": {**fp32, "img_per_s": 500.0}, "openvino-int8": broken})
    assert choose_backend(run, ["torch", "onnx", "openvino-int8"]) == "onnx"
    with pytest.raises(ImageclfError, match="openvino-int8 was measured unequal to torch .*accuracy 0.2000 "
                                            "against 0.9000"):
        load_backend(run, "openvino-int8")
    # Probabilities alone are not enough: out-of-distribution answers must agree too.
    assert not auto.agrees({**fp32, "same_ood_answers": 0.9})
    assert auto.agrees({**fp32, "same_ood_answers": 0.999})


def test_exporting_again_measures_a_backend_the_last_export_found_unequal(measured_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(measured_run[0], run)
    d = json.loads((run / BACKENDS_FILE).read_text())
    d["backends"]["openvino-int8"].update(accuracy_drop=0.5, agrees=False)  # as if it had failed
    (run / BACKENDS_FILE).write_text(json.dumps(d))
    with pytest.raises(ImageclfError, match="measured unequal"):
        load_backend(run, "openvino-int8")
    out = export_run(run, int8=True, force=True)  # the measurement itself never refuses
    assert out["backends"]["backends"]["openvino-int8"]["accuracy_drop"] < 0.5
    assert load_backend(run, "openvino-int8").backend == "openvino-int8"


def _int8_quantization(run) -> dict:
    return json.loads(read_onnx_metadata((run / INT8_FILE).read_bytes(), INT8_FILE)["quantization"])


def test_the_tail_from_the_last_convolution_on_stays_float32(measured_run):
    from onnx import load

    from imageclf.modelfile.quantize import network_nodes, tail_nodes

    proto = load(str(measured_run[0] / "model.onnx"))
    network = network_nodes(proto)
    tail = tail_nodes(proto)
    convs = [n for n in network if n.endswith("/Conv")]
    assert len(convs) >= 2 and convs[-1] in tail and convs[0] not in tail
    assert {n for n in network if "/classifier" in n} <= tail  # the dense layers come after it
    assert set(network_nodes(proto, fp32_tail=True)) == set(network) - tail


@pytest.fixture
def int8_agreement(monkeypatch):
    """Makes measure_backends count an int8 backend equal only for the graph kind ``equal_for``
    names ("tail": only with its tail in float32; "none": never)."""
    from imageclf.inference import measure

    real = measure.agrees
    chosen = {}

    def agrees(entry, *args, **kwargs):
        if entry.get("variant") != "int8":
            return real(entry, *args, **kwargs)
        return chosen["equal_for"] == "tail" and _int8_quantization(chosen["run"])["fp32_tail"]

    monkeypatch.setattr(measure, "agrees", agrees)
    return chosen


def test_an_unequal_int8_graph_is_made_again_with_its_tail_in_float32(trained_run, tmp_path, int8_agreement):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    int8_agreement.update(run=run, equal_for="tail")
    out = export_run(run, int8=True)
    quant = _int8_quantization(run)
    assert quant["fp32_tail"] and out["int8"] == json.loads(json.dumps(quant["figures"]))
    measured = json.loads((run / BACKENDS_FILE).read_text())
    assert measured == json.loads(json.dumps(out["backends"]))
    assert all(measured["backends"][b]["agrees"] for b in ("onnx-int8", "openvino-int8"))


def test_the_first_int8_graph_stays_when_the_second_is_no_better(trained_run, tmp_path, int8_agreement):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    int8_agreement.update(run=run, equal_for="none")
    out = export_run(run, int8=True)
    assert not _int8_quantization(run)["fp32_tail"]  # the first graph, written back
    measured = json.loads((run / BACKENDS_FILE).read_text())
    assert measured == json.loads(json.dumps(out["backends"]))
    assert not measured["backends"]["openvino-int8"]["agrees"]
