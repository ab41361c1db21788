"""Penultimate-layer features ("embeddings") of any network: what its last linear layer sees.

Every architecture in the registry ends in an ``nn.Linear`` head (the seed CNNs' Dense, timm's
classifier), so one forward hook on its input gives the features for all of them: for a
linear probe (:mod:`imageclf.training.probe`), ``imageclf embed``, and near-duplicate search
in feature space. Test-time flips, when asked, are averaged as the forward path averages
probabilities.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

from imageclf.core.errors import ConfigError
from imageclf.data.images import Preprocessing
from imageclf.data.transforms import batch_input, tta_views


def head_layer(network: nn.Module) -> nn.Linear:
    """The network's last ``nn.Linear`` (in registration order): the classifier head."""
    linears = [m for m in network.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ConfigError(f"{type(network).__name__} has no linear head to take features from")
    return linears[-1]


@torch.inference_mode()
def embed_arrays(network: nn.Module, images, pre: Preprocessing, *, device: torch.device,
                 batch_size: int = 64, tta: Sequence[str] = (), channels_last: bool = True,
                 on_batch: Callable[[int], None] | None = None) -> np.ndarray:
    """Features (N, D) float32 for (N, H, W, C) uint8 images (array or disk cache)."""
    head = head_layer(network)
    captured: list[torch.Tensor] = []
    handle = head.register_forward_hook(lambda _m, inputs, _out: captured.append(inputs[0]))
    network.eval()
    out = []
    try:
        for start in range(0, len(images), batch_size):
            x = batch_input(images[start:start + batch_size], pre, device, channels_last)
            views = tta_views(x, tta)
            total = None
            for view in views:
                captured.clear()
                network(view)
                feats = captured[-1].float().flatten(1)
                total = feats if total is None else total + feats
            out.append((total / len(views)).cpu())
            if on_batch:
                on_batch(len(x))
    finally:
        handle.remove()
    if not out:
        return np.zeros((0, head.in_features), np.float32)
    return torch.cat(out).numpy()
