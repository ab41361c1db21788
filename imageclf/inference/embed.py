"""Penultimate-layer features ("embeddings") of any network: what its last linear layer sees.

``imageclf embed RUN DATA --out F.npy`` writes them for a trained model (:func:`embed_dataset`).

Every architecture in the registry ends in an ``nn.Linear`` head (the seed CNNs' Dense, timm's
classifier), so one forward hook on its input gives the features for all of them: for a
linear probe (:mod:`imageclf.training.probe`), ``imageclf embed``, and near-duplicate search
in feature space. Test-time flips, when asked, are averaged as the forward path averages
probabilities.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from imageclf.core.errors import ConfigError
from imageclf.core.io import atomic_path, atomic_write_text
from imageclf.core.progress import QUIET, Reporter
from imageclf.data.cache import cache_split
from imageclf.data.images import Preprocessing
from imageclf.data.sources import Dataset, evaluation_split, open_dataset
from imageclf.data.transforms import batch_input, tta_views
from imageclf.modelfile.predictor import Predictor


def head_layer(network: nn.Module) -> nn.Linear:
    """The network's last ``nn.Linear`` (in registration order): the classifier head."""
    linears = [m for m in network.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ConfigError(f"{type(network).__name__} has no linear head to take features from")
    return linears[-1]


@torch.inference_mode()
def embed_arrays(network: nn.Module, images, pre: Preprocessing, *, device: torch.device,
                 batch_size: int = 64, tta: Sequence[str] = (), channels_last: bool = True,
                 on_batch: Callable[[int], None] | None = None) -> np.ndarray:
    """Features (N, D) float32 for (N, H, W, C) uint8 images (array or disk cache)."""
    head = head_layer(network)
    captured: list[torch.Tensor] = []
    handle = head.register_forward_hook(lambda _m, inputs, _out: captured.append(inputs[0]))
    network.eval()
    out = []
    try:
        for start in range(0, len(images), batch_size):
            x = batch_input(images[start:start + batch_size], pre, device, channels_last)
            views = tta_views(x, tta)
            total = None
            for view in views:
                captured.clear()
                network(view)
                feats = captured[-1].float().flatten(1)
                total = feats if total is None else total + feats
            out.append((total / len(views)).cpu())
            if on_batch:
                on_batch(len(x))
    finally:
        handle.remove()
    if not out:
        return np.zeros((0, head.in_features), np.float32)
    return torch.cat(out).numpy()


@dataclass
class Embeddings:
    """Features of a dataset's images: row ``i`` is ``paths[i]``, of ``splits[i]``, labelled ``labels[i]``."""

    features: np.ndarray
    paths: list[str]
    splits: list[str]
    labels: list[str]

    def save(self, out: str | Path) -> tuple[Path, Path]:
        """``out`` (.npy, float32 (N, D)) and, beside it, ``out`` with .csv: row, path, split, label."""
        out = Path(out)
        table = out.with_suffix(".csv")
        with atomic_path(out) as tmp, tmp.open("wb") as f:
            np.save(f, self.features.astype(np.float32), allow_pickle=False)
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(["row", "path", "split", "label"])
        rows = zip(self.paths, self.splits, self.labels)
        writer.writerows([i, path, split, label] for i, (path, split, label) in enumerate(rows))
        atomic_write_text(table, buf.getvalue())
        return out, table


def embed_dataset(model: Predictor, data: str | Path | Dataset, split: str | None = None, *,
                  batch_size: int = 64, tta: Sequence[str] = (), workers: int | None = None,
                  skip_bad: bool = False, class_names: list[str] | None = None,
                  reporter: Reporter = QUIET) -> Embeddings:
    """Features of ``model``'s network for ``split`` of ``data`` (every split when None), in file order."""
    ds = data if isinstance(data, Dataset) else open_dataset(data, class_names)
    names = [split] if split else list(ds.splits)
    parts, paths, splits, labels = [], [], [], []
    for name in names:
        chosen = evaluation_split(ds, name, model.config.recipe)
        with reporter.task(f"decoding {name}", total=len(chosen)) as bar:
            cached = cache_split(chosen, model.preprocessing, storage="memory", workers=workers,
                                 skip_bad=skip_bad, progress=bar.advance)
        for path, reason in cached.skipped:
            reporter.warn(f"skipped {path}: {reason}")
        with reporter.task(f"embedding {name}", total=len(cached)) as bar:
            parts.append(embed_arrays(model.model, cached.images, model.preprocessing, device=model.device,
                                      batch_size=batch_size, tta=tta, on_batch=bar.advance))
        paths += [chosen.item_name(int(i)) for i in cached.source_index]
        splits += [name] * len(cached)
        labels += [ds.classes[k] for k in cached.labels]
    return Embeddings(np.concatenate(parts), paths, splits, labels)
