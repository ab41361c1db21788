"""The one forward path from cached uint8 images to class probabilities.

Validation during training, ``evaluate``, ``predict`` and the server all come here (the
PyTorch predictor, :class:`~imageclf.inference.torch_predictor.TorchPredictor`, runs it), so a
probability means the same thing everywhere.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

from imageclf.data.images import Preprocessing
from imageclf.data.transforms import batch_input, tta_views
from imageclf.models.heads import logits_to_probs


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA when present, else CPU; anything else is passed to torch."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def auto_batch_size(pre: Preprocessing, device: torch.device) -> int:
    """Images per forward pass when none is asked for: 128 on a GPU; on a CPU, few enough
    that a batch's activations stay near the caches (xray-5block at 128 px predicts twice as
    fast in batches of 16-32 as of 128)."""
    if device.type != "cpu":
        return 128
    fit = max(1, 500_000 // (pre.size[0] * pre.size[1]))
    return max(8, min(128, 2 ** int(math.log2(fit))))


OPTIMIZE_MODES = ("auto", "none", "freeze", "compile")
# Scripting and freezing costs 0.1-0.4 s on a small CPU and saves 10-20% of the forward pass:
# it pays back from a few thousand images (a fresh process predicting 400 cats/dogs photos
# took 0.59 s frozen, 0.47 s eager).
FREEZE_MIN_IMAGES = 2048


def optimize_mode(mode: str, device: torch.device, n_images: int) -> str:
    """What ``auto`` means here: a oneDNN-frozen graph on CPU for large jobs, else eager."""
    if mode not in OPTIMIZE_MODES:
        raise ValueError(f"optimize must be one of {', '.join(OPTIMIZE_MODES)}, got {mode!r}")
    if mode != "auto":
        return mode
    return "freeze" if device.type == "cpu" and n_images >= FREEZE_MIN_IMAGES else "none"


def optimize_for_inference(model: nn.Module, example: torch.Tensor, mode: str) -> nn.Module:
    """``model`` scripted and frozen (``freeze``: TorchScript + oneDNN conv/ReLU fusion) or
    ``torch.compile``'d (``compile``), kept only if its probabilities on ``example`` equal
    the eager model's to 1e-5; otherwise (or on any failure) the eager ``model`` itself."""
    if mode == "none":
        return model
    model.eval()
    try:
        with torch.inference_mode(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.jit's deprecation notices
            # Scripted, not traced: a trace would bake data-dependent branches in.
            fast = torch.jit.freeze(torch.jit.script(model)) if mode == "freeze" else torch.compile(model)
            # Checked at the traced batch size and at 1, so a graph that baked its batch size
            # in (a later, shorter batch) is refused here rather than failing there.
            same = True
            for x in (example, example[:1]):
                ref, got = logits_to_probs(model(x)), logits_to_probs(fast(x))
                same = same and got.shape == ref.shape and bool(torch.allclose(got, ref, rtol=0.0, atol=1e-5))
        if same:
            return fast
    except Exception:  # tracing or compiling can fail on unusual models: eager always works
        pass
    return model


def pool_before_relu(model: nn.Module) -> nn.Module:
    """Swap each ReLU that an nn.Sequential follows directly with a MaxPool2d, in place.

    max(relu(x)) == relu(max(x)) exactly, gradients included (the window's first maximum is
    the same element whenever the ReLU passes a gradient), but the ReLU and its backward then
    touch a quarter of the values: ~30% faster xray-5block training steps on CPU. Neither
    layer has parameters, so state dicts and model files are unchanged. Used on the model
    being trained only; a loaded Classifier keeps the order its feature maps are named by.
    """
    for module in model.modules():
        if isinstance(module, nn.Sequential):
            keys = list(module._modules)
            for a, b in zip(keys, keys[1:]):
                first, second = module._modules[a], module._modules[b]
                if type(first) is nn.ReLU and type(second) is nn.MaxPool2d and not second.return_indices:
                    module._modules[a], module._modules[b] = second, first
    return model


def forward_probs(model: nn.Module, x: torch.Tensor, tta: Sequence[str] = (),
                  temperature: float = 1.0) -> torch.Tensor:
    """Probabilities for a normalised batch, averaged over test-time flips when asked."""
    use_amp = x.device.type == "cuda"
    total = None
    views = tta_views(x, tta)
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
        x = batch_input(images[start:start + batch_size], pre, device, channels_last)
        out.append(forward_probs(model, x, tta, temperature).cpu())
        if on_batch:
            on_batch(len(x))
    if not out:
        return np.zeros((0, 2), np.float32)
    return torch.cat(out).numpy()


@torch.inference_mode()
def predict_scored(scored: nn.Module, images, pre: Preprocessing, *, device: torch.device,
                   batch_size: int = 128, tta: Sequence[str] = (), temperature: float = 1.0,
                   on_batch: Callable[[int], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities (N, K), as :func:`predict_probs` gives them, and OOD scores (N,) for
    (N, H, W, C) uint8 images, from one forward pass.

    ``scored`` is a :class:`~imageclf.modelfile.ood.ScoredNet`: ``(logits, score)`` for a batch.
    The score is the plain view's (test-time flips change the probabilities only), as the
    statistics were fitted on plain training images.
    """
    scored.eval()
    use_amp = device.type == "cuda"
    probs, scores = [], []
    for start in range(0, len(images), batch_size):
        x = batch_input(images[start:start + batch_size], pre, device)
        views = tta_views(x, tta)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_amp):
            logits, score = scored(views[0])
            total = logits_to_probs(logits, temperature)
            for view in views[1:]:
                total = total + logits_to_probs(scored.network(view), temperature)
        probs.append((total / len(views)).float().cpu())
        scores.append(score.float().cpu())
        if on_batch:
            on_batch(len(x))
    if not probs:
        return np.zeros((0, 2), np.float32), np.zeros(0, np.float32)
    return torch.cat(probs).numpy(), torch.cat(scores).numpy()


@torch.inference_mode()
def view_logits(model: nn.Module, images, pre: Preprocessing, *, device: torch.device,
                batch_size: int = 128, tta: Sequence[str] = ()) -> np.ndarray:
    """Raw logits (views, N, outputs) for (N, H, W, C) uint8 images: the views that
    :func:`forward_probs` averages, in its order (the plain image first)."""
    model.eval()
    out = []
    for start in range(0, len(images), batch_size):
        x = batch_input(images[start:start + batch_size], pre, device)
        out.append(torch.stack([model(v).float() for v in tta_views(x, tta)]).cpu())
    return torch.cat(out, 1).numpy()
