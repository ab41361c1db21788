"""Start a network from pretrained weights (``--pretrained``); nothing is ever downloaded.

``--pretrained`` names either weights in the registry (``imagenet``: the ones registered for
the recipe's architecture; or a full name such as ``efficientnet_lite0.imagenet``, see
:mod:`imageclf.models.weights`), which come from an installed package, or a local file.
Either way, what the model started from (name or file, sha256, licence) is recorded in its
config.json.

A file is a plain state_dict: ``.safetensors`` (preferred), or ``.pth`` / ``.pt`` /
``.bin`` read with ``torch.load(weights_only=True)``, which refuses pickled code. A
checkpoint that wraps the state_dict under ``state_dict`` / ``model`` / ``model_state``
is unwrapped, and ``module.`` / ``model.`` / ``_orig_mod.`` name prefixes are dropped.

Tensors are matched by name. One whose shape differs only in its input channels (the
first convolution of an RGB network for a 1-channel model) is adapted: the kernels are
averaged over the source channels and spread over the target ones, so an RGB kernel
becomes the sum of its three colour kernels for gray input (the same response as a gray
image copied into R, G and B). Any other shape mismatch (the 1000-class head, a 7x7 stem
for a 3x3 one) keeps the fresh initialisation and is reported.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from imageclf.core.errors import ConfigError
from imageclf.core.io import file_sha256
from imageclf.models.weights import (
    get_weights_source,
    list_weights,
    provenance,
    resolve_weights,
    weights_for,
)

PREFIXES = ("module.", "_orig_mod.", "model.")
WRAPPERS = ("state_dict", "model", "model_state", "model_state_dict", "net")
# Below this share of the model's weights found in the file, it is not a file for this model.
MIN_LOADED_FRACTION = 0.5


@dataclass
class PretrainedReport:
    """What ``load_pretrained`` did, tensor by tensor name."""

    path: str
    loaded: list[str] = field(default_factory=list)
    adapted: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    unused: list[str] = field(default_factory=list)

    def summary(self) -> str:
        n = len(self.loaded) + len(self.adapted) + len(self.kept)
        parts = [f"pretrained {self.path}: loaded {len(self.loaded) + len(self.adapted)} of {n} tensors"]
        if self.adapted:
            parts.append(f"adapted to the input channels: {', '.join(self.adapted)}")
        if self.kept:
            shown = ", ".join(self.kept[:6]) + (" ..." if len(self.kept) > 6 else "")
            parts.append(f"kept at initialisation: {shown}")
        if self.unused:
            parts.append(f"{len(self.unused)} tensors of the file unused")
        return "; ".join(parts)


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a weights file, names cleaned of wrapper prefixes."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"{path}: pretrained weights file not found")
    try:
        if path.suffix.lower() == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle, zip and safetensors errors all mean: not a usable file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"{path}: not a weights file that can be read safely ({first})") from None
    for key in WRAPPERS:
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not state:
        raise ConfigError(f"{path}: expected a state_dict (a mapping of names to tensors)")
    tensors = {}
    for name, value in state.items():
        if not torch.is_tensor(value):
            continue
        for prefix in PREFIXES:
            if name.startswith(prefix):
                name = name[len(prefix):]
        tensors[name] = value
    if not tensors:
        raise ConfigError(f"{path}: holds no tensors")
    return tensors


def adapt_channels(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """A conv kernel (out, c, kh, kw) for ``in_channels`` inputs: mean over c, spread evenly.

    3 -> 1 gives the sum of the RGB kernels; 1 -> 3 a third of the kernel in each channel.
    """
    c = weight.shape[1]
    return weight.mean(1, keepdim=True).repeat(1, in_channels, 1, 1) * (c / in_channels)


def load_pretrained(model: nn.Module, path: str | Path) -> PretrainedReport:
    """Copy matching tensors of ``path`` into ``model`` (in place); see the module docstring."""
    source = read_state_dict(path)
    target = model.state_dict()
    report = PretrainedReport(str(path))
    new_state = {}
    for name, current in target.items():
        src = source.get(name)
        if name.endswith("num_batches_tracked"):
            continue  # BatchNorm's step counter, not a weight: files may or may not carry it
        if src is None:
            report.kept.append(name)
            continue
        if tuple(src.shape) == tuple(current.shape):
            new_state[name] = src.to(current.dtype)
            report.loaded.append(name)
        elif (src.ndim == 4 and current.ndim == 4 and src.shape[0] == current.shape[0]
              and src.shape[2:] == current.shape[2:]):
            new_state[name] = adapt_channels(src.float(), current.shape[1]).to(current.dtype)
            report.adapted.append(name)
        else:
            report.kept.append(name)
    report.unused = sorted(set(source) - set(target))
    total = sum(t.numel() for t in target.values() if t.dtype.is_floating_point)
    found = sum(target[n].numel() for n in new_state if target[n].dtype.is_floating_point)
    if total and found / total < MIN_LOADED_FRACTION:
        raise ConfigError(
            f"{path}: only {len(new_state)} of {len(target)} tensors ({found / total:.0%} of the weights) "
            f"fit this model; is it a weights file for this architecture? "
            f"(first names in the file: {', '.join(list(source)[:3])})")
    model.load_state_dict(new_state, strict=False)
    return report


def resolve_pretrained(spec: str, model: str) -> tuple[Path, dict[str, str]]:
    """(the weights file, its provenance) for ``--pretrained spec`` on architecture ``model``.

    ``imagenet`` and registered names resolve to the converted file in the weights cache
    (:func:`imageclf.models.weights.resolve_weights`); anything else is a local file, recorded
    by its path and sha256.
    """
    if spec == "imagenet" or spec in list_weights():
        source = weights_for(model) if spec == "imagenet" else get_weights_source(spec)
        return resolve_weights(source.name), provenance(source)
    path = Path(spec).expanduser()
    if not path.is_file():
        raise ConfigError(f"{spec}: pretrained weights file not found (or give 'imagenet' or one of: "
                          f"{', '.join(list_weights())})")
    return path, {"file": str(path), "sha256": file_sha256(path)}
