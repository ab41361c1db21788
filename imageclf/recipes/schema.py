"""Recipes: a model plus everything needed to train it, as a small dataclass or a YAML file.

``@register_recipe`` adds one; ``get_recipe("xray-5block")`` or ``get_recipe("my.yaml")``
returns a fresh copy; ``recipe.override({"epochs": 3, "augment.rotation": 10})`` applies
command-line settings. The resolved recipe is saved as ``recipe.yaml`` in every run, and
that file can be trained from again.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from imageclf.core.errors import ConfigError
from imageclf.data.images import Preprocessing
from imageclf.data.transforms import Augment


@dataclass
class EarlyStopping:
    """Keras' EarlyStopping: stop after ``patience`` epochs without improvement."""

    monitor: str = "val_loss"
    patience: int = 3
    min_delta: float = 0.0
    restore_best: bool = True


@dataclass
class ReduceLROnPlateau:
    """Keras' ReduceLROnPlateau: multiply the learning rate by ``factor`` on a plateau."""

    monitor: str = "val_loss"
    patience: int = 2
    factor: float = 0.3
    min_lr: float = 1e-6
    min_delta: float = 1e-4


@dataclass
class Recipe:
    """How to train one model. Every field can be overridden from the command line."""

    name: str
    model: str
    description: str = ""
    seed_article: str | None = None
    article_classes: int = 2  # the article's class count: only for listing parameter counts
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    # Weights to start from: "imagenet" (the weights registered for ``model``), a registered name
    # ("efficientnet_lite0.imagenet", see imageclf.models.weights) or a local weights file.
    pretrained: str | None = None
    # Fine-tuning a pretrained network (fastai's fine_tune): the first ``freeze_epochs`` train the
    # new head alone; then every layer, block groups further from the head at lr * layer_decay ** depth.
    freeze_epochs: int = 0
    layer_decay: float | None = None
    # BatchNorm layers keep their pretrained statistics (eval mode) while the weights train: batches
    # of 16-32 images give noisy statistics that undo what ImageNet taught them.
    freeze_bn: bool = False
    # A linear probe: the pretrained backbone stays frozen; its features are computed once per image
    # and a logistic-regression head is fitted on them (seconds, not epochs).
    probe: bool = False
    # Input
    img_size: int | list[int] = 128
    channels: int = 1
    resize: str = "squash"
    mean: list[float] | None = None
    std: list[float] | None = None
    # Optimisation
    batch_size: int = 32
    epochs: int = 10
    steps_per_epoch: int | None = None
    optimizer: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    optimizer_kwargs: dict[str, Any] = field(default_factory=dict)
    schedule: str = "constant"
    warmup_epochs: float = 0.0
    label_smoothing: float = 0.0
    class_weights: str | None = None
    mixup: float = 0.0
    ema: float | None = None
    grad_clip: float | None = None
    early_stopping: EarlyStopping | None = None
    reduce_lr: ReduceLROnPlateau | None = None
    augment: Augment = field(default_factory=Augment)
    # Evaluation and prediction
    tta: list[str] = field(default_factory=list)
    threshold: float = 0.5
    # Data split and reproducibility
    val_fraction: float = 0.1
    seed: int = 0
    # The seed of the train/val carve when the data has no val split of its own (None: seed).
    # Fixing it lets runs that differ only in seed share one validation set (ensembles).
    split_seed: int | None = None
    channels_last: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.augment, dict):
            self.augment = Augment.from_dict(self.augment)
        if isinstance(self.early_stopping, dict):
            self.early_stopping = _build(EarlyStopping, self.early_stopping, "early_stopping")
        if isinstance(self.reduce_lr, dict):
            self.reduce_lr = _build(ReduceLROnPlateau, self.reduce_lr, "reduce_lr")
        if self.class_weights not in (None, "balanced"):
            raise ConfigError(f"class_weights must be 'balanced' or none, got {self.class_weights!r}")
        unknown_tta = sorted(set(self.tta) - {"hflip", "vflip"})
        if unknown_tta:
            raise ConfigError(f"unknown test-time augmentations {unknown_tta} (known: hflip, vflip)")
        if self.layer_decay is not None and not 0 < self.layer_decay <= 1:
            raise ConfigError(f"layer_decay must be in (0, 1], got {self.layer_decay}")
        if self.freeze_epochs < 0:  # as many as epochs or more: the head alone trains throughout
            raise ConfigError(f"freeze_epochs must be 0 or more, got {self.freeze_epochs}")
        for name in ("batch_size", "epochs"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")

    @property
    def carve_seed(self) -> int:
        """The seed that carves validation data out of training data."""
        return self.seed if self.split_seed is None else int(self.split_seed)

    @property
    def size(self) -> tuple[int, int]:
        s = self.img_size
        return (int(s), int(s)) if isinstance(s, int | float) else (int(s[0]), int(s[1]))

    def preprocessing(self) -> Preprocessing:
        return Preprocessing(
            size=self.size, channels=self.channels, resize=self.resize,
            mean=tuple(self.mean) if self.mean is not None else None,
            std=tuple(self.std) if self.std is not None else None,
        )

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["augment"] = self.augment.to_dict()
        return d

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Recipe:
        return _build(cls, d, "recipe")

    def override(self, settings: dict[str, Any]) -> Recipe:
        """A copy with ``settings`` applied; keys may be dotted (``augment.rotation``)."""
        d = self.to_dict()
        for key, value in settings.items():
            if value is None:
                continue
            parts = key.replace("-", "_").split(".")
            target = d
            for part in parts[:-1]:
                if target.get(part) is None and part in ("early_stopping", "reduce_lr"):
                    target[part] = {}
                if not isinstance(target.get(part), dict):
                    raise ConfigError(f"unknown recipe setting {key!r}")
                target = target[part]
            if parts[-1] not in target and target is d:
                raise ConfigError(f"unknown recipe setting {key!r}; known: {', '.join(d)}")
            target[parts[-1]] = _parse(value)
        return Recipe.from_dict(d)


class YamlLoader(yaml.SafeLoader):
    """PyYAML's safe loader, reading ``2e-3`` as a number as YAML 1.2 does (1.1 wants ``2.0e-3``)."""


YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"))


def load_yaml(text: str) -> Any:
    """Parse YAML text with :class:`YamlLoader`."""
    return yaml.load(text, Loader=YamlLoader)  # noqa: S506 - a SafeLoader subclass


def _parse(value: Any) -> Any:
    """Strings from the command line become YAML scalars: '3' -> 3, 'none' -> None."""
    if isinstance(value, str):
        if value.lower() in ("none", "null", "off"):
            return None
        return load_yaml(value)
    return value


def _build(cls, d: dict[str, Any], what: str):
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ConfigError(f"unknown {what} settings {unknown}; known: {', '.join(sorted(known))}")
    try:
        return cls(**d)
    except TypeError as exc:
        raise ConfigError(f"{what}: {exc}") from None


_RECIPES: dict[str, Callable[[], Recipe]] = {}


def register_recipe(fn: Callable[[], Recipe]) -> Callable[[], Recipe]:
    """Decorator: register a function returning a :class:`Recipe` under the recipe's name."""
    name = fn().name
    if name in _RECIPES:
        raise ValueError(f"recipe {name!r} registered twice")
    _RECIPES[name] = fn
    return fn


def list_recipes() -> list[str]:
    return sorted(_RECIPES)


def get_recipe(name_or_path: str | Path) -> Recipe:
    """A fresh copy of a registered recipe, or one read from a YAML file."""
    key = str(name_or_path)
    if key in _RECIPES:
        return copy.deepcopy(_RECIPES[key]())
    path = Path(key)
    if path.suffix.lower() in (".yaml", ".yml"):
        if not path.is_file():
            raise ConfigError(f"{path}: recipe file not found")
        try:
            data = load_yaml(path.read_text())
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML ({exc})") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: a recipe file must be a mapping of settings")
        return Recipe.from_dict(data)
    raise ConfigError(f"unknown recipe {key!r}; known recipes: {', '.join(list_recipes())} "
                      "(or a path to a .yaml recipe)")


def resolve_recipe(recipe: str | Path | Recipe, overrides: dict | None = None) -> Recipe:
    """A registered recipe, a YAML file or a Recipe, with ``overrides`` applied (a fresh copy)."""
    r = get_recipe(recipe) if isinstance(recipe, str | Path) else copy.deepcopy(recipe)
    return r.override(overrides or {})
