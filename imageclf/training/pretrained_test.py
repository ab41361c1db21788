"""--pretrained: weights files the tests write themselves; nothing is downloaded."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

import imageclf
from imageclf.core.errors import ConfigError
from imageclf.models import create_model
from imageclf.training.pretrained import adapt_channels, load_pretrained, read_state_dict


def _rgb_resnet(tmp_path, fmt: str = "safetensors", wrap: bool = False):
    """An RGB 10-class network saved as a torchvision-style state_dict."""
    torch.manual_seed(1)
    src = create_model("xray_resnet18", 3, 10, (32, 32))
    state = {k: v.contiguous() for k, v in src.state_dict().items()}
    path = tmp_path / f"weights.{fmt}"
    if fmt == "safetensors":
        save_file(state, str(path))
    else:
        torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}} if wrap else state, path)
    return src, path


@pytest.mark.parametrize("fmt,wrap", [("safetensors", False), ("pth", False), ("pt", True)])
def test_rgb_weights_start_a_gray_model(tmp_path, fmt, wrap):
    src, path = _rgb_resnet(tmp_path, fmt, wrap)
    torch.manual_seed(2)
    model = create_model("xray_resnet18", 1, 1, (32, 32))
    head_before = model.fc.weight.clone()
    report = load_pretrained(model, path)
    sd, ssd = model.state_dict(), src.state_dict()
    assert torch.equal(sd["layer3.1.conv2.weight"], ssd["layer3.1.conv2.weight"])
    assert torch.equal(sd["bn1.running_var"], ssd["bn1.running_var"])
    # The gray kernel is the sum of the RGB kernels ...
    assert torch.allclose(sd["conv1.weight"], ssd["conv1.weight"].sum(1, keepdim=True), atol=1e-6)
    assert report.adapted == ["conv1.weight"]
    # ... so a gray image gives the RGB network's response to that image copied into R, G, B.
    gray = torch.rand(2, 1, 32, 32)
    assert torch.allclose(model.conv1(gray), src.conv1(gray.repeat(1, 3, 1, 1)), atol=1e-5)
    # The 10-class head does not fit one logit: kept as initialised, and said so.
    assert torch.equal(model.fc.weight, head_before)
    assert "fc.weight" in report.kept and "kept at initialisation" in report.summary()


def test_one_channel_to_rgb_spreads_the_kernel():
    w = torch.randn(4, 1, 3, 3)
    out = adapt_channels(w, 3)
    assert out.shape == (4, 3, 3, 3)
    assert torch.allclose(out.sum(1, keepdim=True), w, atol=1e-6)


def test_refuses_a_file_for_another_architecture(tmp_path):
    path = tmp_path / "other.safetensors"
    save_file({"encoder.weight": torch.zeros(3, 3)}, str(path))
    with pytest.raises(ConfigError, match="fit this model"):
        load_pretrained(create_model("resnet_compact", 1, 1, (32, 32)), path)


def test_refuses_pickled_code_and_missing_files(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "hook": ConfigError("x")}, path)
    with pytest.raises(ConfigError, match="read safely"):
        read_state_dict(path)
    with pytest.raises(ConfigError, match="not found"):
        read_state_dict(tmp_path / "nope.safetensors")


def test_train_starts_from_pretrained_weights(tmp_path, tiny_npz):
    torch.manual_seed(3)
    src = create_model("resnet_compact", 3, 10, (32, 32), widths=[8, 16], blocks=[1, 1])
    path = tmp_path / "compact.safetensors"
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(path))
    model = imageclf.train(tiny_npz, "xray-fast", tmp_path / "run", device="cpu", epochs=1,
                           batch_size=32, pretrained=str(path),
                           model_kwargs={"widths": [8, 16], "blocks": [1, 1]}, lr=1e-9, ema=None,
                           weight_decay=0.0)
    # With a vanishing learning rate the trained stage-2 conv is still the file's.
    got = model.model.state_dict()["stages.1.0.conv2.weight"].cpu()
    assert torch.allclose(got, src.state_dict()["stages.1.0.conv2.weight"], atol=1e-6)
    assert model.config.recipe["pretrained"] == str(path)


def test_cli_flag_reports_a_missing_file(tmp_path, tiny_npz, capsys):
    from imageclf.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["train", str(tiny_npz), "--recipe", "xray-fast", "--out", str(tmp_path / "r"),
              "--pretrained", str(tmp_path / "missing.safetensors"), "-q"])
    assert exc.value.code == 2
    assert "missing.safetensors: pretrained weights file not found" in capsys.readouterr().err
