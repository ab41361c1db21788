"""The fast paths of inference and training keep the numbers: pool/ReLU order, frozen graphs, batching."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import imageclf
from imageclf.data.images import Preprocessing
from imageclf.inference.forward import (
    auto_batch_size,
    optimize_for_inference,
    optimize_mode,
    pool_before_relu,
)
from imageclf.models import create_model


def _grads(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model.zero_grad()
    out = model(x)
    (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
    return out.detach(), {k: p.grad.clone() for k, p in model.named_parameters()}


@pytest.mark.parametrize("name,size", [("xray_5block", 96), ("catsdogs_2conv", 32), ("xray_alexnet", 128)])
def test_pool_before_relu_keeps_outputs_gradients_and_names(name, size):
    torch.manual_seed(0)
    model = create_model(name, 1, 1, (size, size)).eval()  # eval: no dropout draws to differ
    x = torch.rand(4, 1, size, size)
    x[0] = 0.0  # a flat image: ties inside every pooling window
    ref_out, ref_grads = _grads(model, x)
    names = list(model.state_dict())
    swapped = pool_before_relu(model)
    kinds = [type(m).__name__ for m in swapped.features]
    assert "MaxPool2d" in kinds and kinds.index("MaxPool2d") < kinds.index("ReLU")
    out, grads = _grads(swapped, x)
    assert list(swapped.state_dict()) == names
    assert torch.equal(out, ref_out)
    for k in grads:
        assert torch.equal(grads[k], ref_grads[k]), k


def test_frozen_graph_gives_the_eager_probabilities():
    torch.manual_seed(0)
    model = create_model("xray_5block", 1, 1, (96, 96)).eval().to(memory_format=torch.channels_last)
    x = torch.rand(8, 1, 96, 96).contiguous(memory_format=torch.channels_last)
    fast = optimize_for_inference(model, x, "freeze")
    assert fast is not model
    with torch.inference_mode():
        for batch in (x, x[:3]):
            assert torch.allclose(fast(batch), model(batch), rtol=0, atol=1e-5)


def test_data_dependent_control_flow_survives_or_falls_back_to_eager():
    class DataDependent(nn.Module):
        def forward(self, x):
            if x.sum() > 0:  # a trace would bake this branch in; scripting keeps it
                return x.flatten(1)[:, :2]
            return x.flatten(1)[:, :1]

    model = DataDependent()
    x = torch.rand(4, 1, 8, 8)
    fast = optimize_for_inference(model, x, "freeze")
    with torch.inference_mode():
        assert torch.equal(fast(-x), model(-x))


def test_auto_mode_and_batch_size():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert optimize_mode("auto", cpu, 10) == "none" and optimize_mode("auto", cpu, 5000) == "freeze"
    assert optimize_mode("auto", cuda, 5000) == "none" and optimize_mode("none", cpu, 5000) == "none"
    with pytest.raises(ValueError):
        optimize_mode("fast", cpu, 1)
    assert auto_batch_size(Preprocessing((128, 128), 1), cpu) == 16
    assert auto_batch_size(Preprocessing((28, 28), 1), cpu) == 128
    assert auto_batch_size(Preprocessing((500, 500), 1), cpu) == 8
    assert auto_batch_size(Preprocessing((128, 128), 1), cuda) == 128


def test_streamed_and_frozen_prediction_equal_the_plain_path(trained_run, tiny_folders):
    model = imageclf.load(trained_run, device="cpu")
    files = sorted(str(p) for p in (tiny_folders / "test").rglob("*.png"))
    model.optimize = "none"
    plain = model.predict(files, batch_size=7)  # streamed in batches of 7, the last one short
    arrays = np.stack([model.prepare(f) for f in files])
    assert np.allclose(plain.probs, model.predict_arrays(arrays, batch_size=len(files)), atol=1e-6)
    model.optimize = "freeze"
    frozen = model.predict(files, batch_size=7)
    assert frozen.paths == plain.paths
    assert np.allclose(frozen.probs, plain.probs, rtol=0, atol=1e-5)
