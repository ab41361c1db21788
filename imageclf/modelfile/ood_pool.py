"""How a network's head input is averaged down before its OOD distances are taken.

A dense head on flattened convolution maps sees many values (mnist-basic's: 18,432 = 32 maps
of 24 x 24); a covariance of them all would be 1.4 GB and take minutes. Such an input is the
flattening of a (C, H, W) map, so it is averaged over k x k blocks of each channel, the smallest
k that leaves at most ``GRID_CAP`` values: on mnist-basic 512 values (k = 6) told every far-off
kind from Fashion-MNIST at least as well as the 2,048 runs of 9 consecutive values models before
it used, for a fifth of the score's work (BENCHMARKS.md, "Out of distribution"). A wide input
that is not a map's flattening is averaged in runs of consecutive values down to ``FEATURE_CAP``,
as before; inputs no wider than ``FEATURE_CAP`` are scored as they are.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from imageclf.core.errors import ConfigError

FEATURE_CAP = 2048  # a wider head input is pooled; a run pooling keeps at most this many values
GRID_CAP = 512  # and a block pooling of a flattened map at most this many


@dataclass(frozen=True)
class FeaturePool:
    """``size`` consecutive values averaged into one; with ``grid`` (C, H, W), the map the input
    flattens, ``size`` x ``size`` blocks of each channel instead. Both zero-pad a short last run
    or block (the mean counts the padding), so every runtime computes the same mean."""

    size: int = 1
    grid: tuple[int, int, int] | None = None

    def __post_init__(self) -> None:
        if self.size < 1 or (self.grid is not None and (len(self.grid) != 3 or min(self.grid) < 1)):
            raise ConfigError(f"not a feature pooling: size {self.size}, grid {self.grid}")

    def pooled_width(self, width: int) -> int:
        """Values left of an input of ``width``."""
        if self.grid is None:
            return -(-width // self.size)
        c, h, w = self.grid
        return c * -(-h // self.size) * -(-w // self.size)

    def fits(self, width: int) -> bool:
        """Whether an input of ``width`` values is what this pooling was made for."""
        return self.grid is None or math.prod(self.grid) == width

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """(N, D) -> (N, pooled_width(D))."""
        if self.size <= 1:
            return x
        if self.grid is not None:
            c, h, w = self.grid
            maps = x.reshape(x.shape[0], c, h, w)
            pad_h, pad_w = (-h) % self.size, (-w) % self.size
            if pad_h or pad_w:
                maps = nn.functional.pad(maps, (0, pad_w, 0, pad_h))
            return nn.functional.avg_pool2d(maps, self.size).flatten(1)
        pad = (-x.shape[1]) % self.size
        if pad:
            x = nn.functional.pad(x, (0, pad))
        # A product with a column of ones: 50x faster on CPU than a mean over a short last axis.
        ones = torch.ones(self.size, 1, dtype=x.dtype, device=x.device)
        return (x.reshape(-1, self.size) @ ones).reshape(x.shape[0], -1) / self.size

    def label(self) -> str:
        """How a table names it: ``6x6 blocks``, ``runs of 9``, ``none``."""
        if self.size <= 1:
            return "none"
        return f"{self.size}x{self.size} blocks" if self.grid else f"runs of {self.size}"

    def to_field(self) -> dict:
        """What a part in config.json's ``ood`` field records of it."""
        return {"pool": self.size, **({"grid": list(self.grid)} if self.grid else {})}

    @classmethod
    def from_field(cls, part: dict) -> FeaturePool:
        grid = part.get("grid")
        return cls(int(part.get("pool", 1)), tuple(int(v) for v in grid) if grid else None)


def pool_features(x: torch.Tensor, pool: int | FeaturePool) -> torch.Tensor:
    """(N, D) -> the pooled (N, D'): runs of ``pool`` consecutive values, or a :class:`FeaturePool`'s."""
    return (pool if isinstance(pool, FeaturePool) else FeaturePool(int(pool)))(x)


def feature_pool(width: int, cap: int = FEATURE_CAP, grid: tuple[int, int, int] | None = None,
                 grid_cap: int = GRID_CAP) -> FeaturePool:
    """The pooling of a head input of ``width`` values: none up to ``cap``; past it, blocks of the
    map ``grid`` (the (C, H, W) the input flattens, when known) down to ``grid_cap`` values (a
    global average if its channels alone are more), else runs down to ``cap``."""
    if cap < 1 or grid_cap < 1:
        raise ConfigError(f"the OOD feature caps must be at least 1, got {cap} and {grid_cap}")
    if width <= cap:
        return FeaturePool()
    if grid is not None and math.prod(grid) == width and grid[0] <= cap:
        side = max(grid[1:])
        fits = (k for k in range(1, side + 1) if FeaturePool(k, grid).pooled_width(width) <= grid_cap)
        return FeaturePool(next(fits, side), tuple(grid))
    return FeaturePool(-(-width // cap))


def flattened_map(network: nn.Module, head: nn.Module, x: torch.Tensor) -> tuple[int, int, int] | None:
    """The (C, H, W) map whose flattening ``head`` sees in ``network(x)``, or None (its input is
    not a flattened map: a global pool's, a hidden dense layer's)."""
    shapes: list[tuple[int, ...]] = []
    width: list[int] = []
    flattens = [m for m in network.modules() if isinstance(m, nn.Flatten)]
    handles = [m.register_forward_hook(lambda _m, inputs, _out: shapes.append(tuple(inputs[0].shape)))
               for m in flattens]
    handles.append(head.register_forward_hook(lambda _m, inputs, _out: width.append(inputs[0][0].numel())))
    try:
        with torch.no_grad():
            network(x)
    finally:
        for h in handles:
            h.remove()
    if not width:  # the head did not run on this input
        return None
    maps = [s[1:] for s in shapes if len(s) == 4 and math.prod(s[1:]) == width[-1]]
    return tuple(int(v) for v in maps[-1]) if maps else None
