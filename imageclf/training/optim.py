"""Optimisers by name (a registry, Keras' defaults where a seed recipe asks for them)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn

from imageclf.core.errors import ConfigError

OptimizerFactory = Callable[[list[dict], float, dict], torch.optim.Optimizer]

OPTIMIZERS: dict[str, OptimizerFactory] = {
    "adam": lambda groups, lr, kw: torch.optim.Adam(groups, lr=lr, **kw),
    "adamw": lambda groups, lr, kw: torch.optim.AdamW(groups, lr=lr, **kw),
    "sgd": lambda groups, lr, kw: torch.optim.SGD(groups, lr=lr, **{"momentum": 0.9, "nesterov": True, **kw}),
    "rmsprop": lambda groups, lr, kw: torch.optim.RMSprop(groups, lr=lr, **kw),
    "adadelta": lambda groups, lr, kw: torch.optim.Adadelta(groups, lr=lr, **kw),
}


def build_optimizer(recipe, params: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
    """The recipe's optimiser; weight decay spares biases and norm scales (1-D tensors)."""
    if recipe.optimizer not in OPTIMIZERS:
        raise ConfigError(f"unknown optimizer {recipe.optimizer!r}; known: {', '.join(OPTIMIZERS)}")
    params = [p for p in params if p.requires_grad]
    if recipe.weight_decay:
        groups = [
            {"params": [p for p in params if p.ndim > 1], "weight_decay": recipe.weight_decay},
            {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0},
        ]
    else:
        groups = [{"params": params}]
    try:
        return OPTIMIZERS[recipe.optimizer](groups, recipe.lr, dict(recipe.optimizer_kwargs))
    except TypeError as exc:
        raise ConfigError(f"optimizer {recipe.optimizer!r}: {exc}") from None


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
