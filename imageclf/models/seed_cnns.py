"""The five seed articles' Keras Sequential CNNs, layer for layer, with Keras' initialisers.

Keras semantics kept: 'valid' convolutions unless a layer says 'same', pooling that
floors, Glorot-uniform weights and zero biases (Keras' defaults, which the seeds'
optimiser settings were tuned with), one sigmoid logit for two classes.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from imageclf.core.errors import ConfigError
from imageclf.models.registry import register_model


@dataclass(frozen=True)
class Conv:
    filters: int
    kernel: int = 3
    stride: int = 1
    same: bool = False


@dataclass(frozen=True)
class Pool:
    size: int = 2
    stride: int | None = None


@dataclass(frozen=True)
class Dense:
    units: int
    dropout: float = 0.0


def _out(size: int, kernel: int, stride: int, pad: int) -> int:
    return (size + 2 * pad - kernel) // stride + 1


def feature_size(layers: tuple, size: int) -> int:
    """Spatial size after the conv / pool layers (<= 0 when the input is too small)."""
    for layer in layers:
        if size <= 0:
            return size
        if isinstance(layer, Conv):
            size = size if layer.same and layer.stride == 1 else _out(
                size, layer.kernel, layer.stride, layer.kernel // 2 if layer.same else 0)
        else:
            size = _out(size, layer.size, layer.stride or layer.size, 0)
    return size


def min_input_size(layers: tuple) -> int:
    size = 1
    while feature_size(layers, size) < 1:
        size += 1
    return size


class SequentialCNN(nn.Module):
    """Conv / pool feature layers, Flatten, Dense layers with ReLU, then the output logits."""

    def __init__(self, name: str, features: tuple, dense: tuple, in_channels: int,
                 num_outputs: int, img_size: tuple[int, int]) -> None:
        super().__init__()
        need = min_input_size(features)
        h, w = feature_size(features, img_size[0]), feature_size(features, img_size[1])
        if h < 1 or w < 1:
            raise ConfigError(f"{name} needs an input of at least {need} x {need} px; "
                              f"got {img_size[0]} x {img_size[1]} (use --img-size {need} or more)")
        layers: list[nn.Module] = []
        ch = in_channels
        for spec in features:
            if isinstance(spec, Conv):
                pad = spec.kernel // 2 if spec.same else 0
                layers += [nn.Conv2d(ch, spec.filters, spec.kernel, spec.stride, pad), nn.ReLU(inplace=True)]
                ch = spec.filters
            else:
                layers.append(nn.MaxPool2d(spec.size, spec.stride or spec.size))
        self.features = nn.Sequential(*layers)
        head: list[nn.Module] = [nn.Flatten()]
        n = ch * h * w
        for spec in dense:
            head += [nn.Linear(n, spec.units), nn.ReLU(inplace=True)]
            if spec.dropout:
                head.append(nn.Dropout(spec.dropout))
            n = spec.units
        head.append(nn.Linear(n, num_outputs))
        self.classifier = nn.Sequential(*head)
        self.min_input_size = need
        for m in self.modules():
            if isinstance(m, nn.Conv2d | nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        return self.classifier(self.features(x))


def _builder(name: str, features: tuple, dense: tuple, doc: str):
    def build(in_channels: int, num_outputs: int, img_size: tuple[int, int]) -> nn.Module:
        return SequentialCNN(name, features, dense, in_channels, num_outputs, img_size)

    build.__name__ = name
    build.__doc__ = doc
    return register_model(build, family="seed")


# Seed 000: "5 convolution layers then 3 dense layers, AlexNet-like". The article's
# summary is an image we cannot read, so this is AlexNet's shape (11x11/4 stem, 5x5, three
# 3x3, overlapping 3/2 pooling) at widths a 1400-px input can afford.
xray_alexnet = _builder(
    "xray_alexnet",
    (Conv(32, 11, 4), Pool(3, 2), Conv(64, 5, same=True), Pool(3, 2),
     Conv(96, 3, same=True), Conv(96, 3, same=True), Conv(64, 3, same=True), Pool(3, 2)),
    (Dense(128, 0.5), Dense(64, 0.5)),
    "Seed 000: AlexNet-style, 5 conv + 3 dense layers.",
)

# Seed 001: four conv layers, each with max pooling, filters doubling; dropout 0.3 after
# the last ReLU dense layer.
xray_4block = _builder(
    "xray_4block",
    (Conv(32), Pool(), Conv(64), Pool(), Conv(128), Pool(), Conv(256), Pool()),
    (Dense(512, 0.3),),
    "Seed 001: 4 x (conv 3x3 + maxpool), filters 32-256, dense 512, dropout 0.3.",
)

# Seed 002: 5 x (Conv2D 3x3 relu + MaxPooling 2x2) with 32, 32, 32, 64, 64 filters;
# Dense 128, Dense 64, Dense 1: 1,467,137 parameters at 500 x 500 x 1.
xray_5block = _builder(
    "xray_5block",
    (Conv(32), Pool(), Conv(32), Pool(), Conv(32), Pool(), Conv(64), Pool(), Conv(64), Pool()),
    (Dense(128), Dense(64)),
    "Seed 002: 5 x (conv 3x3 + maxpool), filters 32/32/32/64/64, dense 128 and 64.",
)

# Seed 003: Conv 32, pool, Conv 64, pool, Dense 128, Dropout 0.2.
catsdogs_2conv = _builder(
    "catsdogs_2conv",
    (Conv(32), Pool(), Conv(64), Pool()),
    (Dense(128, 0.2),),
    "Seed 003: 2 x (conv 3x3 + maxpool), dense 128, dropout 0.2.",
)

# Seed 004: Conv 64, Conv 32, Flatten, Dense 10 softmax: 203,434 parameters at 28 x 28 x 1.
mnist_basic = _builder(
    "mnist_basic",
    (Conv(64), Conv(32)),
    (),
    "Seed 004: conv 64, conv 32 (3x3, no pooling), flatten, softmax.",
)
