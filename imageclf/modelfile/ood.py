"""Out-of-distribution (OOD) scores: how far an input's features lie from the training images'.

A classifier answers every input with one of its classes, a photo of a cat given to an X-ray
model included. The network's penultimate features (what its last ``nn.Linear`` sees) of the
training images are summarised once, at the end of training, and every later input is scored
by its distance from them; past a threshold chosen on the validation split (so that a stated
share, 99 % by default, of in-distribution validation images stays below it) the input is
"outside what this model was trained on".

The score is the largest of three distances, each divided by its 99th percentile on the
validation images (the default ``mahalanobis+knn``, chosen by measurement: BENCHMARKS.md "Out
of distribution"); all are plain tensor arithmetic, so the ONNX export carries them as a graph:

- ``mahalanobis``: the squared Mahalanobis distance of the features to the nearest class mean
  under one shared covariance, shrunk towards its diagonal by D / (D + N) so that a few
  thousand images estimate it stably; stored as a whitening matrix and the whitened class
  means, so a score is one matrix product. Best on a small network trained from scratch;
- ``knn``: one minus the cosine similarity to the k-th nearest of a subsample of the
  L2-normalised training features. Best on ImageNet features (a linear probe, fine-tuning);
- ``flat``: the pixel spread that 99 % of the training images exceed, over the input's own,
  since features can place a blank image among the training images.

Each part alone missed some kind of far-off input on one of the two models measured; an input
is in distribution only when no part finds it far.

The statistics are ``RUN/ood.safetensors``; ``config.json``'s ``ood`` field holds the method,
the threshold, the share kept, the parts' scales and the file's SHA-256 (checked on load, like
the weights'). An ensemble scores each member with its own statistics, divides by the member's
threshold and averages: its threshold is 1.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from torch import nn

from imageclf.core.errors import ConfigError, ModelFileError
from imageclf.core.io import atomic_save_safetensors, file_sha256

# The names and the config-field check are torch-free, in ood_field (imported here for the
# modules that use them from this one).
from imageclf.modelfile.ood_field import (  # noqa: F401
    MAX_FEATURE_DIM,
    OOD_FILE,
    OOD_METHODS,
    OOD_MODES,
    OUTSIDE,
    PIXEL_METHOD,
    SOURCES,
    check_ood_field,
    known_method,
)

# How wide head inputs are averaged first (imported here for the modules that use them from this one).
from imageclf.modelfile.ood_pool import (  # noqa: F401
    FEATURE_CAP,
    GRID_CAP,
    FeaturePool,
    feature_pool,
    pool_features,
)

FLAT_QUANTILE = 0.01  # the training images' spread that "flat" measures against
# The features' distances, "+"-joined: each one a part of the score (the largest counts).
DEFAULT_METHOD = "mahalanobis+knn"
DEFAULT_KEEP = 0.99
KNN_BANK = 2048  # training features kept for knn (why 2,048: BENCHMARKS.md, "Out of distribution")
KNN_K = 5
# Whitening columns are multiplied in blocks this wide: the whitening matrix is upper triangular
# (the transposed inverse of a Cholesky factor), so column block j needs only the feature rows up
# to its own end. 4 blocks of a 2,048-wide matrix skip 37 % of the product's work and measured
# fastest (mnist-basic, one thread: 7.6 ms a batch of 128; 8 blocks 8.9, one 11.9): thinner
# products run below the GEMM's full speed, and each is one more operator in the graph.
WHITEN_BLOCK = 512
# Class means whose distance is measured directly, after the product ranks them: the true nearest
# is missed only if three classes tie within float32 rounding of the ranking.
CANDIDATES = 2


def parse_method(method: str) -> list[str]:
    """``mahalanobis+knn`` -> [mahalanobis, knn]; an unknown name is refused."""
    if not known_method(method):
        raise ConfigError(f"OOD method {method!r}: give {' or '.join(OOD_METHODS)}, or both joined by '+'")
    return [m.strip() for m in method.split("+")]


def head_layer(network: nn.Module) -> nn.Linear:
    """The network's last ``nn.Linear`` (in registration order): the classifier head."""
    linears = [m for m in network.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ConfigError(f"{type(network).__name__} has no linear head to take features from")
    return linears[-1]


def feature_heads(network: nn.Module) -> list[nn.Linear]:
    """The heads whose inputs are scored: each member's for an ensemble, else the one head."""
    members = getattr(network, "members", None)
    if isinstance(members, nn.ModuleList):
        return [head_layer(m) for m in members]
    return [head_layer(network)]


class OodScorer(nn.Module):
    """Features (N, D) -> distance from the training features (N,); larger is further out."""

    def __init__(self, method: str, tensors: dict[str, torch.Tensor], k: int = KNN_K,
                 pool: int | FeaturePool = 1) -> None:
        super().__init__()
        # How the features are averaged first (ood_pool).
        self.pooling = pool if isinstance(pool, FeaturePool) else FeaturePool(int(pool))
        if method not in (*OOD_METHODS, PIXEL_METHOD):
            raise ConfigError(f"unknown OOD method {method!r}; known: {', '.join(OOD_METHODS)}")
        self.method, self.k = method, int(k)
        needed = {"mahalanobis": ("whiten", "means"), "knn": ("bank",), PIXEL_METHOD: ("floor",)}[method]
        missing = [n for n in needed if n not in tensors]
        if missing:
            raise ModelFileError(f"OOD statistics for {method} lack {missing}")
        self.stored = needed  # what tensors() writes: the derived buffers below are rebuilt on load
        for name in needed:
            self.register_buffer(name, tensors[name].float().contiguous())
        self.row_ends: list[int] = []  # per whitening block, the feature rows it multiplies
        if method == "mahalanobis":
            self._derive_mahalanobis()

    def _derive_mahalanobis(self) -> None:
        """Buffers that score all classes with products instead of an (N, classes, D) broadcast.

        The nearest means are ranked by the expansion |z - m_c|^2 = |z|^2 - 2 z.m_c + |m_c|^2
        (|z|^2 is the same for every class, so a (D, classes) product ranks them), in coordinates
        centred on the mean of the class means; the distance to the best CANDIDATES is then taken
        directly, since the expansion cancels badly where classes lie far apart for their spread.
        The whitening is split in column blocks, each with only the rows where it is nonzero.
        """
        w, m = self.whiten.double(), self.means.double()
        o = m.mean(0)
        mc = m - o
        self.register_buffer("centred_means", mc.float(), persistent=False)
        self.register_buffer("centred_norms", mc.pow(2).sum(1).float().unsqueeze(0), persistent=False)
        self.register_buffer("rank_means", (-2.0 * mc).t().float().contiguous(), persistent=False)
        width = w.shape[1]
        nonzero = w.ne(0)
        blocks = []
        for start in range(0, width, WHITEN_BLOCK):
            stop = min(start + WHITEN_BLOCK, width)
            rows = nonzero[:, start:stop].any(1).nonzero()
            blocks.append((start, stop, int(rows.max()) + 1 if len(rows) else 1))
        if sum((b - a) * r for a, b, r in blocks) > 0.9 * w.numel():  # not triangular: one product
            blocks = [(0, width, w.shape[0])]
        for j, (start, stop, rows) in enumerate(blocks):
            self.register_buffer(f"whiten_{j}", self.whiten[:rows, start:stop].contiguous(), persistent=False)
            self.register_buffer(f"offset_{j}", (-o[start:stop]).float().unsqueeze(0), persistent=False)
            self.row_ends.append(rows)

    @property
    def pool(self) -> int:
        """The pooling's run or block size (1: none)."""
        return self.pooling.size

    @property
    def feature_dim(self) -> int:
        """Values per input the statistics hold (after pooling)."""
        if self.method == PIXEL_METHOD:
            return int(self.floor.shape[1])
        return int(self.whiten.shape[0] if self.method == "mahalanobis" else self.bank.shape[1])

    def fits(self, width: int) -> bool:
        """Whether inputs of ``width`` values give what the statistics hold."""
        return self.pooling.fits(width) and self.pooling.pooled_width(width) == self.feature_dim

    def tensors(self) -> dict[str, torch.Tensor]:
        # The knn bank is stored in half precision (a cosine similarity needs no more): half the file.
        return {k: (getattr(self, k).half() if k == "bank" else getattr(self, k)).detach().cpu().contiguous()
                for k in self.stored}

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        feats = feats.float()
        if self.method == PIXEL_METHOD:  # the training floor of the spread over this input's
            return self.floor.sum(1) / (feats.sum(1) + 1e-6)
        return self.score_pooled(self.pooling(feats))

    def score_pooled(self, feats: torch.Tensor) -> torch.Tensor:
        """The distance of features already pooled (several parts share one pooling)."""
        if self.method == "mahalanobis":
            return self._mahalanobis(feats)
        # Normalised before the product, as the statistics were fitted: 1 - similarity cancels
        # for a near neighbour, so another rounding order would shift small scores by 1e-4.
        unit = feats / feats.norm(dim=1, keepdim=True).clamp_min(1e-12)
        k = min(self.k, self.bank.shape[0])
        return 1.0 - (unit @ self.bank.t()).topk(k, dim=1).values[:, -1]

    def _mahalanobis(self, feats: torch.Tensor) -> torch.Tensor:
        """min over classes of |f W - m_c|^2: ranked by a product, the best few measured directly
        (see _derive_mahalanobis); z and the means are both shifted by the same o."""
        z = torch.cat([
            torch.addmm(getattr(self, f"offset_{j}"), feats[:, :rows], getattr(self, f"whiten_{j}"))
            for j, rows in enumerate(self.row_ends)
        ], 1)
        rank = torch.addmm(self.centred_norms, z, self.rank_means)  # |m_c|^2 - 2 z.m_c, (N, classes)
        best = rank.topk(min(CANDIDATES, rank.shape[1]), dim=1, largest=False).indices
        return (z.unsqueeze(1) - self.centred_means[best]).pow(2).sum(-1).min(1).values


def fit_scorer(method: str, feats: np.ndarray, labels: np.ndarray, seed: int = 0,
               pooled_by: FeaturePool | int | None = None, *, bank: int = KNN_BANK,
               cap: int = FEATURE_CAP) -> OodScorer:
    """The scorer's statistics from training features (N, D) and their labels; ``pooled_by``:
    the features were already pooled so (by :func:`pool_features` with :func:`feature_pool`),
    else they are pooled to at most ``cap`` values; ``bank``: training features knn keeps."""
    x = torch.from_numpy(np.asarray(feats, np.float64))
    if len(x) < 2:
        raise ConfigError("OOD statistics need at least two training images")
    if method == PIXEL_METHOD:  # per channel, the spread that all but FLAT_QUANTILE of them exceed
        return OodScorer(
            PIXEL_METHOD, {"floor": torch.quantile(x, FLAT_QUANTILE, dim=0, keepdim=True).float()}
        )
    pool = pooled_by if pooled_by is not None else feature_pool(x.shape[1], cap)
    if pooled_by is None:
        x = pool_features(x, pool)
    if method == "knn":
        return _fit_knn(x, seed, bank, pool)
    return _fit_mahalanobis(x, np.asarray(labels), pool)


def _fit_knn(x: torch.Tensor, seed: int, bank: int, pool: FeaturePool | int) -> OodScorer:
    """A random ``bank`` of the L2-normalised training features (all of them if fewer)."""
    if not 1 <= bank <= MAX_FEATURE_DIM:  # read_ood refuses a larger stored tensor
        raise ConfigError(f"the OOD knn bank must be 1 to {MAX_FEATURE_DIM} features, got {bank}")
    unit = x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)
    rng = np.random.default_rng(seed)
    keep = np.sort(rng.choice(len(unit), min(bank, len(unit)), replace=False))
    # Rounded to half precision here, as it is stored (OodScorer.tensors): the threshold is set on
    # the scores the loaded statistics give (a float32 bank's differ by up to 1e-3).
    return OodScorer("knn", {"bank": unit[keep].half().float()}, pool=pool)


