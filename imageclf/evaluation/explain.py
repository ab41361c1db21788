"""Where the network looks: Grad-CAM heatmaps and feature maps of conv and pooling layers.

Grad-CAM (Selvaraju et al. 2017) weights each channel of a conv layer's output by the mean
gradient of the explained class's score over it, sums, keeps the positive part and scales
it to [0, 1] at the input size. By default the layer is the network's last ``nn.Conv2d``,
which works for every conv model in the registry; ``layer`` names any other module.

>>> model = imageclf.load("runs/xray")                      # doctest: +SKIP
>>> e = model.explain("scan.png")                           # doctest: +SKIP
>>> e.predicted, e.heatmap.shape; e.overlay().save("cam.png")  # doctest: +SKIP
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from imageclf.core.decision import decide
from imageclf.core.errors import ConfigError
from imageclf.core.io import atomic_write_bytes
from imageclf.data.transforms import batch_input
from imageclf.evaluation.report.plots import feature_grid
from imageclf.modelfile.predictor import ImageInput, Predictor, prepare_input
from imageclf.models.heads import class_score

POOLING = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)


@dataclass
class Explanation:
    """A Grad-CAM heatmap for one image, with the model's prediction for it.

    ``heatmap`` is (H, W) float32 in [0, 1] at the model's input size; ``image`` is the
    (H, W, C) uint8 input the model saw; ``probs`` holds one probability per class.
    """

    heatmap: np.ndarray
    probs: np.ndarray
    predicted: str
    classes: list[str]
    image: np.ndarray
    layer: str
    explained: str = ""

    def overlay(self, alpha: float = 0.45, min_size: int = 256, colormap: str = "jet") -> Image.Image:
        """The heatmap in colour over the image, RGB, scaled up to at least ``min_size`` px."""
        from matplotlib import colormaps

        h, w = self.heatmap.shape
        scale = max(1.0, min_size / min(h, w))
        size = (round(w * scale), round(h * scale))
        base = self.image[..., 0] if self.image.shape[-1] == 1 else self.image
        base_img = Image.fromarray(base).convert("RGB").resize(size, Image.BILINEAR)
        heat = Image.fromarray(self.heatmap.astype(np.float32), mode="F").resize(size, Image.BILINEAR)
        colour = colormaps[colormap](np.clip(np.asarray(heat), 0, 1))[..., :3]
        mixed = (1 - alpha) * np.asarray(base_img, np.float32) / 255 + alpha * colour
        return Image.fromarray(np.clip(mixed * 255 + 0.5, 0, 255).astype(np.uint8), "RGB")

    def overlay_png(self, **kwargs) -> bytes:
        buf = io.BytesIO()
        self.overlay(**kwargs).save(buf, format="PNG")
        return buf.getvalue()

    def to_dict(self) -> dict:
        return {"predicted": self.predicted, "explained": self.explained, "layer": self.layer,
                "probs": {c: float(p) for c, p in zip(self.classes, self.probs)}}


def conv_layer_names(net: nn.Module) -> list[str]:
    return [n for n, m in net.named_modules() if isinstance(m, nn.Conv2d)]


def feature_layer_names(net: nn.Module) -> list[str]:
    """Every conv and pooling layer, in definition order."""
    return [n for n, m in net.named_modules() if isinstance(m, (nn.Conv2d, *POOLING))]


def resolve_layer(net: nn.Module, name: str | None) -> tuple[str, nn.Module]:
    """The named module, or the last ``nn.Conv2d`` when ``name`` is None."""
    modules = dict(net.named_modules())
    if name is None:
        convs = conv_layer_names(net)
        if not convs:
            raise ConfigError(f"{type(net).__name__} has no convolution layer to explain")
        name = convs[-1]
    if name not in modules or not name:
        raise ConfigError(f"no layer {name!r}; conv and pooling layers: "
                          f"{', '.join(feature_layer_names(net))}")
    return name, modules[name]


def grad_cam(net: nn.Module, x: torch.Tensor, layer: nn.Module, target: int) -> np.ndarray:
    """Grad-CAM of class ``target`` for one normalised input (1, C, H, W); (H, W) in [0, 1].

    A one-logit (two-class) model's score for class 0 is minus its logit.
    """
    captured: list[torch.Tensor] = []
    handle = layer.register_forward_hook(lambda _m, _i, out: captured.append(out))
    was_training = net.training
    net.eval()
    try:
        with torch.enable_grad():
            logits = net(x).float()
            score = class_score(logits, target)
            # An in-place ReLU after the layer rewrites the captured tensor and its history,
            # so this is the gradient of the activation the next layer saw (Keras' view).
            acts = captured[-1]
            (grads,) = torch.autograd.grad(score, acts)
    finally:
        handle.remove()
        net.train(was_training)
    acts, grads = acts.detach().float(), grads.float()
    if acts.dim() != 4:
        raise ConfigError(f"layer output has shape {tuple(acts.shape)}; Grad-CAM needs (N, C, H, W)")
    weights = grads.mean(dim=(2, 3), keepdim=True)
    cam = F.relu((weights * acts).sum(1, keepdim=True))
    cam = F.interpolate(cam, size=x.shape[2:], mode="bilinear", align_corners=False)[0, 0]
    top = float(cam.max())
    return (cam / top if top > 0 else cam).cpu().numpy().astype(np.float32)


def _input(model: Predictor, image: ImageInput) -> tuple[np.ndarray, torch.Tensor]:
    arr = prepare_input(image, model.preprocessing)
    return arr, batch_input(arr[None], model.preprocessing, model.device)


def explain_image(model: Predictor, image: ImageInput, layer: str | None = None) -> Explanation:
    """Grad-CAM of the predicted class for one image (path, bytes, PIL image or array).

    Probabilities and the predicted class come from ``model``'s usual prediction path
    (threshold, temperature, test-time flips); the heatmap from its PyTorch network
    (``model.model``, which says to load with backend='torch' where the backend has none).
    """
    net = model.model
    arr, x = _input(model, image)
    probs = model.predict_arrays(np.array(arr[None]))[0]
    k = int(decide(probs[None], model.threshold)[0])
    name, module = resolve_layer(net, layer)
    heat = grad_cam(net, x, module, k)
    return Explanation(heat, probs, model.classes[k], list(model.classes), arr, name, model.classes[k])


def feature_maps(model: Predictor, image: ImageInput,
                 layers: list[str] | None = None) -> dict[str, np.ndarray]:
    """Activations (C, h, w) of every conv and pooling layer (or ``layers``) for one image.

    Read after the forward pass: where an in-place ReLU follows a conv (the seed CNNs), the
    map is the post-ReLU one, as Keras' ``Conv2D(activation='relu')`` layers show it.
    """
    net = model.model
    names = layers or feature_layer_names(net)
    modules = dict(net.named_modules())
    unknown = [n for n in names if n not in modules]
    if unknown:
        raise ConfigError(f"no layers {unknown}; conv and pooling layers: "
                          f"{', '.join(feature_layer_names(net))}")
    captured: dict[str, torch.Tensor] = {}
    hooks = [modules[n].register_forward_hook(lambda _m, _i, out, n=n: captured.__setitem__(n, out))
             for n in names]
    try:
        _, x = _input(model, image)
        net.eval()
        with torch.no_grad():
            net(x)
    finally:
        for h in hooks:
            h.remove()
    return {n: captured[n][0].float().cpu().numpy() for n in names
            if n in captured and captured[n].dim() == 4}


def _stem_names(paths: list[str]) -> list[str]:
    stems = [Path(p).stem for p in paths]
    clash = len(set(stems)) < len(stems)
    return [f"{i:03d}_{s}" if clash else s for i, s in enumerate(stems)]


def explain_files(model: Predictor, paths: list[str], out_dir: str | Path, layer: str | None = None,
                  with_feature_maps: bool = False, max_channels: int = 32) -> list[dict]:
    """Write ``<stem>_gradcam.png`` per image (and ``<stem>_features/NN_<layer>.png`` grids)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for path, stem in zip(paths, _stem_names(paths)):
        e = explain_image(model, path, layer)
        target = out / f"{stem}_gradcam.png"
        atomic_write_bytes(target, e.overlay_png())
        row = {"path": path, **e.to_dict(), "gradcam": str(target), "feature_maps": []}
        if with_feature_maps:
            folder = out / f"{stem}_features"
            kinds = {n: type(m).__name__ for n, m in model.model.named_modules()}
            for i, (name, maps) in enumerate(feature_maps(model, path).items()):
                file = folder / f"{i:02d}_{name.replace('.', '_')}.png"
                title = (f"{Path(path).name}: {name} ({kinds[name]}, {maps.shape[0]} channels, "
                         f"{maps.shape[1]} x {maps.shape[2]})")
                atomic_write_bytes(file, feature_grid(maps, title, max_channels))
                row["feature_maps"].append(str(file))
        rows.append(row)
    return rows
