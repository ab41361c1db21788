"""Fitting a model's out-of-distribution statistics (:mod:`imageclf.modelfile.ood`) on its data.

At the end of training (:meth:`imageclf.training.run.RunDir.finish`) the trained network's
features of the cached training images give the distances' statistics, and the validation
images their scales and the threshold that keeps ``keep`` (99 %) of them; ``imageclf ood RUN
DATA`` does the same for a model folder written before OOD scores existed, or with another
share. The threshold is set on the score prediction computes (``OodStats.score``: the same
pooled float32 features, the same arithmetic), so what validation kept, prediction keeps.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from imageclf.core.errors import ConfigError, DataError
from imageclf.core.progress import QUIET, Reporter
from imageclf.data.cache import CachedSplit, cache_split
from imageclf.data.images import Preprocessing
from imageclf.data.sources import Dataset, carve_of, training_splits
from imageclf.data.transforms import batch_input
from imageclf.evaluation.evaluate import open_for_model
from imageclf.inference.torch_predictor import TorchPredictor
from imageclf.modelfile.artifact import update_config
from imageclf.modelfile.card import CARD_FILE, write_card
from imageclf.modelfile.ood import (
    DEFAULT_KEEP,
    DEFAULT_METHOD,
    FEATURE_CAP,
    GRID_CAP,
    KNN_BANK,
    PIXEL_METHOD,
    FeaturePool,
    OodPart,
    OodStats,
    feature_heads,
    feature_pool,
    fit_scorer,
    largest_part,
    parse_method,
    part_scale,
    pixel_stats,
    save_ood,
    threshold_for,
)
from imageclf.modelfile.ood_pool import flattened_map
from imageclf.recipes.schema import Recipe

# Training images the statistics are fitted on, at most (a random subset beyond): a covariance
# of a few hundred features is settled long before, and the pass stays a fraction of an epoch.
MAX_FIT_IMAGES = 20_000
# And at most this many per pooled feature, never fewer than the kNN bank keeps: xray-5block's
# 64 features fitted on 2,048 of its 4,708 training images tell far-off kinds from its own within
# the spread of fits on all of them (BENCHMARKS.md, Out of distribution), and the pass that
# ends its training takes 2-3 s less.
FIT_PER_FEATURE = 16


@torch.inference_mode()
def head_inputs(
    network: nn.Module, images, pre: Preprocessing, device: torch.device, batch_size: int = 64,
    cap: int = FEATURE_CAP, grid_cap: int = GRID_CAP, grid: bool = True,
) -> tuple[np.ndarray, np.ndarray, FeaturePool, int]:
    """(features the network's head sees, pooled by :func:`feature_pool` (N, D') float64;
    pixel_stats (N, 3C); the pooling; the head's input width D) of uint8 (N, H, W, C) images.
    ``grid`` False: a flattened map is pooled in runs too, as models before block pooling were.

    Pooled batch by batch (in float32, as the exported score pools them; kept in float64 for the
    fit): 20,000 images of a head that sees 18,432 values (mnist-basic) would otherwise hold
    1.5 GB of features, and 3 GB as float64.
    """
    heads = feature_heads(network)
    if len(heads) != 1:
        raise ConfigError("OOD statistics are fitted per network; an ensemble combines its members'")
    captured: list[torch.Tensor] = []
    handle = heads[0].register_forward_hook(lambda _m, inputs, _out: captured.append(inputs[0]))
    network.eval()
    feats = pixels = pool = None
    width = 0
    try:
        for start in range(0, len(images), batch_size):
            x = batch_input(images[start : start + batch_size], pre, device)
            captured.clear()
            network(x)
            f = captured[-1].flatten(1).cpu().float()
            width = f.shape[1]
            if pool is None:
                shape = flattened_map(network, heads[0], x[:1]) if grid and width > cap else None
                pool = feature_pool(width, cap, shape, grid_cap)
            pooled, spread = pool(f), pixel_stats(x).cpu()
            if feats is None:  # filled in place: a concatenation would copy 330 MB (mnist-basic) once more
                feats = np.empty((len(images), pooled.shape[1]), np.float64)
                pixels = np.empty((len(images), spread.shape[1]), spread.numpy().dtype)
            feats[start : start + len(f)] = pooled.numpy()
            pixels[start : start + len(f)] = spread.numpy()
    finally:
        handle.remove()
    if feats is None:
        raise ConfigError("no images to take head inputs of")
    return feats, pixels, pool, width


def fit_limit(features: int, bank: int = KNN_BANK) -> int:
    """How many training images statistics of ``features`` pooled features are fitted on, at most."""
    return min(MAX_FIT_IMAGES, max(bank, FIT_PER_FEATURE * features))


def fit_subset(n: int, seed: int, limit: int = MAX_FIT_IMAGES) -> np.ndarray:
    """The indices of the ``n`` training images the statistics are fitted on: all of them, or a
    sorted random ``limit`` (:func:`fit_limit`) of them."""
    if n <= limit:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, limit, replace=False))


def fit_index(network: nn.Module, train_images, pre: Preprocessing, device: torch.device, seed: int, *,
              cap: int = FEATURE_CAP, bank: int = KNN_BANK, fit_images: int | None = None,
              batch_size: int = 64, grid: bool = True) -> np.ndarray:
    """The indices of the training images :func:`fit_ood` fits on: :func:`fit_subset` of
    ``fit_images``, by default :func:`fit_limit`'s for the network's pooled features (one image's
    pass tells their number; ``grid`` as :func:`head_inputs`)."""
    if fit_images is None:
        features = head_inputs(network, train_images[:1], pre, device, batch_size, cap, grid=grid)[0].shape[1]
        fit_images = fit_limit(features, bank)
    return fit_subset(len(train_images), seed, fit_images)


@torch.no_grad()
def _val_scores(score, inputs: np.ndarray, batch_size: int) -> torch.Tensor:
    """``score`` of head inputs (pooled features or pixel spreads), float32, in prediction's batches."""
    x = torch.from_numpy(inputs).float()
    return torch.cat([score(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])


def fit_ood(network: nn.Module, train_images, train_labels: np.ndarray, val_images, pre: Preprocessing,
            device: torch.device, *, keep: float = DEFAULT_KEEP, method: str = DEFAULT_METHOD,
            flat: bool = True, batch_size: int = 64, seed: int = 0, cap: int = FEATURE_CAP,
            bank: int = KNN_BANK, fit_images: int | None = None) -> OodStats:
    """Statistics from the training images, scales and threshold from the validation images.

    ``method``: the features' distances (``mahalanobis``, ``knn``, or both: ``mahalanobis+knn``);
    ``flat``: also the flatness ratio of the pixels' spread. Each part is divided by its
    SCALE_QUANTILE on the validation images; the score is the largest. ``cap``: head inputs
    wider are pooled to at most this many values; ``bank``: the training features knn keeps;
    ``fit_images``: training images fitted on, at most (default :func:`fit_limit`'s).
    """
    methods = parse_method(method)
    if len(val_images) == 0:
        raise ConfigError("no validation images to set the OOD threshold on")
    index = fit_index(network, train_images, pre, device, seed, cap=cap, bank=bank, fit_images=fit_images,
                      batch_size=batch_size)
    subset = train_images[index] if len(index) < len(train_images) else train_images
    train_f, train_p, pool, width = head_inputs(network, subset, pre, device, batch_size, cap)
    val_f, val_p, _, _ = head_inputs(network, val_images, pre, device, batch_size, cap)
    labels = np.asarray(train_labels)[index]
    fits = [("features", m, train_f, val_f) for m in methods]
    if flat:
        fits.append(("pixels", PIXEL_METHOD, train_p, val_p))
    parts, raws = [], []
    for source, name, train_x, val_x in fits:
        features = source == "features"
        scorer = fit_scorer(name, train_x, labels, seed, pooled_by=pool if features else None, bank=bank)
        raws.append(_val_scores(scorer.score_pooled if features else scorer, val_x, batch_size))
        parts.append(OodPart(source, scorer, part_scale(raws[-1].numpy())))
    stats = OodStats("+".join(methods), [parts], threshold=float("inf"), keep=keep)
    # The score prediction computes (OodStats.score), from the same pooled float32 features in the
    # same batches: the threshold needs no second pass.
    val_scores = largest_part(parts, raws).numpy()
    stats.threshold = threshold_for(val_scores, keep)
    kept = float(np.mean(val_scores <= stats.threshold))
    stats.info = {"val_images": int(len(val_images)), "val_kept": kept, "train_images": int(len(index)),
                  "feature_dim": width}
    return stats


def fit_for_run(network: nn.Module, train: CachedSplit, val: CachedSplit, recipe: Recipe,
                device: torch.device, keep: float, reporter: Reporter = QUIET) -> OodStats | None:
    """A training run's statistics at its end (training's own decoded splits), or None with a
    warning when they cannot be fitted (a diverged run's NaN features): the model is saved anyway."""
    try:
        stats = fit_ood(network, train.images, train.labels, val.images, recipe.preprocessing(), device,
                        keep=keep, seed=recipe.seed)
    except (ConfigError, RuntimeError, ValueError) as exc:  # torch.linalg's errors are RuntimeErrors
        reporter.warn(f"no out-of-distribution score for this model: {exc}")
        return None
    reporter.print(f"out-of-distribution threshold {stats.threshold:.4g}: keeps {stats.info['val_kept']:.1%} "
                   f"of {len(val)} validation images")
    return stats


def refit_ood(
    run_dir: str | Path,
    data: str | Path | Dataset,
    *,
    keep: float = DEFAULT_KEEP,
    method: str = DEFAULT_METHOD,
    workers: int | None = None,
    reporter: Reporter = QUIET,
    cap: int = FEATURE_CAP,
    bank: int = KNN_BANK,
) -> OodStats:
    """Fit (or fit again) a model folder's OOD statistics on the data it trained on: for a folder
    written before they existed, or with another ``keep`` share. The training and validation
    images are the split training made (a carved validation split is carved again the same way);
    config.json records the new statistics, and the model card, if there is one, is written again."""
    model = TorchPredictor.load(run_dir, device="cpu")
    ds = open_for_model(model, data)
    unknown = sorted(set(ds.classes) - set(model.classes))
    if unknown:
        raise DataError(f"{ds.source}: classes {unknown} are not among the model's {model.classes}")
    remap = np.array([model.classes.index(c) for c in ds.classes])
    train_split, val_split = training_splits(ds, *carve_of(model.config.recipe))
    cached = []
    for split in (train_split, val_split):
        with reporter.task(f"decoding {split.name}", total=len(split)) as bar:
            cached.append(
                cache_split(
                    split, model.preprocessing, storage="memory", workers=workers, progress=bar.advance
                )
            )
    train, val = cached
    stats = fit_ood(
        model.model,
        train.images,
        remap[train.labels],
        val.images,
        model.preprocessing,
        model.device,
        keep=keep,
        method=method,
        cap=cap,
        bank=bank,
    )
    config = update_config(run_dir, ood=save_ood(run_dir, stats))
    if (Path(run_dir) / CARD_FILE).is_file():
        write_card(run_dir, config)
    return stats