def _fit_mahalanobis(x: torch.Tensor, labels: np.ndarray, pool: FeaturePool | int) -> OodScorer:
    """Class means and the whitening of their shared, shrunk covariance."""
    classes = np.unique(labels)
    means = torch.stack([x[torch.from_numpy(labels == c)].mean(0) for c in classes])
    centred = x - means[torch.from_numpy(np.searchsorted(classes, labels))]
    # The product in float32 (half the time: 1.0 s against 1.9 s for 20,000 x 2,048; 5e-7
    # relative to its largest entry), the covariance in float64 from there on.
    single = centred.float()
    cov = (single.t() @ single).double() / len(x)
    diag = torch.diag(torch.diag(cov))
    # Pulled towards its diagonal as far as features outnumber images (D / (D + N)): 5 % for
    # 4,700 X-rays of 256 features, 40 % for 1,800 photos of 1,280; a bare sample covariance of
    # more features than images is singular.
    shrink = min(0.9, max(0.05, len(cov) / (len(cov) + len(x))))
    cov = (1 - shrink) * cov + shrink * diag
    cov += torch.eye(len(cov), dtype=cov.dtype) * (1e-6 * float(torch.diag(cov).mean()) + 1e-12)
    # P = inv(cov) = W W^T with W = inv(L)^T for cov = L L^T: (f - m)^T P (f - m) = |(f - m) W|^2.
    chol = torch.linalg.cholesky(cov)
    whiten = torch.linalg.solve_triangular(chol, torch.eye(len(cov), dtype=cov.dtype), upper=False).t()
    return OodScorer("mahalanobis", {"whiten": whiten.float(), "means": (means @ whiten).float()}, pool=pool)


