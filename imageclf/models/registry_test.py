"""One test over the whole model registry (as timm does): build, forward, backward, shape."""

from __future__ import annotations

import pytest
import torch

from imageclf.core.errors import ConfigError
from imageclf.models import create_model, list_models, model_entry

# The ensemble is built from members; give it two small ones.
KWARGS = {"ensemble": {"members": [{"architecture": "resnet_compact",
                                    "architecture_kwargs": {"widths": [8, 16], "blocks": [1, 1]}},
                                   {"architecture": "mnist_basic"}]}}


def _build(name: str, channels: int, outputs: int):
    """The model at 32 px, or the smallest of 64 / 128 / 256 px a seed network accepts."""
    for size in (32, 64, 128, 256):
        try:
            return create_model(name, channels, outputs, (size, size), **KWARGS.get(name, {})), size
        except ConfigError:
            if model_entry(name).family != "seed":
                raise
    raise AssertionError(f"{name} builds at no size up to 256 px")


@pytest.mark.parametrize("name", list_models())
def test_every_model_trains_one_step(name):
    torch.manual_seed(0)
    channels = 3 if name == "catsdogs_2conv" else 1
    outputs = 1 if name.startswith("xray") else 3
    model, size = _build(name, channels, outputs)
    model.train()
    x = torch.rand(2, channels, size, size)
    logits = model(x)
    assert logits.shape == (2, outputs)
    assert torch.isfinite(logits).all()
    (logits.float() - 1).pow(2).mean().backward()  # a target away from 0: zero-initialised heads
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
    # Some parameter moves the output: the graph is connected end to end.
    assert any(g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("name", ["xray_resnet18", "resnet_compact", "xray_convnext",
                                  "xray_efficientnet_b0", "wrn_16_4"])
def test_small_input_stems_keep_a_feature_map(name):
    # A 28 px image must not shrink to nothing before the head (the point of the adapted stems).
    model = create_model(name, 1, 10, (28, 28)).eval()
    with torch.no_grad():
        assert model(torch.rand(1, 1, 28, 28)).shape == (1, 10)


def test_resnet18_keeps_torchvision_names():
    from torchvision.models import resnet18

    ours = create_model("xray_resnet18", 1, 1, (64, 64)).state_dict()
    theirs = resnet18().state_dict()
    assert set(ours) == set(theirs)
    assert ours["conv1.weight"].shape == (64, 1, 3, 3)  # 3x3 stem, one channel
    assert ours["fc.weight"].shape == (1, 512)


def test_resnet_stem_follows_input_size():
    big = create_model("xray_resnet18", 1, 1, (224, 224))
    assert big.conv1.kernel_size == (7, 7) and isinstance(big.maxpool, torch.nn.MaxPool2d)
    small = create_model("xray_resnet18", 1, 1, (64, 64))
    assert small.conv1.stride == (1, 1) and isinstance(small.maxpool, torch.nn.Identity)
    with pytest.raises(ConfigError, match="stem"):
        create_model("xray_resnet18", 1, 1, (64, 64), stem="huge")


def test_wide_resnet_rejects_a_bad_depth():
    with pytest.raises(ConfigError, match="6n \\+ 4"):
        create_model("wide_resnet", 1, 10, (28, 28), depth=15)
