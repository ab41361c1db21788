"""Batched augmentation and normalisation as tensor ops (CPU or GPU), ImageDataGenerator's meaning.

One random affine matrix per image (rotation, shift, shear, zoom, flips) is composed the
way Keras composes it and applied to the whole batch with one ``grid_sample``; brightness,
contrast and random erasing are elementwise. Evaluation and prediction call
:func:`to_model_input` only: no augmentation, ever.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields

import numpy as np
import torch
import torch.nn.functional as F

from imageclf.core.errors import ConfigError
from imageclf.data.images import Preprocessing

FILL_MODES = {"nearest": "border", "reflect": "reflection", "constant": "zeros", "wrap": "zeros"}


@dataclass
class Augment:
    """Augmentation settings, named and measured as in Keras' ImageDataGenerator.

    rotation: degrees, uniform in [-rotation, rotation]. width_shift / height_shift:
    fraction of the size. shear: degrees (Keras' shear_range). zoom: z gives a scale
    uniform in [1 - z, 1 + z] per axis. brightness: (low, high) multiplier, as Keras'
    brightness_range. contrast: c scales contrast by a factor in [1 - c, 1 + c].
    fill_mode: nearest, reflect, constant (with cval in [0, 1]) or wrap.
    erasing: probability of blanking one random rectangle (2-33 % of the image).
    """

    rotation: float = 0.0
    width_shift: float = 0.0
    height_shift: float = 0.0
    shear: float = 0.0
    zoom: float = 0.0
    horizontal_flip: bool = False
    vertical_flip: bool = False
    brightness: tuple[float, float] | None = None
    contrast: float = 0.0
    fill_mode: str = "nearest"
    cval: float = 0.0
    erasing: float = 0.0

    def __post_init__(self) -> None:
        if self.fill_mode not in FILL_MODES:
            raise ConfigError(f"fill_mode must be one of {', '.join(FILL_MODES)}, got {self.fill_mode!r}")
        if self.brightness is not None:
            self.brightness = tuple(float(b) for b in self.brightness)
            if len(self.brightness) != 2 or self.brightness[0] > self.brightness[1]:
                raise ConfigError(f"brightness must be (low, high), got {self.brightness}")
        if not 0.0 <= self.zoom < 1.0:
            raise ConfigError(f"zoom must be in [0, 1), got {self.zoom}")

    @property
    def geometric(self) -> bool:
        return bool(self.rotation or self.width_shift or self.height_shift or self.shear
                    or self.zoom or self.horizontal_flip or self.vertical_flip)

    @property
    def flips_only(self) -> bool:
        """Only flips among the geometric settings: a mirror, no resampling needed."""
        return not (self.rotation or self.width_shift or self.height_shift or self.shear or self.zoom)

    @property
    def active(self) -> bool:
        return self.geometric or self.brightness is not None or bool(self.contrast or self.erasing)

    def to_dict(self) -> dict:
        d = asdict(self)
        if d["brightness"] is not None:
            d["brightness"] = list(d["brightness"])
        return d

    @classmethod
    def from_dict(cls, d: dict | None) -> Augment:
        d = dict(d or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown augmentation settings {unknown} (known: {sorted(known)})")
        return cls(**d)


def _uniform(n: int, lo: float, hi: float, g: torch.Generator, device) -> torch.Tensor:
    return torch.rand(n, generator=g, device=device) * (hi - lo) + lo


def affine_matrices(n: int, h: int, w: int, aug: Augment, g: torch.Generator, device) -> torch.Tensor:
    """(n, 2, 3) matrices for ``F.affine_grid``: output coords -> input coords, normalised.

    Built in pixel units about the image centre (so rotations stay rotations on
    non-square images), composed as Keras does: rotation @ shift @ shear @ zoom.
    """
    one, zero = torch.ones(n, device=device), torch.zeros(n, device=device)
    theta = torch.deg2rad(_uniform(n, -aug.rotation, aug.rotation, g, device)) if aug.rotation else zero
    rot = torch.stack([torch.cos(theta), -torch.sin(theta), torch.sin(theta), torch.cos(theta)], 1)
    shear = torch.deg2rad(_uniform(n, -aug.shear, aug.shear, g, device)) if aug.shear else zero
    sh = torch.stack([one, -torch.sin(shear), zero, torch.cos(shear)], 1)
    if aug.zoom:
        zx = _uniform(n, 1 - aug.zoom, 1 + aug.zoom, g, device)
        zy = _uniform(n, 1 - aug.zoom, 1 + aug.zoom, g, device)
    else:
        zx = zy = one
    if aug.horizontal_flip:
        zx = zx * torch.where(torch.rand(n, generator=g, device=device) < 0.5, -1.0, 1.0)
    if aug.vertical_flip:
        zy = zy * torch.where(torch.rand(n, generator=g, device=device) < 0.5, -1.0, 1.0)
    zm = torch.stack([zx, zero, zero, zy], 1)
    lin = (rot.view(n, 2, 2) @ sh.view(n, 2, 2) @ zm.view(n, 2, 2))
    tx = _uniform(n, -aug.width_shift, aug.width_shift, g, device) * w if aug.width_shift else zero
    ty = _uniform(n, -aug.height_shift, aug.height_shift, g, device) * h if aug.height_shift else zero
    # Pixel space -> normalised space: x_norm = x_pix / (w / 2).
    scale = torch.tensor([w / 2, h / 2], device=device)
    lin = lin / scale.view(1, 2, 1) * scale.view(1, 1, 2)
    shift = torch.stack([tx / (w / 2), ty / (h / 2)], 1)
    return torch.cat([lin, shift.unsqueeze(2)], 2)


def _warp(x: torch.Tensor, matrices: torch.Tensor, aug: Augment) -> torch.Tensor:
    grid = F.affine_grid(matrices.to(x.dtype), list(x.shape), align_corners=False)
    if aug.fill_mode == "wrap":
        grid = torch.remainder(grid + 1, 2) - 1
    if aug.fill_mode == "constant" and aug.cval:
        return F.grid_sample(x - aug.cval, grid, "bilinear", "zeros", align_corners=False) + aug.cval
    return F.grid_sample(x, grid, "bilinear", FILL_MODES[aug.fill_mode], align_corners=False)


def _flip(x: torch.Tensor, aug: Augment, g: torch.Generator) -> torch.Tensor:
    """Random mirrors without grid_sample, drawing the same random numbers affine_matrices does."""
    n = x.shape[0]
    for on, dim in ((aug.horizontal_flip, 3), (aug.vertical_flip, 2)):
        if on:
            chosen = torch.rand(n, generator=g, device=x.device) < 0.5
            x = torch.where(chosen.view(n, 1, 1, 1), x.flip(dim), x)
    return x


def _erase(x: torch.Tensor, p: float, g: torch.Generator) -> torch.Tensor:
    n, _, h, w = x.shape
    dev = x.device
    area = _uniform(n, 0.02, 0.33, g, dev) * h * w
    ratio = torch.exp(_uniform(n, math.log(0.3), math.log(3.3), g, dev))
    eh = torch.sqrt(area * ratio).clamp(1, h)
    ew = torch.sqrt(area / ratio).clamp(1, w)
    y0 = torch.rand(n, generator=g, device=dev) * (h - eh)
    x0 = torch.rand(n, generator=g, device=dev) * (w - ew)
    on = torch.rand(n, generator=g, device=dev) < p
    ys = torch.arange(h, device=dev).view(1, h, 1)
    xs = torch.arange(w, device=dev).view(1, 1, w)
    box = ((ys >= y0.view(n, 1, 1)) & (ys < (y0 + eh).view(n, 1, 1))
           & (xs >= x0.view(n, 1, 1)) & (xs < (x0 + ew).view(n, 1, 1)) & on.view(n, 1, 1))
    return x.masked_fill(box.unsqueeze(1), 0.0)


def augment(x: torch.Tensor, aug: Augment, g: torch.Generator) -> torch.Tensor:
    """Randomly transform a float batch (N, C, H, W) in [0, 1]; returns values in [0, 1]."""
    if not aug.active:
        return x
    n, _, h, w = x.shape
    if aug.geometric and aug.flips_only:
        x = _flip(x, aug, g)
    elif aug.geometric:
        x = _warp(x, affine_matrices(n, h, w, aug, g, x.device), aug)
    if aug.brightness is not None:
        x = x * _uniform(n, *aug.brightness, g, x.device).view(n, 1, 1, 1)
    if aug.contrast:
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = (x - mean) * _uniform(n, 1 - aug.contrast, 1 + aug.contrast, g, x.device).view(n, 1, 1, 1) + mean
    x = x.clamp_(0.0, 1.0)
    if aug.erasing:
        x = _erase(x, aug.erasing, g)
    return x


def to_float(batch_uint8: torch.Tensor) -> torch.Tensor:
    """(N, H, W, C) uint8 -> (N, C, H, W) float in [0, 1], kept in channels-last memory."""
    return batch_uint8.permute(0, 3, 1, 2).float().div_(255.0)


def normalize(x: torch.Tensor, mean: tuple[float, ...] | None, std: tuple[float, ...] | None) -> torch.Tensor:
    """Subtract mean and divide by std per channel (no-op when the recipe has none)."""
    if mean is None:
        return x
    m = torch.tensor(mean, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
    s = torch.tensor(std, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
    return (x - m) / s


def to_model_input(batch_uint8: torch.Tensor, mean=None, std=None) -> torch.Tensor:
    """The deterministic path from cached uint8 pixels to model input (evaluate, predict)."""
    return normalize(to_float(batch_uint8), mean, std)


def batch_input(images, pre: Preprocessing, device: torch.device, channels_last: bool = True) -> torch.Tensor:
    """(N, H, W, C) uint8 images (array or disk-cache slice) as the model's normalised input on
    ``device``; channels-last memory (what the permute from NHWC gives) unless asked otherwise."""
    arr = np.ascontiguousarray(images)
    if not arr.flags.writeable:  # torch warns on read-only arrays; a uint8 copy costs little
        arr = arr.copy()
    batch = torch.from_numpy(arr).to(device, non_blocking=True)
    x = to_model_input(batch, pre.mean, pre.std)
    return x if channels_last else x.contiguous()


def tta_views(x: torch.Tensor, tta: Sequence[str]) -> list[torch.Tensor]:
    """The batch itself, then its test-time flips in the order ``tta`` names them by kind."""
    return [x] + [x.flip(3) for t in tta if t == "hflip"] + [x.flip(2) for t in tta if t == "vflip"]
