"""ResNets for small grayscale or RGB images, trained from scratch by default.

``xray_resnet18`` is torchvision's ResNet-18 with its parameter names unchanged (so a
torchvision or timm ResNet-18 state_dict loads through ``--pretrained``), its first
layer taking ``in_channels`` and its stem shrunk for small inputs: ImageNet's 7x7/2 conv
plus max pooling would leave a 28 px image 7 px wide before the first block.

``resnet_compact`` and its named sizes are the same residual design at a fraction of
the width and depth, for CPUs (ResNet-18: 11.2 M parameters; ``resnet_compact``'s
default ResNet-10 at width 32: 1.2 M; ``xray_resnet_small``: 0.3 M).
"""

from __future__ import annotations

from torch import nn

from imageclf.core.errors import ConfigError
from imageclf.models.registry import register_model

STEMS = ("auto", "cifar", "small", "imagenet")


def pick_stem(stem: str, img_size: tuple[int, int]) -> str:
    """``auto``: full resolution up to 64 px, one stride-2 conv up to 128, ImageNet's above."""
    if stem not in STEMS:
        raise ConfigError(f"stem must be one of {', '.join(STEMS)}, got {stem!r}")
    if stem != "auto":
        return stem
    side = min(img_size)
    return "cifar" if side <= 64 else "small" if side <= 128 else "imagenet"


def stem_layers(stem: str, in_channels: int, width: int) -> tuple[nn.Conv2d, nn.Module]:
    """(first conv, pooling after it): cifar 3x3/1, small 3x3/2, imagenet 7x7/2 + maxpool 3/2."""
    if stem == "imagenet":
        return (nn.Conv2d(in_channels, width, 7, 2, 3, bias=False),
                nn.MaxPool2d(kernel_size=3, stride=2, padding=1))
    stride = 1 if stem == "cifar" else 2
    return nn.Conv2d(in_channels, width, 3, stride, 1, bias=False), nn.Identity()


# torchvision is imported where a network is built, not here: importing it costs seconds of
# start-up that predicting with a seed CNN never needs.


def _zero_init_last_bn(model: nn.Module) -> None:
    # Each residual branch starts as the identity (Goyal et al. 2017): faster, steadier start.
    from torchvision.models.resnet import BasicBlock

    for m in model.modules():
        if isinstance(m, BasicBlock):
            nn.init.zeros_(m.bn2.weight)


@register_model(family="resnet")
def xray_resnet18(in_channels: int, num_outputs: int, img_size: tuple[int, int],
                  stem: str = "auto", dropout: float = 0.0) -> nn.Module:
    """torchvision ResNet-18 (11.2 M params), 1 or 3 channels, stem sized for small inputs."""
    from torchvision.models.resnet import BasicBlock, ResNet

    model = ResNet(BasicBlock, [2, 2, 2, 2], num_classes=num_outputs, zero_init_residual=True)
    model.conv1, model.maxpool = stem_layers(pick_stem(stem, img_size), in_channels, 64)
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    if dropout:
        model.fc = nn.Sequential(nn.Dropout(dropout), model.fc)
    return model


class CompactResNet(nn.Module):
    """A ResNet with chosen stage widths and depths (BasicBlocks), global pooling, one linear head."""

    def __init__(self, in_channels: int, num_outputs: int, img_size: tuple[int, int],
                 widths: tuple[int, ...], blocks: tuple[int, ...], stem: str = "auto",
                 dropout: float = 0.0) -> None:
        from torchvision.models.resnet import BasicBlock

        super().__init__()
        if len(widths) != len(blocks) or not widths:
            raise ConfigError(f"widths {list(widths)} and blocks {list(blocks)} must have the same length")
        conv, pool = stem_layers(pick_stem(stem, img_size), in_channels, widths[0])
        self.stem = nn.Sequential(conv, nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True), pool)
        stages, ch = [], widths[0]
        for i, (w, n) in enumerate(zip(widths, blocks)):
            stride = 1 if i == 0 else 2
            layers = []
            for j in range(n):
                s = stride if j == 0 else 1
                down = None
                if s != 1 or ch != w:
                    down = nn.Sequential(nn.Conv2d(ch, w, 1, s, bias=False), nn.BatchNorm2d(w))
                layers.append(BasicBlock(ch, w, s, down))
                ch = w
            stages.append(nn.Sequential(*layers))
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.drop = nn.Dropout(dropout) if dropout else nn.Identity()
        self.fc = nn.Linear(ch, num_outputs)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        _zero_init_last_bn(self)

    def forward(self, x):
        x = self.pool(self.stages(self.stem(x))).flatten(1)
        return self.fc(self.drop(x))


@register_model(family="resnet")
def resnet_compact(in_channels: int, num_outputs: int, img_size: tuple[int, int],
                   widths: list[int] = (32, 64, 128, 256), blocks: list[int] = (1, 1, 1, 1),
                   stem: str = "auto", dropout: float = 0.0) -> nn.Module:
    """ResNet of any widths / depths (model_kwargs widths, blocks); default ResNet-10, width 32, 1.2 M."""
    return CompactResNet(in_channels, num_outputs, img_size, tuple(widths), tuple(blocks), stem, dropout)


@register_model(family="resnet")
def xray_resnet_small(in_channels: int, num_outputs: int, img_size: tuple[int, int],
                      stem: str = "auto", dropout: float = 0.0) -> nn.Module:
    """ResNet-10 at a quarter of ResNet-18's width (16-128 channels, 0.3 M params): CPU-fast."""
    return CompactResNet(in_channels, num_outputs, img_size, (16, 32, 64, 128), (1, 1, 1, 1), stem, dropout)


@register_model(family="resnet")
def xray_resnet_medium(in_channels: int, num_outputs: int, img_size: tuple[int, int],
                       stem: str = "auto", dropout: float = 0.0) -> nn.Module:
    """ResNet-18's depth at half its width (32-256 channels, 2.8 M params)."""
    return CompactResNet(in_channels, num_outputs, img_size, (32, 64, 128, 256), (2, 2, 2, 2), stem, dropout)
