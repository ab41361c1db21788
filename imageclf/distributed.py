"""Data-parallel helpers: one process per device under torchrun, or a plain single process.

Without an initialised process group every function is the identity, so the training
loop reads the same either way.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.distributed as td
from torch import nn


def is_distributed() -> bool:
    return td.is_available() and td.is_initialized()


def world_size() -> int:
    return td.get_world_size() if is_distributed() else 1


def rank() -> int:
    return td.get_rank() if is_distributed() else 0


def is_main() -> bool:
    return rank() == 0


def shard(index: np.ndarray) -> np.ndarray:
    """This rank's share of a global batch of indices."""
    return index[rank()::world_size()] if is_distributed() else index


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    if not is_distributed():
        return model
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
