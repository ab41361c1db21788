"""The model registry: ``@register_model`` on a builder, ``create_model(name, ...)`` to build.

A builder takes ``(in_channels, num_outputs, img_size, **kwargs)`` and returns an
``nn.Module`` that maps (N, C, H, W) floats to (N, num_outputs) logits; two-class models
have ``num_outputs == 1`` (one sigmoid logit, as the seed articles' Keras models).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from imageclf.core.errors import ConfigError

ModelBuilder = Callable[..., nn.Module]


@dataclass(frozen=True)
class ModelEntry:
    name: str
    builder: ModelBuilder
    description: str
    family: str


_MODELS: dict[str, ModelEntry] = {}


def register_model(fn: ModelBuilder | None = None, *, name: str | None = None, family: str = ""):
    """Decorator: add a model builder to the registry under ``name`` (default: its own name)."""

    def add(builder: ModelBuilder) -> ModelBuilder:
        key = name or builder.__name__
        if key in _MODELS:
            raise ValueError(f"model {key!r} registered twice")
        doc = inspect.getdoc(builder) or ""
        _MODELS[key] = ModelEntry(key, builder, doc.splitlines()[0] if doc else "",
                                  family or builder.__module__.rsplit(".", 1)[-1])
        return builder

    return add(fn) if fn is not None else add


def list_models() -> list[str]:
    return sorted(_MODELS)


def model_entry(name: str) -> ModelEntry:
    try:
        return _MODELS[name]
    except KeyError:
        raise ConfigError(f"unknown model {name!r}; known models: {', '.join(list_models())}") from None


def create_model(
    name: str, in_channels: int, num_outputs: int, img_size: tuple[int, int], **kwargs
) -> nn.Module:
    """Build a registered model; a too-small input or a bad argument is a ConfigError."""
    entry = model_entry(name)
    try:
        model = entry.builder(in_channels=in_channels, num_outputs=num_outputs,
                              img_size=tuple(img_size), **kwargs)
    except TypeError as exc:
        raise ConfigError(f"model {name!r}: {exc}") from None
    return model


def num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def check_forward(model: nn.Module, name: str, in_channels: int, img_size: tuple[int, int]) -> None:
    """Run one tiny forward pass so a size that does not fit fails before training starts."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, in_channels, *img_size))
    except RuntimeError as exc:
        raise ConfigError(f"model {name!r} cannot take {img_size[0]} x {img_size[1]} input: "
                          f"{str(exc).splitlines()[0]}") from None
    finally:
        model.train(was_training)
