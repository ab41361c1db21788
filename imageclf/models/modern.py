"""torchvision's ConvNeXt and EfficientNet, from scratch, for small 1- or 3-channel images.

Parameter names stay torchvision's, so a torchvision state_dict of the same size loads
with ``--pretrained``. What changes is the stem: ConvNeXt's 4x4/4 patchify and
EfficientNet's stride-2 conv would leave a 28-64 px image only a few pixels wide at the
last stage, so small inputs get a gentler first stride.
"""

from __future__ import annotations

from torch import nn

from imageclf.core.errors import ConfigError
from imageclf.models.registry import register_model


def _convnext(in_channels: int, num_outputs: int, img_size: tuple[int, int], dims, depths,
              stem_stride: int | None, drop_path: float) -> nn.Module:
    from torchvision.models.convnext import CNBlockConfig, ConvNeXt  # lazy: seconds of start-up

    if len(dims) != len(depths):
        raise ConfigError(f"convnext dims {list(dims)} and depths {list(depths)} differ in length")
    setting = [CNBlockConfig(d, dims[i + 1] if i + 1 < len(dims) else None, n)
               for i, (d, n) in enumerate(zip(dims, depths))]
    model = ConvNeXt(setting, stochastic_depth_prob=drop_path, num_classes=num_outputs)
    if stem_stride is None:
        side = min(img_size)
        stem_stride = 1 if side <= 32 else 2 if side <= 96 else 4
    model.features[0][0] = nn.Conv2d(in_channels, dims[0], stem_stride, stem_stride)
    nn.init.trunc_normal_(model.features[0][0].weight, std=0.02)
    nn.init.zeros_(model.features[0][0].bias)
    return model


@register_model(family="convnext")
def xray_convnext(in_channels: int, num_outputs: int, img_size: tuple[int, int],
                  dims: list[int] = (32, 64, 128, 256), depths: list[int] = (2, 2, 4, 2),
                  stem_stride: int | None = None, drop_path: float = 0.05) -> nn.Module:
    """ConvNeXt at 32-256 channels (2-2-4-2 blocks, 1.9 M params), patchify stem 1-4 by input size."""
    return _convnext(in_channels, num_outputs, img_size, tuple(dims), tuple(depths), stem_stride, drop_path)


@register_model(family="convnext")
def convnext_tiny(in_channels: int, num_outputs: int, img_size: tuple[int, int],
                  stem_stride: int | None = None, drop_path: float = 0.1) -> nn.Module:
    """torchvision ConvNeXt-Tiny (27.8 M params; loads torchvision convnext_tiny weights)."""
    return _convnext(in_channels, num_outputs, img_size, (96, 192, 384, 768), (3, 3, 9, 3),
                     stem_stride, drop_path)


@register_model(family="efficientnet")
def xray_efficientnet_b0(in_channels: int, num_outputs: int, img_size: tuple[int, int],
                         stem_stride: int | None = None, dropout: float = 0.2,
                         drop_path: float = 0.1) -> nn.Module:
    """torchvision EfficientNet-B0 (4.0 M params), stem stride 1 up to 96 px, else 2."""
    from torchvision.models.efficientnet import efficientnet_b0  # lazy: seconds of start-up

    model = efficientnet_b0(num_classes=num_outputs, dropout=dropout, stochastic_depth_prob=drop_path)
    if stem_stride is None:
        stem_stride = 1 if min(img_size) <= 96 else 2
    model.features[0][0] = nn.Conv2d(in_channels, 32, 3, stem_stride, 1, bias=False)
    nn.init.kaiming_normal_(model.features[0][0].weight, mode="fan_out")
    return model
