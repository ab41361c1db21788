"""The one forward path from cached uint8 images to class probabilities.

Validation during training, ``evaluate``, ``predict`` and the server all come here, so a
probability means the same thing everywhere.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

from .images import Preprocessing
from .transforms import to_model_input


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA when present, else CPU; anything else is passed to torch."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def default_threads() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


def logits_to_probs(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """(N, 1) sigmoid logits -> (N, 2) [p0, p1]; (N, K) logits -> softmax."""
    logits = logits.float() / temperature
    if logits.shape[1] == 1:
        p1 = torch.sigmoid(logits[:, 0])
        return torch.stack([1 - p1, p1], 1)
    return torch.softmax(logits, 1)


def forward_probs(model: nn.Module, x: torch.Tensor, tta: Sequence[str] = (),
                  temperature: float = 1.0) -> torch.Tensor:
    """Probabilities for a normalised batch, averaged over test-time flips when asked."""
    use_amp = x.device.type == "cuda"
    views = [x] + [x.flip(3) for t in tta if t == "hflip"] + [x.flip(2) for t in tta if t == "vflip"]
    total = None
    for view in views:
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_amp):
            logits = model(view)
        p = logits_to_probs(logits, temperature)
        total = p if total is None else total + p
    return total / len(views)


@torch.inference_mode()
def predict_probs(
    model: nn.Module,
    images,
    pre: Preprocessing,
    *,
    device: torch.device,
    batch_size: int = 128,
    tta: Sequence[str] = (),
    temperature: float = 1.0,
    channels_last: bool = True,
    on_batch: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Class probabilities (N, K) for (N, H, W, C) uint8 images (array or disk cache)."""
    model.eval()
    out = []
    for start in range(0, len(images), batch_size):
        batch = torch.from_numpy(np.ascontiguousarray(images[start:start + batch_size]))
        batch = batch.to(device, non_blocking=True)
        x = to_model_input(batch, pre.mean, pre.std)
        if not channels_last:
            x = x.contiguous()
        out.append(forward_probs(model, x, tta, temperature).cpu())
        if on_batch:
            on_batch(len(batch))
    if not out:
        return np.zeros((0, 2), np.float32)
    return torch.cat(out).numpy()
