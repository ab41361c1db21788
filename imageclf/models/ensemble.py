"""The ``ensemble`` architecture: several member networks whose probabilities are averaged.

Built from ``config.architecture_kwargs["members"]``; the model folder that holds one is
written by :func:`imageclf.modelfile.ensemble.build_ensemble`.
"""

from __future__ import annotations

import torch
from torch import nn

from imageclf.core.errors import ConfigError
from imageclf.models.registry import create_model, register_model


class EnsembleNet(nn.Module):
    """Mean of the members' probabilities, returned as logits (what the inference path expects)."""

    def __init__(self, members: list[nn.Module], temperatures: list[float], binary: bool) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)
        self.temperatures = list(temperatures)
        self.binary = binary

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        total = None
        for member, t in zip(self.members, self.temperatures):
            logits = member(x).float() / t
            p = torch.sigmoid(logits) if self.binary else torch.softmax(logits, 1)
            total = p if total is None else total + p
        p = (total / len(self.members)).clamp(1e-7, 1 - 1e-7)
        # log(p) - log(1 - p) rather than torch.logit: every exporter knows log.
        return torch.log(p) - torch.log1p(-p) if self.binary else torch.log(p)


@register_model(family="ensemble")
def ensemble(in_channels: int, num_outputs: int, img_size: tuple[int, int],
             members: list[dict] = ()) -> nn.Module:
    """Average of member networks (architecture_kwargs members: [{architecture, architecture_kwargs}])."""
    if not members:
        raise ConfigError("an ensemble needs at least one member (architecture_kwargs.members)")
    nets, temps = [], []
    for i, m in enumerate(members):
        if not isinstance(m, dict) or "architecture" not in m:
            raise ConfigError(f"ensemble member {i} must name its 'architecture'")
        nets.append(create_model(m["architecture"], in_channels, num_outputs, img_size,
                                 **m.get("architecture_kwargs", {})))
        temps.append(float(m.get("temperature", 1.0)))
    return EnsembleNet(nets, temps, binary=num_outputs == 1)
