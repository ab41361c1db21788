"""Training checkpoints: every tensor in one safetensors file, the rest as JSON in its header.

One file, written atomically, so a kill at any moment leaves the previous checkpoint or
the new one; there is no pair of files that could disagree. No pickle anywhere.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from imageclf.core.errors import ImageclfError
from imageclf.core.io import atomic_save_safetensors
from imageclf.modelfile.artifact import CHECKPOINT_FILE


def _flatten_optimizer(state: dict, tensors: dict[str, torch.Tensor]) -> dict:
    """Move an optimizer state_dict's tensors into ``tensors``; return the JSON rest."""
    plain: dict[str, dict] = {}
    for idx, entry in state["state"].items():
        plain[str(idx)] = {}
        for key, value in entry.items():
            if torch.is_tensor(value):
                tensors[f"optim/{idx}/{key}"] = value.detach().cpu().contiguous()
            else:
                plain[str(idx)][key] = value
    return {"state": plain, "param_groups": state["param_groups"]}


def _equal_groups(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    """The same names, each tensor equal in dtype, shape and every value (tensors on one device)."""
    return a.keys() == b.keys() and all(a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]) for k in a)


def _unflatten_optimizer(meta: dict, tensors: dict[str, torch.Tensor]) -> dict:
    state: dict[int, dict] = {int(i): dict(v) for i, v in meta["state"].items()}
    for name, value in tensors.items():
        if name.startswith("optim/"):
            _, idx, key = name.split("/", 2)
            state.setdefault(int(idx), {})[key] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def save_checkpoint(
    run_dir: Path,
    *,
    model: dict[str, torch.Tensor],
    optimizer: dict,
    extra_tensors: dict[str, dict[str, torch.Tensor]],
    meta: dict[str, Any],
) -> Path:
    """Write model, optimizer, named extra state dicts (EMA, best weights, RNG) and ``meta``.

    An extra group equal to one written before it (the best weights at the end of the epoch that
    made them best: the model's own) is written once, and named in ``meta["same_as"]``: a quarter
    less to write for a model trained with Adam, every epoch that improves.
    """
    written: dict[str, dict[str, torch.Tensor]] = {}
    same_as: dict[str, str] = {}
    for group, state in {"model": model, **extra_tensors}.items():
        # On the CPU once: what is compared is what is written (a GPU model is copied once).
        state = {k: v.detach().cpu().contiguous() for k, v in state.items()}
        twin = next((name for name, other in written.items() if _equal_groups(state, other)), None)
        if twin is None:
            written[group] = state
        else:
            same_as[group] = twin
    tensors = {f"{group}/{k}": v for group, state in written.items() for k, v in state.items()}
    meta = dict(meta, optimizer=_flatten_optimizer(optimizer, tensors), same_as=same_as)
    path = run_dir / CHECKPOINT_FILE
    header = {"imageclf_checkpoint": json.dumps(meta)}
    atomic_save_safetensors(path, tensors, header)
    return path


def checkpoint_meta(run_dir: Path) -> dict | None:
    """A checkpoint's JSON part alone (no tensors read); None when there is none or it is unreadable."""
    path = run_dir / CHECKPOINT_FILE
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            return json.loads(f.metadata()["imageclf_checkpoint"])
    except Exception:
        return None


def load_checkpoint(run_dir: Path) -> tuple[dict[str, dict[str, torch.Tensor]], dict, dict]:
    """Read a checkpoint: (tensor groups by prefix, optimizer state_dict, meta)."""
    path = run_dir / CHECKPOINT_FILE
    if not path.is_file():
        raise ImageclfError(f"{run_dir}: no {CHECKPOINT_FILE} to resume from")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads(f.metadata()["imageclf_checkpoint"])
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not iterable)
    except Exception as exc:
        raise ImageclfError(f"{path}: unreadable checkpoint ({exc})") from None
    groups: dict[str, dict[str, torch.Tensor]] = {}
    for name, value in tensors.items():
        group, key = name.split("/", 1)
        if group != "optim":
            groups.setdefault(group, {})[key] = value
    for group, twin in meta.pop("same_as", {}).items():
        # Copies: the twin is loaded into weights that train on (an EMA shadow is this very dict).
        groups[group] = {k: v.clone() for k, v in groups[twin].items()}
    optimizer = _unflatten_optimizer(meta.pop("optimizer"), tensors)
    return groups, optimizer, meta


def match_state_layouts(optimizer: torch.optim.Optimizer) -> None:
    """Each optimizer state tensor (Adam's moments) in its parameter's memory layout again.

    A checkpoint stores them contiguous; a channels-last convolution weight's moments then come
    back in another layout than the weight's. The elementwise update gives the same numbers
    either way, but a fused kernel (:data:`imageclf.training.optim.FUSED`) walks the buffers
    side by side and would pair each weight with another one's moments.
    """
    for param, entry in optimizer.state.items():
        for key, value in entry.items():
            if torch.is_tensor(value) and value.shape == param.shape and value.stride() != param.stride():
                entry[key] = torch.empty_like(param, dtype=value.dtype).copy_(value)
