"""Wide ResNets (Zagoruyko & Komodakis 2016) for 28 x 28 and 32 x 32 images.

WRN-d-k: pre-activation residual blocks (BN-ReLU-conv), three groups of (d - 4) / 6 blocks
at widths 16k, 32k, 64k, full resolution in the first group. Fashion-MNIST's benchmark
table lists WRN-28-10 at .959 and WRN-40-4 at .967; on a CPU, WRN-16-4 is the affordable one.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from imageclf.core.errors import ConfigError
from imageclf.models.registry import register_model


class WideBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, dropout: float) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.dropout = dropout
        self.shortcut = (nn.Conv2d(cin, cout, 1, stride, bias=False)
                         if stride != 1 or cin != cout else None)

    def forward(self, x):
        o = F.relu(self.bn1(x))
        # The projection shortcut sees the pre-activated input, as in the paper's code.
        skip = x if self.shortcut is None else self.shortcut(o)
        o = self.conv1(o)
        o = F.relu(self.bn2(o))
        if self.dropout:
            o = F.dropout(o, self.dropout, self.training)
        return self.conv2(o) + skip


class WideResNet(nn.Module):
    def __init__(self, in_channels: int, num_outputs: int, depth: int, widen: int,
                 dropout: float = 0.0, base: int = 16) -> None:
        super().__init__()
        if (depth - 4) % 6 or depth < 10:
            raise ConfigError(f"wide_resnet depth must be 6n + 4 (10, 16, 22, 28, 40, ...), got {depth}")
        n = (depth - 4) // 6
        widths = [base, base * widen, 2 * base * widen, 4 * base * widen]
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        groups, ch = [], widths[0]
        for g, w in enumerate(widths[1:]):
            blocks = []
            for i in range(n):
                blocks.append(WideBlock(ch, w, 2 if (g > 0 and i == 0) else 1, dropout))
                ch = w
            groups.append(nn.Sequential(*blocks))
        self.groups = nn.Sequential(*groups)
        self.bn = nn.BatchNorm2d(ch)
        self.fc = nn.Linear(ch, num_outputs)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        nn.init.zeros_(self.fc.bias)

    def forward(self, x):
        x = self.groups(self.conv1(x))
        x = F.relu(self.bn(x))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


@register_model(family="wide_resnet")
def wide_resnet(in_channels: int, num_outputs: int, img_size: tuple[int, int], depth: int = 16,
                widen: int = 4, dropout: float = 0.0, base: int = 16) -> nn.Module:
    """WRN-depth-widen (model_kwargs depth, widen, dropout, base); default WRN-16-4."""
    return WideResNet(in_channels, num_outputs, depth, widen, dropout, base)


def _named(depth: int, widen: int, doc: str):
    def build(in_channels: int, num_outputs: int, img_size: tuple[int, int], dropout: float = 0.0,
              base: int = 16) -> nn.Module:
        return WideResNet(in_channels, num_outputs, depth, widen, dropout, base)

    build.__name__ = f"wrn_{depth}_{widen}"
    build.__doc__ = doc
    return register_model(build, family="wide_resnet")


wrn_16_4 = _named(16, 4, "WRN-16-4 (2.7 M params): the CPU-affordable wide ResNet for 28 px images.")
wrn_28_10 = _named(28, 10, "WRN-28-10 (36.5 M params): Fashion-MNIST table .959; needs a GPU.")
wrn_40_4 = _named(40, 4, "WRN-40-4 (8.9 M params): Fashion-MNIST table's best, .967; needs a GPU.")
