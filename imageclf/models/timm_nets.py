"""ImageNet architectures from timm, for fine-tuning from the offline weights in
:mod:`imageclf.models.weights`.

Names and tensor names are timm's (``tf_efficientnet_lite0`` ...), so a timm checkpoint a
user brings loads with ``--pretrained PATH`` as well. timm comes with the ``pretrained``
extra; without it these builders say which ``pip install`` brings it.
"""

from __future__ import annotations

from torch import nn

from imageclf.core.errors import ConfigError
from imageclf.models.registry import register_model

PRETRAINED_EXTRA = "pip install 'imageclf[pretrained]'"


def create_timm(name: str, in_channels: int, num_outputs: int, **kwargs) -> nn.Module:
    """``timm.create_model(name, pretrained=False, ...)``: never a download; weights come later."""
    try:
        # Lazy, documented: timm is an optional extra, and importing it costs ~1 s of start-up.
        import timm
    except ImportError:
        raise ConfigError(f"{name} needs timm; {PRETRAINED_EXTRA}") from None
    return timm.create_model(name, pretrained=False, num_classes=num_outputs, in_chans=in_channels, **kwargs)


def _lite(variant: int, in_channels: int, num_outputs: int, dropout: float, drop_path: float) -> nn.Module:
    model = create_timm(f"tf_efficientnet_lite{variant}", in_channels, num_outputs,
                        drop_rate=dropout, drop_path_rate=drop_path)
    # A zero head: every class starts at the same probability. timm draws the head from
    # uniform(+-1 / sqrt(outputs)), which for one output gives logits of +-50 on pretrained
    # features: the first fine-tuning epoch then spent itself unlearning them (train loss 2.47,
    # accuracy 0.58 on cats vs dogs, against 0.94 with this).
    nn.init.zeros_(model.get_classifier().weight)
    nn.init.zeros_(model.get_classifier().bias)
    return model


@register_model(family="efficientnet-lite")
def efficientnet_lite0(in_channels: int, num_outputs: int, img_size: tuple[int, int],
                       dropout: float = 0.2, drop_path: float = 0.1) -> nn.Module:
    """EfficientNet-Lite0 (timm tf_efficientnet_lite0, 3.4 M params); ImageNet weights offline."""
    return _lite(0, in_channels, num_outputs, dropout, drop_path)


@register_model(family="efficientnet-lite")
def efficientnet_lite1(in_channels: int, num_outputs: int, img_size: tuple[int, int],
                       dropout: float = 0.2, drop_path: float = 0.1) -> nn.Module:
    """EfficientNet-Lite1 (timm tf_efficientnet_lite1, 4.1 M params); ImageNet weights offline."""
    return _lite(1, in_channels, num_outputs, dropout, drop_path)


@register_model(family="efficientnet-lite")
def efficientnet_lite2(in_channels: int, num_outputs: int, img_size: tuple[int, int],
                       dropout: float = 0.3, drop_path: float = 0.1) -> nn.Module:
    """EfficientNet-Lite2 (timm tf_efficientnet_lite2, 4.8 M params); ImageNet weights offline."""
    return _lite(2, in_channels, num_outputs, dropout, drop_path)
