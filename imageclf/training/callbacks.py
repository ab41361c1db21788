"""Learning-rate schedules, Keras' EarlyStopping / ReduceLROnPlateau, and weight EMA.

Each keeps its state in a plain dict (``state_dict`` / ``load_state_dict``) so a resumed
run continues exactly where it stopped.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from imageclf.recipes.schema import EarlyStopping, ReduceLROnPlateau


def _better(current: float, best: float | None, mode: str, delta: float) -> bool:
    if best is None or math.isnan(best):
        return not math.isnan(current)
    return current < best - delta if mode == "min" else current > best + delta


def monitor_mode(monitor: str) -> str:
    """Keras' 'auto' mode: losses are minimised, everything else maximised."""
    return "min" if "loss" in monitor else "max"


class _Monitor:
    """Tracks the best value of one logged metric and the epochs since it last improved."""

    def __init__(self, monitor: str, min_delta: float) -> None:
        self.monitor, self.min_delta = monitor, min_delta
        self.mode = monitor_mode(monitor)
        self.best: float | None = None
        self.wait = 0

    def _improved(self, logs: dict) -> bool:
        value = logs[self.monitor]
        if _better(value, self.best, self.mode, self.min_delta):
            self.best, self.wait = value, 0
            return True
        self.wait += 1
        return False


class EarlyStopper(_Monitor):
    """Stop after ``patience`` epochs without an improvement of ``monitor``."""

    def __init__(self, cfg: EarlyStopping) -> None:
        super().__init__(cfg.monitor, cfg.min_delta)
        self.cfg = cfg

    def update(self, logs: dict) -> bool:
        """Record an epoch; True when training should stop."""
        return not self._improved(logs) and self.wait >= self.cfg.patience

    def state_dict(self) -> dict:
        return {"best": self.best, "wait": self.wait}

    def load_state_dict(self, d: dict) -> None:
        self.best, self.wait = d["best"], d["wait"]


class PlateauReducer(_Monitor):
    """Keras' ReduceLROnPlateau: a multiplier on the learning rate, lowered on plateaus."""

    def __init__(self, cfg: ReduceLROnPlateau, base_lr: float) -> None:
        super().__init__(cfg.monitor, cfg.min_delta)
        self.cfg = cfg
        self.base_lr = base_lr
        self.factor = 1.0

    def update(self, logs: dict) -> bool:
        """Record an epoch; True when the learning rate was just reduced."""
        if self._improved(logs) or self.wait < self.cfg.patience:
            return False
        lr = self.base_lr * self.factor
        new_lr = max(lr * self.cfg.factor, self.cfg.min_lr)
        self.wait = 0
        if new_lr < lr:
            self.factor = new_lr / self.base_lr
            return True
        return False

    def state_dict(self) -> dict:
        return {"factor": self.factor, "best": self.best, "wait": self.wait}

    def load_state_dict(self, d: dict) -> None:
        self.factor, self.best, self.wait = d["factor"], d["best"], d["wait"]


def schedule_factor(name: str, progress: float, warmup: float) -> float:
    """The learning-rate multiplier at ``progress`` in [0, 1] of training (warm-up as a fraction).

    constant: 1. cosine: linear warm-up, then half a cosine down to 0. onecycle: linear
    warm-up from 1/25, then cosine down to 1/10,000 (torch's OneCycleLR shape).
    """
    if name == "constant":
        return 1.0 if warmup <= 0 or progress >= warmup else (progress + 1e-8) / warmup
    if name == "cosine":
        if progress < warmup:
            return (progress + 1e-8) / warmup
        t = (progress - warmup) / max(1e-8, 1 - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, t)))
    if name == "onecycle":
        w = warmup or 0.3
        if progress < w:
            return 1 / 25 + (1 - 1 / 25) * progress / w
        t = (progress - w) / max(1e-8, 1 - w)
        return 1e-4 + (1 - 1e-4) * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))
    raise ValueError(name)


SCHEDULES = ("constant", "cosine", "onecycle")


class ModelEma:
    """An exponential moving average of a model's weights (buffers copied as they are)."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()}
        self.updates = 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        # Warm-up as timm's ModelEmaV2 does: early averages follow the model closely.
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for k, v in model.state_dict().items():
            s = self.shadow[k]
            if v.dtype.is_floating_point:
                s.mul_(d).add_(v.detach(), alpha=1 - d)
            else:
                s.copy_(v)

    def copy_to(self, model: nn.Module) -> None:
        model.load_state_dict(self.shadow)