# The threshold sits this far (relative) above the last validation score it keeps, and never past
# the next: a score computed in other batches (or another runtime) differs by float rounding, which
# must not refuse the image validation kept.
THRESHOLD_MARGIN = 1e-5


def threshold_for(scores: np.ndarray, keep: float) -> float:
    """A score at or under which a share ``keep`` of ``scores`` lies (the validation images'): just
    above the last one kept (THRESHOLD_MARGIN), below the next one."""
    if not 0.0 < keep <= 1.0:
        raise ConfigError(f"the OOD keep share must be in (0, 1], got {keep}")
    scores = np.sort(np.asarray(scores, np.float64))
    if not len(scores):
        raise ConfigError("no validation images to set the OOD threshold on")
    index = min(len(scores) - 1, max(0, int(np.ceil(keep * len(scores))) - 1))
    kept = float(scores[index])
    above = kept + abs(kept) * THRESHOLD_MARGIN
    if index + 1 < len(scores) and scores[index + 1] > kept:
        above = min(above, (kept + float(scores[index + 1])) / 2)
    return above


def pixel_stats(x: torch.Tensor) -> torch.Tensor:
    """The spread of (N, C, H, W) model inputs: each channel's pixel standard deviation, (N, C).

    A network's features can place a flat gray image, which has no spread at all, among its
    training images (BENCHMARKS.md "Out of distribution"); this number cannot. The ``flat``
    scorer compares it with the training images' own: one-sided, since only an image flatter
    than (nearly) any of them is suspect, and a spread that resizing or noise shifts a little
    should not refuse a scan. (A Mahalanobis distance of texture statistics measured about as
    well on far-off inputs, but refused the same images resized from another resolution.)
    """
    x = x.float()
    centred = x - x.mean((2, 3), keepdim=True)
    return centred.pow(2).mean((2, 3)).clamp_min(0).sqrt()


