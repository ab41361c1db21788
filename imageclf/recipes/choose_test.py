"""The default recipe follows the data: colour or gray, size, classes, weights installed or not."""

from __future__ import annotations

import numpy as np
import pytest

from imageclf.data import synthetic
from imageclf.data.sources import open_dataset
from imageclf.recipes import get_recipe
from imageclf.recipes.choose import choose_recipe, data_traits


@pytest.fixture(scope="module")
def colour_folders(tmp_path_factory):
    return synthetic.make_class_folders(tmp_path_factory.mktemp("colour"), n=12, size=48, channels=3,
                                        class_names=("cat", "dog"))


@pytest.fixture(scope="module")
def gray_folders(tmp_path_factory):
    return synthetic.make_class_folders(tmp_path_factory.mktemp("gray"), n=12, size=64, channels=1)


def test_colour_photos_get_the_pretrained_fine_tune_or_the_photo_recipe(colour_folders):
    traits = data_traits(open_dataset(colour_folders))
    assert traits.color and traits.side == 48 and traits.images == 12 and traits.classes == 2
    name, why = choose_recipe(open_dataset(colour_folders), pretrained=True)
    assert name == "photo-lite0" and "colour images, typically 48 px" in why
    name, why = choose_recipe(open_dataset(colour_folders), pretrained=False)
    assert name == "photo-resnet" and "imageclf[pretrained]" in why


def test_gray_scans_get_the_xray_recipes(gray_folders):
    assert choose_recipe(open_dataset(gray_folders), pretrained=True)[0] == "xray-lite0"
    assert choose_recipe(open_dataset(gray_folders), pretrained=False)[0] == "xray-resnet"


def test_gray_stored_as_rgb_counts_as_gray(tmp_path):
    from PIL import Image

    images, labels = synthetic.synthetic_images(8, 40)
    for i, (img, k) in enumerate(zip(images, labels)):
        (tmp_path / f"c{k}").mkdir(exist_ok=True)
        Image.fromarray(np.stack([img] * 3, -1)).save(tmp_path / f"c{k}" / f"{i}.jpg")
    assert not data_traits(open_dataset(tmp_path)).color


def test_small_gray_images_of_many_classes_get_the_digit_recipe(tmp_path):
    npz = synthetic.make_npz(tmp_path / "digits.npz", n_train=30, n_val=10, num_classes=5)
    name, _ = choose_recipe(open_dataset(npz, [str(i) for i in range(5)]), pretrained=True)
    assert name == "mnist-resnet"


def test_every_choice_is_a_registered_recipe(colour_folders, gray_folders):
    for data in (colour_folders, gray_folders):
        for pretrained in (True, False):
            get_recipe(choose_recipe(open_dataset(data), pretrained=pretrained)[0])
