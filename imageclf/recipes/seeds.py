"""The built-in recipes: the five seed articles reproduced as they were written.

Each seed recipe keeps its article's layers, input, optimiser and its Keras defaults,
learning rate, loss, batch, epochs, callbacks, augmentation and class weights (see
SEEDS.md). Keras' shear_range is in degrees, so the seeds' ``shear_range=0.2`` is 0.2
degrees here too.
"""

from __future__ import annotations

from imageclf.data.transforms import Augment
from imageclf.recipes.schema import EarlyStopping, Recipe, ReduceLROnPlateau, register_recipe

# ImageDataGenerator(rescale=1/255, shear_range=0.2, zoom_range=0.2, horizontal_flip=True)
KERAS_TUTORIAL_AUGMENT = dict(shear=0.2, zoom=0.2, horizontal_flip=True)
# Keras' optimiser defaults differ from torch's; these are Keras' (tf.keras 2.x).
KERAS_ADAM = dict(eps=1e-7)
KERAS_RMSPROP = dict(alpha=0.9, eps=1e-7)


@register_recipe
def xray_alexnet() -> Recipe:
    return Recipe(
        name="xray-alexnet", model="xray_alexnet", seed_article="000",
        description="Seed 000: AlexNet-style X-ray CNN at 1400 px, EarlyStopping on val accuracy.",
        img_size=1400, channels=1, batch_size=32, epochs=10,
        optimizer="adam", lr=1e-3, optimizer_kwargs=KERAS_ADAM,
        augment=Augment(**KERAS_TUTORIAL_AUGMENT),
        early_stopping=EarlyStopping(monitor="val_accuracy", patience=2),
    )


@register_recipe
def xray_4block() -> Recipe:
    return Recipe(
        name="xray-4block", model="xray_4block", seed_article="001",
        description="Seed 001: 4-block CNN, 180 px RGB, RMSprop 1e-4, 25 epochs.",
        img_size=180, channels=3, batch_size=32, epochs=25,
        optimizer="rmsprop", lr=1e-4, optimizer_kwargs=KERAS_RMSPROP,
        augment=Augment(fill_mode="nearest"),
    )


@register_recipe
def xray_5block() -> Recipe:
    return Recipe(
        name="xray-5block", model="xray_5block", seed_article="002",
        description="Seed 002: 5-block CNN, 500 px gray, Adam, balanced weights, ES + ReduceLR.",
        img_size=500, channels=1, batch_size=16, epochs=25,
        optimizer="adam", lr=1e-3, optimizer_kwargs=KERAS_ADAM,
        class_weights="balanced",
        augment=Augment(**KERAS_TUTORIAL_AUGMENT),
        early_stopping=EarlyStopping(monitor="val_loss", patience=3),
        reduce_lr=ReduceLROnPlateau(monitor="val_loss", patience=2, factor=0.3, min_lr=1e-6),
    )


@register_recipe
def catsdogs_2conv() -> Recipe:
    # The article's 250 steps of 32 per epoch: about four passes over 2,000 images.
    return Recipe(
        name="catsdogs-2conv", model="catsdogs_2conv", seed_article="003",
        description="Seed 003: 2-conv CNN, 64 px RGB, Adadelta lr 1.0, 10 x 250 steps.",
        img_size=64, channels=3, batch_size=32, epochs=10, steps_per_epoch=250,
        optimizer="adadelta", lr=1.0, optimizer_kwargs=dict(rho=0.95, eps=1e-7),
        augment=Augment(**KERAS_TUTORIAL_AUGMENT),
    )


@register_recipe
def mnist_basic() -> Recipe:
    return Recipe(
        name="mnist-basic", model="mnist_basic", seed_article="004", article_classes=10,
        description="Seed 004: conv 64 + conv 32 + softmax, 28 px gray, Adam, 3 epochs.",
        img_size=28, channels=1, batch_size=32, epochs=3,
        optimizer="adam", lr=1e-3, optimizer_kwargs=KERAS_ADAM,
    )

from imageclf.recipes import strong as recipes_strong  # noqa: E402,F401  (registers the stronger from-scratch recipes)
