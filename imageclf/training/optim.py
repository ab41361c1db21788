"""Optimisers by name (a registry, Keras' defaults where a seed recipe asks for them), and their
parameter groups: weight decay spares biases and norm scales; with ``layer_decay`` each block
group gets ``lr * layer_decay ** depth``, depth counted from the head (timm's grouping)."""

from __future__ import annotations

import functools
import inspect
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

# torch's optimisers keep torch.compile out of their bookkeeping by importing torch._dynamo at
# their first call: add_param_group, zero_grad, state_dict and load_state_dict are wrapped in
# torch._disable_dynamo, and step calls torch._dynamo.graph_break(). That import is 1.2 s of one
# core at every training's start, and more at its exit, for a compiler that training never runs.
_DYNAMO_WRAPPED = ("add_param_group", "zero_grad", "state_dict", "load_state_dict")


@functools.cache
def eager(cls: type[torch.optim.Optimizer]) -> type[torch.optim.Optimizer]:
    """``cls`` with torch's dynamo wrappers taken off its step and bookkeeping: the same update to
    the bit, without importing torch._dynamo (a subclass: ``isinstance(opt, cls)`` holds). Where a
    torch release wraps them otherwise, ``inspect.unwrap`` finds nothing to take off and the
    class behaves as torch's own."""
    raw_step = inspect.unwrap(cls.step)

    @functools.wraps(raw_step)
    def step(self, closure=None):
        # What torch's wrapper sets: no autograd graph unless the optimiser is differentiable.
        with torch.set_grad_enabled(self.defaults.get("differentiable", False)):
            return raw_step(self, closure)

    methods = {name: inspect.unwrap(getattr(torch.optim.Optimizer, name)) for name in _DYNAMO_WRAPPED}
    return type(cls.__name__, (cls,), {**methods, "step": step, "__module__": __name__})


def _factory(cls: type[torch.optim.Optimizer], **defaults) -> OptimizerFactory:
    """A registry entry: ``cls`` without its dynamo wrappers, ``defaults`` under the recipe's kwargs."""
    return lambda groups, lr, kw: eager(cls)(groups, lr=lr, **{**defaults, **kw})


OPTIMIZERS: dict[str, OptimizerFactory] = {
    "adam": _factory(torch.optim.Adam),
    "adamw": _factory(torch.optim.AdamW),
    "sgd": _factory(torch.optim.SGD, momentum=0.9, nesterov=True),
    "rmsprop": _factory(torch.optim.RMSprop),
    "adadelta": _factory(torch.optim.Adadelta),
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
