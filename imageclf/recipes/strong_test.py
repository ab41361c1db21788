"""The stronger recipes: registered, self-consistent, and their networks fit their inputs."""

from __future__ import annotations

import pytest
import torch

from imageclf.models import check_forward, create_model
from imageclf.recipes.schema import Recipe, get_recipe, list_recipes
from imageclf.recipes.strong import __name__ as strong_module

STRONG = ["xray-fast", "xray-resnet", "xray-resnet18", "xray-convnext", "xray-efficientnet",
          "fashion-resnet", "fashion-wrn", "mnist-resnet", "mnist-wrn", "photo-resnet"]


def test_all_strong_recipes_are_registered():
    assert strong_module == "imageclf.recipes.strong"
    assert set(STRONG) <= set(list_recipes())


@pytest.mark.parametrize("name", STRONG)
def test_strong_recipe_builds_its_model_at_its_size(name):
    r = get_recipe(name)
    assert r.seed_article is None and r.pretrained is None  # from scratch by default
    assert r.ema and r.label_smoothing > 0 and r.augment.active
    if r.model == "wrn_16_4" or r.size[0] > 64:
        return  # built in the registry test at 32 px; too slow to build at full size here
    outputs = 1 if r.article_classes == 2 else r.article_classes
    model = create_model(r.model, r.channels, outputs, r.size, **r.model_kwargs)
    check_forward(model, r.model, r.channels, r.size)
    assert Recipe.from_dict(r.to_dict()).to_dict() == r.to_dict()


def test_digits_are_never_flipped():
    for name in ("mnist-resnet", "mnist-wrn"):
        r = get_recipe(name)
        assert not r.augment.horizontal_flip and not r.augment.vertical_flip and not r.tta


def test_seed_recipes_keep_their_settings():
    # The stronger recipes add a field; the seeds must not change because of it.
    seed = get_recipe("xray-5block")
    assert seed.pretrained is None and seed.ema is None and seed.tta == []
    assert seed.optimizer == "adam" and seed.schedule == "constant"
    with torch.no_grad():
        assert create_model("xray_5block", 1, 1, (128, 128))(torch.zeros(1, 1, 128, 128)).shape == (1, 1)
