"""An ensemble is one ordinary model folder whose probabilities are the members' mean."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

import imageclf
from imageclf.cli import main
from imageclf.core.errors import ImageclfError
from imageclf.modelfile.ensemble import build_ensemble

FAST = dict(img_size=32, channels=1, epochs=1, steps_per_epoch="none", batch_size=32)


@pytest.fixture(scope="module")
def first_run(tmp_path_factory, tiny_folders):
    out = tmp_path_factory.mktemp("ens") / "first"
    imageclf.train(tiny_folders, "catsdogs-2conv", out, device="cpu", **FAST)
    return out


@pytest.fixture(scope="module")
def second_run(tmp_path_factory, tiny_folders):
    out = tmp_path_factory.mktemp("ens") / "second"
    imageclf.train(tiny_folders, "catsdogs-2conv", out, device="cpu", **{**FAST, "seed": 7})
    return out


def test_ensemble_averages_members(tmp_path, first_run, second_run, tiny_folders):
    out = build_ensemble([first_run, second_run], tmp_path / "ens")
    ens = imageclf.load(out, device="cpu")
    a, b = imageclf.load(first_run, device="cpu"), imageclf.load(second_run, device="cpu")
    images = sorted(str(p) for p in (tiny_folders / "test").rglob("*.png"))[:12]
    pa, pb, pe = (m.predict(images).probs for m in (a, b, ens))
    assert np.allclose(pe, (pa + pb) / 2, atol=1e-5)
    assert ens.config.architecture == "ensemble" and len(ens.config.members) == 2
    # Evaluate runs through the same path as any model.
    result = ens.evaluate(tiny_folders, split="test")
    assert 0.0 <= result.metrics["accuracy"] <= 1.0


def test_multiclass_ensemble_forward_is_log_mean_softmax():
    from imageclf.models import create_model

    torch.manual_seed(0)
    members = [{"architecture": "mnist_basic"}, {"architecture": "mnist_basic", "temperature": 2.0}]
    net = create_model("ensemble", 1, 4, (28, 28), members=members).eval()
    x = torch.rand(3, 1, 28, 28)
    with torch.no_grad():
        want = (torch.softmax(net.members[0](x), 1) + torch.softmax(net.members[1](x) / 2, 1)) / 2
        assert torch.allclose(torch.softmax(net(x), 1), want, atol=1e-5)


def test_refuses_mismatched_members(tmp_path, first_run, tiny_folders):
    other = tmp_path / "bigger"
    imageclf.train(tiny_folders, "catsdogs-2conv", other, device="cpu", **{**FAST, "img_size": 36})
    with pytest.raises(ImageclfError, match="preprocessing differs.*size"):
        build_ensemble([first_run, other], tmp_path / "e1")
    with pytest.raises(ImageclfError, match="at least two"):
        build_ensemble([first_run], tmp_path / "e2")


def test_refuses_a_member_whose_jpegs_were_decoded_otherwise(tmp_path, first_run, second_run):
    # A model file from before jpeg_draft says nothing of it: its JPEGs were drafted at twice the size.
    older = tmp_path / "older"
    shutil.copytree(second_run, older)
    config = json.loads((older / "config.json").read_text())
    del config["preprocessing"]["jpeg_draft"]
    (older / "config.json").write_text(json.dumps(config))
    with pytest.raises(ImageclfError, match="preprocessing differs.*jpeg_draft.*2 vs 1"):
        build_ensemble([first_run, older], tmp_path / "e3")
    with pytest.raises(ImageclfError, match="preprocessing differs.*jpeg_draft.*1 vs 2"):
        build_ensemble([older, first_run], tmp_path / "e4")


def test_cli_ensemble(tmp_path, first_run, second_run, capsys):
    out = tmp_path / "cli-ens"
    main(["ensemble", str(first_run), str(second_run), "--out", str(out)])
    printed = capsys.readouterr()
    assert str(out) in printed.out
    # Seeds 0 and 7 on split folders: one val split for both, so no warning about carves.
    assert "carved validation data differently" not in printed.out + printed.err
    assert imageclf.load(out).config.architecture == "ensemble"
    with pytest.raises(SystemExit) as exc:
        main(["ensemble", str(first_run), str(second_run), "--out", str(out)])
    assert exc.value.code == 2


def test_an_ensemble_explains_serves_and_exports_like_any_model(tmp_path, first_run, second_run,
                                                                  tiny_folders):
    import warnings

    from imageclf.inference.backends import load_onnx
    from imageclf.modelfile.onnx import export_onnx
    from imageclf.serve import create_app

    ens = imageclf.load(build_ensemble([first_run, second_run], tmp_path / "ens"), device="cpu")
    image = sorted(str(p) for p in (tiny_folders / "test").rglob("*.png"))[0]
    expected = ens.predict([image]).probs[0]

    explanation = ens.explain(image)
    assert explanation.heatmap.shape == (32, 32) and 0.0 <= explanation.heatmap.min() <= 1.0
    assert explanation.layer.startswith("members.1.")  # the last member's last convolution
    np.testing.assert_allclose(explanation.probs, expected, atol=1e-5)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from fastapi.testclient import TestClient
    with TestClient(create_app(ens)) as client, open(image, "rb") as f:
        r = client.post("/predict", files=[("file", ("x.png", f.read(), "image/png"))])
    assert r.status_code == 200
    served = r.json()["predictions"][0]["probabilities"]
    np.testing.assert_allclose([served[c] for c in ens.classes], expected, atol=1e-5)

    pytest.importorskip("onnxruntime")
    onnx_file = export_onnx(ens, tmp_path / "ens.onnx")
    np.testing.assert_allclose(load_onnx(onnx_file).predict([image]).probs[0], expected, atol=1e-4)


def test_members_validated_on_different_carves_are_flagged(tmp_path, tiny_folders, capsys):
    from imageclf.core.progress import Reporter
    from imageclf.data import synthetic as testing

    flat = testing.make_class_folders(tmp_path / "flat", n=24, size=32)
    runs = []
    for seed in (0, 1):
        runs.append(tmp_path / f"s{seed}")
        imageclf.train(flat, "catsdogs-2conv", runs[-1], device="cpu", **{**FAST, "seed": seed})
    build_ensemble(runs, tmp_path / "ens", reporter=Reporter())
    printed = capsys.readouterr()
    assert "carved validation data differently" in printed.out + printed.err
