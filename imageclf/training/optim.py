"""Optimisers by name (a registry, Keras' defaults where a seed recipe asks for them), and their
parameter groups: weight decay spares biases and norm scales; with ``layer_decay`` each block
group gets ``lr * layer_decay ** depth``, depth counted from the head (timm's grouping)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from imageclf.core.errors import ConfigError

OptimizerFactory = Callable[[list[dict], float, dict], torch.optim.Optimizer]

# Optimisers with a fused kernel (one pass over each parameter per step instead of ~10 tensor ops),
# and the devices it runs on. The same update, rounded differently in the last bits; mnist-basic's
# whole training step went from 0.96x to 1.00x cpu_ceiling's images per CPU-second (BENCHMARKS.md).
FUSED = {"adam", "adamw", "sgd"}
FUSED_DEVICES = {"cpu", "cuda"}

def import_optimizer_machinery() -> None:
    """Import what a torch optimiser imports when it is first made: torch._dynamo (its
    ``add_param_group`` and ``step`` are wrapped to keep torch.compile out), 1-2 s of one core
    on the 2-core EPYC. Training runs this while the decode processes fill the cache
    (:func:`~imageclf.data.cache.decode_paths`' ``meanwhile``), so the two overlap."""
    import torch._dynamo  # noqa: F401


OPTIMIZERS: dict[str, OptimizerFactory] = {
    "adam": lambda groups, lr, kw: torch.optim.Adam(groups, lr=lr, **kw),
    "adamw": lambda groups, lr, kw: torch.optim.AdamW(groups, lr=lr, **kw),
    "sgd": lambda groups, lr, kw: torch.optim.SGD(groups, lr=lr, **{"momentum": 0.9, "nesterov": True, **kw}),
    "rmsprop": lambda groups, lr, kw: torch.optim.RMSprop(groups, lr=lr, **kw),
    "adadelta": lambda groups, lr, kw: torch.optim.Adadelta(groups, lr=lr, **kw),
}


def parameter_groups(recipe, model: nn.Module) -> list[dict]:
    """The optimiser's groups for ``model``; each may carry an ``lr_scale`` that :func:`set_lr` keeps."""
    if recipe.layer_decay is not None:
        if not hasattr(model, "group_matcher"):
            raise ConfigError(f"layer_decay needs a network that names its block groups (the timm "
                              f"architectures, e.g. efficientnet_lite0); {recipe.model} does not")
        # Lazy, documented: timm is an optional extra, needed only for its own architectures.
        from timm.optim import param_groups_layer_decay

        return param_groups_layer_decay(model, weight_decay=recipe.weight_decay,
                                        layer_decay=recipe.layer_decay)
    params = [p for p in model.parameters() if p.requires_grad]
    if recipe.weight_decay:
        return [{"params": [p for p in params if p.ndim > 1], "weight_decay": recipe.weight_decay},
                {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0}]
    return [{"params": params}]


def build_optimizer(recipe, model: nn.Module) -> torch.optim.Optimizer:
    """The recipe's optimiser over ``model``'s parameters (see :func:`parameter_groups`)."""
    if recipe.optimizer not in OPTIMIZERS:
        raise ConfigError(f"unknown optimizer {recipe.optimizer!r}; known: {', '.join(OPTIMIZERS)}")
    kwargs = dict(recipe.optimizer_kwargs)
    devices = {p.device.type for p in model.parameters()}
    if recipe.optimizer in FUSED and devices <= FUSED_DEVICES and not {"fused", "foreach"} & set(kwargs):
        kwargs["fused"] = True  # unless the recipe chose an implementation itself
    try:
        return OPTIMIZERS[recipe.optimizer](parameter_groups(recipe, model), recipe.lr, kwargs)
    except TypeError as exc:
        raise ConfigError(f"optimizer {recipe.optimizer!r}: {exc}") from None


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Every group at ``lr`` times its ``lr_scale`` (1 where it has none)."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
