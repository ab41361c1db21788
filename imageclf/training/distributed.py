"""Data-parallel training: one process per device under torchrun or ``imageclf train --nproc N``.

Without an initialised process group every function is the identity, so the training
loop reads the same either way. :func:`setup` joins the group that ``torchrun`` (or
:func:`launch`) describes in the environment: gloo on CPU, NCCL on CUDA, one GPU per
local rank. The loop then gives each rank its share of every global batch
(:func:`shard`), scales each rank's loss so DistributedDataParallel's gradient average
equals the single-process gradient of the whole batch, all-reduces the epoch's metric
sums, and lets only rank 0 write files and print.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Callable, Iterator

import numpy as np
import torch
import torch.distributed as td
from torch import nn

from imageclf.core.errors import ImageclfError


def is_distributed() -> bool:
    return td.is_available() and td.is_initialized()


def world_size() -> int:
    return td.get_world_size() if is_distributed() else 1


def rank() -> int:
    return td.get_rank() if is_distributed() else 0


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0")) if is_distributed() else 0


def is_main() -> bool:
    return rank() == 0


def requested() -> bool:
    """True when the environment describes a group of more than one process (torchrun's)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def setup(device: torch.device) -> torch.device:
    """Join the process group the environment describes; returns this rank's device.

    A no-op (returning ``device``) for a single process or when already joined.
    """
    if not requested() or not td.is_available():
        return device
    lr = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", lr)
        torch.cuda.set_device(device)
    if not td.is_initialized():
        td.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device


def cleanup() -> None:
    if is_distributed():
        td.destroy_process_group()


def shard(index: np.ndarray) -> np.ndarray:
    """This rank's share of a global batch of indices (ranks differ by at most one image)."""
    return index[rank()::world_size()] if is_distributed() else index


def wrap(model: nn.Module, device: torch.device, find_unused: bool = False) -> nn.Module:
    """``model`` under DDP when this is a distributed run; ``find_unused``: some parameters may
    get no gradient in a step (frozen while the head trains alone)."""
    if not is_distributed():
        return model
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids, find_unused_parameters=find_unused)


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def loss_scale(global_batch: int) -> float:
    """Turn a rank's loss *sum* into its share of the global mean.

    DDP averages gradients over ranks; summing per rank, multiplying by world / global
    batch, makes that average exactly the gradient of the global batch's mean loss, even
    when the ranks hold unequal shares of the last batch.
    """
    return world_size() / max(1, global_batch)


def all_reduce_sum(x: torch.Tensor) -> torch.Tensor:
    """The sum of ``x`` over ranks (a new tensor; ``x`` itself is left alone)."""
    if not is_distributed():
        return x
    y = x.detach().clone()
    td.all_reduce(y)
    return y


def all_gather_rows(x: np.ndarray) -> np.ndarray:
    """Concatenate every rank's rows (rank order); shards may differ in length."""
    if not is_distributed():
        return x
    parts: list = [None] * world_size()
    td.all_gather_object(parts, x)
    filled = [p for p in parts if len(p)]  # an empty shard's (0, 2) would not stack with (n, K)
    return np.concatenate(filled) if filled else x


def broadcast_flag(flag: bool) -> bool:
    """Rank 0's decision, on every rank (early stopping: all ranks stop together)."""
    if not is_distributed():
        return flag
    t = torch.tensor([1 if flag else 0], dtype=torch.int64)
    if td.get_backend() == "nccl":
        t = t.cuda()
    td.broadcast(t, 0)
    return bool(t.item())


def barrier() -> None:
    if is_distributed():
        td.barrier()


@contextlib.contextmanager
def local_main_first() -> Iterator[None]:
    """Local rank 0 runs the body first (it fills the disk cache); the others then find it."""
    if not is_distributed():
        yield
        return
    if local_rank() != 0:
        td.barrier()
    yield
    if local_rank() == 0:
        td.barrier()


def contiguous_shard(n: int) -> slice:
    """This rank's contiguous block of ``n`` items (validation is split this way)."""
    per = -(-n // world_size())
    return slice(min(n, rank() * per), min(n, (rank() + 1) * per))


# ---------------------------------------------------------------- launching N local processes

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _UserError(Exception):
    """A worker's ImageclfError, carried to the launching process as text."""


def _worker(local: int, fn: Callable, args: tuple, kwargs: dict, nproc: int, port: int,
            threads: int) -> None:

    os.environ.update({"RANK": str(local), "LOCAL_RANK": str(local), "WORLD_SIZE": str(nproc),
                       "LOCAL_WORLD_SIZE": str(nproc), "MASTER_ADDR": "127.0.0.1",
                       "MASTER_PORT": str(port)})
    torch.set_num_threads(threads)
    try:
        fn(*args, **kwargs)
    except ImageclfError as exc:
        raise _UserError(str(exc)) from None
    finally:
        cleanup()


def launch(nproc: int, fn: Callable, *args, **kwargs) -> None:
    """Run ``fn(*args, **kwargs)`` in ``nproc`` fresh local processes forming one group.

    What ``torchrun --standalone --nproc_per_node N`` does, from Python: each process
    gets RANK / LOCAL_RANK / WORLD_SIZE / MASTER_* and an equal share of the CPU cores
    (torch threads), so N processes do not oversubscribe the machine.
    """
    import torch.multiprocessing as tmp

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    threads = max(1, cores // nproc)
    # Set before the children start so their OpenMP pools are sized right from the first op.
    old = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = str(threads)
    try:
        tmp.start_processes(_worker, args=(fn, args, kwargs, nproc, free_port(), threads),
                            nprocs=nproc, join=True, start_method="spawn")
    except tmp.ProcessRaisedException as exc:
        marker = f"{_UserError.__name__}: "
        text = str(exc)
        if marker in text:  # a user error (bad data, bad setting): its one line, as without --nproc

            raise ImageclfError(text.rsplit(marker, 1)[1].strip()) from None
        raise
    finally:
        if old is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = old
