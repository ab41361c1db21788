import pytest
import torch

from imageclf.core.errors import ConfigError
from imageclf.models import create_model, num_params
from imageclf.models.seed_cnns import SequentialCNN


def test_xray_5block_matches_the_article_parameter_count():
    assert num_params(create_model("xray_5block", 1, 1, (500, 500))) == 1_467_137


def test_mnist_basic_matches_keras_parameter_count():
    assert num_params(create_model("mnist_basic", 1, 10, (28, 28))) == 203_434


def test_xray_5block_minimum_input_is_94():
    # 94 -> conv 92 -> pool 46 -> 44 -> 22 -> 20 -> 10 -> 8 -> 4 -> 2 -> pool 1. At 78 the fifth
    # conv leaves 1 x 1 and Keras' 2 x 2 'valid' pooling of it is empty, so 78 does not fit.
    model = create_model("xray_5block", 1, 1, (94, 94))
    assert model(torch.zeros(2, 1, 94, 94)).shape == (2, 1)
    for size in (78, 93):
        with pytest.raises(ConfigError, match="at least 94 x 94"):
            create_model("xray_5block", 1, 1, (size, size))


@pytest.mark.parametrize("name", ["xray_alexnet", "xray_4block", "xray_5block", "catsdogs_2conv",
                                  "mnist_basic"])
def test_seed_models_use_keras_initialisers(name):
    model: SequentialCNN = create_model(name, 1, 1, (256, 256) if name == "xray_alexnet" else (96, 96))
    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d | torch.nn.Linear):
            assert torch.count_nonzero(m.bias) == 0
            fan_in = m.weight[0].numel()
            fan_out = m.weight.shape[0] * m.weight[0, 0].numel()
            bound = (6 / (fan_in + fan_out)) ** 0.5
            assert float(m.weight.detach().abs().max()) <= bound + 1e-6