SCALE_QUANTILE = 0.99  # each part's score is divided by this quantile of its validation scores


def part_scale(val_scores: np.ndarray) -> float:
    """What a part's score is divided by: its SCALE_QUANTILE on the validation images (above 0)."""
    return max(float(np.quantile(val_scores, SCALE_QUANTILE)), 1e-12)


@dataclass
class OodPart:
    """One distance: of ``source`` (features or pixel statistics), divided by ``scale``."""

    source: str
    scorer: OodScorer
    scale: float = 1.0


def largest_part(parts: list[OodPart], raw: list[torch.Tensor]) -> torch.Tensor:
    """One member's score: the largest of its parts' raw scores, each over its part's scale (what
    prediction computes, and what the fit sets the threshold on)."""
    best = None
    for p, s in zip(parts, raw):
        s = s / p.scale
        best = s if best is None else torch.maximum(best, s)
    return best


@dataclass
class OodStats:
    """A model's OOD scorers and the threshold on their score.

    Each member (one, or one per ensemble network) scores an input by the largest of its
    parts' scaled distances, divided by the member's own threshold (1 for a single model);
    the score is the mean over members. Past ``threshold`` it is out of distribution.
    """

    method: str  # the feature scorer's (mahalanobis, knn), or ensemble
    members: list[list[OodPart]]
    threshold: float
    keep: float = DEFAULT_KEEP
    member_thresholds: list[float] = field(default_factory=lambda: [1.0])
    info: dict[str, Any] = field(default_factory=dict)  # val_images, val_kept, train_images, ...

    def config_field(self, sha256: str) -> dict[str, Any]:
        """What config.json's ``ood`` holds (the tensors are in OOD_FILE, whose hash is ``sha256``)."""
        members = [
            {
                "threshold": float(t),
                "parts": [
                    {"source": p.source, "method": p.scorer.method, "k": p.scorer.k,
                     **p.scorer.pooling.to_field(), "scale": float(p.scale)}
                    for p in parts
                ],
            }
            for parts, t in zip(self.members, self.member_thresholds)
        ]
        return {
            "method": self.method,
            "threshold": float(self.threshold),
            "keep": float(self.keep),
            "members": members,
            "file": OOD_FILE,
            "sha256": sha256,
            **self.info,
        }

    def tensors(self) -> dict[str, torch.Tensor]:
        return {
            f"{i}.{j}.{name}": t
            for i, parts in enumerate(self.members)
            for j, p in enumerate(parts)
            for name, t in p.scorer.tensors().items()
        }

    def score(self, feats: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """The score of inputs ``x`` whose members' head inputs are ``feats``."""
        pixels = pixel_stats(x) if any(p.source == "pixels" for m in self.members for p in m) else None
        total = None
        for parts, f, t in zip(self.members, feats, self.member_thresholds):
            raw = []
            pooled: dict[FeaturePool, torch.Tensor] = {}  # mahalanobis and knn pool the same features once
            for p in parts:
                if p.source == "features":
                    if p.scorer.pooling not in pooled:
                        pooled[p.scorer.pooling] = p.scorer.pooling(f.flatten(1).float())
                    raw.append(p.scorer.score_pooled(pooled[p.scorer.pooling]))
                else:
                    raw.append(p.scorer(pixels))
            best = largest_part(parts, raw)
            total = best / t if total is None else total + best / t
        return total / len(self.members)


def save_ood(run_dir: str | Path, stats: OodStats) -> dict[str, Any]:
    """Write OOD_FILE atomically; returns the config.json ``ood`` field that records it."""
    path = Path(run_dir) / OOD_FILE
    atomic_save_safetensors(path, stats.tensors(), {"format": "imageclf-ood", "method": stats.method})
    return stats.config_field(file_sha256(path))


def read_ood(run_dir: str | Path, field_: dict[str, Any]) -> OodStats | None:
    """The statistics config.json's ``ood`` field records, checked against its hash (None: none)."""
    if not field_:
        return None
    path = Path(run_dir) / OOD_FILE
    if not path.is_file():
        raise ModelFileError(f"{run_dir}: config.json records OOD statistics but {OOD_FILE} is missing")
    if file_sha256(path) != field_["sha256"]:
        raise ModelFileError(f"{path}: does not match config.json (edited, or from another run)")
    try:
        with safe_open(str(path), framework="pt") as f:
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118
            if any(len(s) != 2 or max(s) > max(MAX_FEATURE_DIM, KNN_BANK) for s in shapes.values()):
                raise ModelFileError(f"{path}: tensors of unexpected shapes {sorted(shapes.values())[:3]}")
            tensors = {k: f.get_tensor(k) for k in shapes}
    except ModelFileError:
        raise
    except Exception as exc:  # safetensors' own error types on a corrupt header
        raise ModelFileError(f"{path}: not a valid safetensors file ({exc})") from None
    members, thresholds = [], []
    for i, m in enumerate(field_["members"]):
        parts = []
        for j, p in enumerate(m["parts"]):
            prefix = f"{i}.{j}."
            own = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
            parts.append(
                OodPart(p["source"],
                        OodScorer(p["method"], own, p.get("k", KNN_K), FeaturePool.from_field(p)),
                        float(p["scale"]))
            )
        members.append(parts)
        thresholds.append(float(m.get("threshold", 1.0)))
    info = {
        k: v
        for k, v in field_.items()
        if k not in ("method", "threshold", "keep", "members", "file", "sha256")
    }
    return OodStats(
        field_["method"],
        members,
        float(field_["threshold"]),
        float(field_.get("keep", DEFAULT_KEEP)),
        thresholds,
        info,
    )


class ScoredNet(nn.Module):
    """``network`` that also returns each input's OOD score: ``(logits, score)``.

    The heads' inputs are captured by forward hooks registered for the one call, so the
    network itself is unchanged (and a traced ONNX graph holds the scoring as operators).
    """

    def __init__(self, network: nn.Module, stats: OodStats) -> None:
        super().__init__()
        self.network = network
        self.scorers = nn.ModuleList([p.scorer for parts in stats.members for p in parts])  # moved with .to()
        self.stats = stats
        self.heads = feature_heads(network)
        check_fits(stats, self.heads)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        captured: list[torch.Tensor | None] = [None] * len(self.heads)

        def keep(i):
            return lambda _m, inputs, _out: captured.__setitem__(i, inputs[0])

        handles = [h.register_forward_hook(keep(i)) for i, h in enumerate(self.heads)]
        try:
            logits = self.network(x)
        finally:
            for h in handles:
                h.remove()
        # In float32 whatever the forward pass ran in: a bf16 product would blur the distances.
        with torch.autocast(x.device.type, enabled=False):
            return logits, self.stats.score([c.float() for c in captured], x.float())


def check_fits(stats: OodStats, heads: list[nn.Linear], channels: int | None = None) -> None:
    """Refuse statistics that do not fit the network (feature sizes) or its input (channels)."""
    if len(heads) != len(stats.members):
        raise ModelFileError(
            f"OOD statistics for {len(stats.members)} network(s), the model has {len(heads)}"
        )
    for head, parts in zip(heads, stats.members):
        for p in parts:
            want = head.in_features if p.source == "features" else channels
            if want is not None and not p.scorer.fits(want):
                raise ModelFileError(
                    f"OOD statistics of {p.scorer.feature_dim} {p.source} values, the model gives {want}"
                )


def combine_members(members: list[OodStats | None]) -> OodStats | None:
    """An ensemble's statistics: each member's, its score divided by its threshold (None if one
    has none)."""
    if not members or any(m is None for m in members):
        return None
    if any(len(m.members) != 1 for m in members):
        raise ConfigError("an ensemble member is itself an ensemble; its OOD statistics are not combined")
    return OodStats(
        "ensemble",
        [m.members[0] for m in members],
        1.0,
        float(np.mean([m.keep for m in members])),
        [max(m.threshold * m.member_thresholds[0], 1e-12) for m in members],
        {"member_methods": [m.method for m in members]},
    )
