"""Linear probe: the head fitted on features, its C chosen by CV, features cached by content."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from imageclf.data.images import Preprocessing
from imageclf.inference import embed
from imageclf.inference.embed import embed_arrays, head_layer
from imageclf.training import probe
from imageclf.training.probe import C_VALUES, cached_features, fit_linear_head, set_head


def _blobs(n: int, classes: int, dim: int = 16, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    centres = rng.normal(0, 3, (classes, dim))
    return (centres[y] + rng.normal(0, 1, (n, dim))).astype(np.float32), y


def test_two_class_head_is_one_logit_and_separates_the_classes():
    x, y = _blobs(120, 2)
    head = fit_linear_head(x, y, 2)
    assert head.weight.shape == (1, 16) and head.bias.shape == (1,)
    assert head.c in C_VALUES and head.cv_accuracy > 0.95
    pred = (x @ head.weight.numpy().T + head.bias.numpy())[:, 0] > 0
    assert (pred == y).mean() > 0.97


def test_many_class_head_and_weaker_regularisation_gives_larger_weights():
    x, y = _blobs(150, 3)
    head = fit_linear_head(x, y, 3)
    assert head.weight.shape == (3, 16)
    assert ((x @ head.weight.numpy().T + head.bias.numpy()).argmax(1) == y).mean() > 0.95
    t = torch.from_numpy
    strong = probe._fit_one(t(x.astype(np.float64)), t(y), torch.ones(150, dtype=torch.float64), 3, 0.01)
    weak = probe._fit_one(t(x.astype(np.float64)), t(y), torch.ones(150, dtype=torch.float64), 3, 10.0)
    assert strong[0].norm() < weak[0].norm()


def _tiny_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, 1))


def test_embeddings_are_what_the_head_sees_and_set_head_writes_it():
    net, pre = _tiny_net(), Preprocessing((8, 8), 1)
    images = np.random.default_rng(0).integers(0, 255, (5, 8, 8, 1), dtype=np.uint8)
    feats = embed_arrays(net, images, pre, device=torch.device("cpu"))
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    torch.testing.assert_close(torch.from_numpy(feats), net[:4](x))
    head = probe.LinearHead(torch.full((1, 4), 2.0), torch.tensor([-1.0]), 1.0, 1.0)
    set_head(net, head)
    assert torch.equal(head_layer(net).weight, head.weight) and float(head_layer(net).bias) == -1.0


def test_features_are_cached_by_content(tmp_path, monkeypatch):
    monkeypatch.setenv("IMAGECLF_CACHE", str(tmp_path))
    net, pre = _tiny_net(), Preprocessing((8, 8), 1)
    images = np.random.default_rng(1).integers(0, 255, (6, 8, 8, 1), dtype=np.uint8)
    first = cached_features(net, images, pre, device=torch.device("cpu"), tta=[], what="train")
    assert len(list((tmp_path / "features").glob("*.npy"))) == 1
    def recompute(*args, **kwargs):
        raise AssertionError("features computed again")

    monkeypatch.setattr(probe, "embed_arrays", recompute)
    assert np.array_equal(cached_features(net, images.copy(), pre, device=torch.device("cpu"), tta=[],
                                          what="train"), first)
    monkeypatch.setattr(probe, "embed_arrays", embed.embed_arrays)
    other = cached_features(net, images[::-1].copy(), pre, device=torch.device("cpu"), tta=[], what="train")
    assert np.allclose(other, first[::-1], atol=1e-6)
    assert len(list((tmp_path / "features").glob("*.npy"))) == 2
