import pytest

from imageclf.core.errors import ConfigError
from imageclf.recipes.schema import Recipe, get_recipe, list_recipes

SEED_RECIPES = ["xray-alexnet", "xray-4block", "xray-5block", "catsdogs-2conv", "mnist-basic"]


def test_seed_recipes_registered():
    assert set(SEED_RECIPES) <= set(list_recipes())


def test_seed_002_settings_as_in_the_article():
    r = get_recipe("xray-5block")
    assert (r.img_size, r.channels, r.batch_size, r.epochs) == (500, 1, 16, 25)
    assert r.class_weights == "balanced"
    assert (r.early_stopping.monitor, r.early_stopping.patience) == ("val_loss", 3)
    assert (r.reduce_lr.patience, r.reduce_lr.factor, r.reduce_lr.min_lr) == (2, 0.3, 1e-6)
    assert r.augment.shear == 0.2 and r.augment.zoom == 0.2 and r.augment.horizontal_flip


def test_get_recipe_returns_a_fresh_copy():
    r = get_recipe("xray-5block")
    r.augment.rotation = 45
    assert get_recipe("xray-5block").augment.rotation == 0


def test_overrides_including_dotted_and_strings():
    r = get_recipe("mnist-basic").override({"epochs": "5", "augment.rotation": "10",
                                             "early_stopping.patience": 4, "lr": None})
    assert r.epochs == 5 and r.augment.rotation == 10
    assert r.early_stopping.patience == 4 and r.early_stopping.monitor == "val_loss"
    assert r.lr == 1e-3


def test_override_to_none():
    assert get_recipe("xray-5block").override({"reduce_lr": "none"}).reduce_lr is None


@pytest.mark.parametrize("key", ["epochz", "augment.spin"])
def test_unknown_override_rejected(key):
    with pytest.raises(ConfigError, match="unknown"):
        get_recipe("mnist-basic").override({key: 1})


def test_yaml_round_trip(tmp_path):
    r = get_recipe("xray-5block").override({"img_size": 128})
    path = tmp_path / "r.yaml"
    path.write_text(r.to_yaml())
    assert get_recipe(str(path)) == r


def test_unknown_recipe_lists_known():
    with pytest.raises(ConfigError, match="known recipes: .*xray-5block"):
        get_recipe("xray-6block")


def test_bad_values_rejected():
    with pytest.raises(ConfigError):
        Recipe(name="x", model="mnist_basic", class_weights="inverse")
    with pytest.raises(ConfigError):
        Recipe(name="x", model="mnist_basic", epochs=0)


def test_rectangular_size():
    assert Recipe(name="x", model="m", img_size=[64, 96]).size == (64, 96)


def test_numbers_in_exponent_form_are_numbers_on_the_command_line_and_in_files(tmp_path):
    # PyYAML alone reads "2e-3" as a string (YAML 1.1 wants "2.0e-3"): the optimiser then failed.
    r = get_recipe("photo-resnet").override({"lr": "2e-3", "weight_decay": "5E-4", "epochs": "12"})
    assert r.lr == 0.002 and r.weight_decay == 0.0005 and r.epochs == 12
    path = tmp_path / "r.yaml"
    path.write_text(r.to_yaml().replace("lr: 0.002", "lr: 1e-2"))
    assert get_recipe(path).lr == 0.01
