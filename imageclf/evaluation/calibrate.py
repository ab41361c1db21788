"""Choosing the operating threshold and fitting temperature scaling, on validation data only.

``calibrate(imageclf.load(RUN), DATA, target="sensitivity=0.95")`` scores the validation split, picks the
threshold that meets the target, and stores it in RUN/config.json, where ``predict``,
``evaluate`` and the server read it. ``temperature=True`` first fits one temperature that
minimises the validation log loss (Guo et al. 2017) and stores it likewise. The test split
is refused: a threshold tuned on test data makes every test figure optimistic.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from imageclf.core.errors import ConfigError, DataError
from imageclf.core.progress import QUIET, Reporter
from imageclf.data.sources import Dataset, evaluation_split
from imageclf.evaluation.evaluate import evaluate, open_for_model
from imageclf.evaluation.report.stats import operating_point
from imageclf.modelfile.artifact import update_config
from imageclf.modelfile.card import CARD_FILE, write_card
from imageclf.modelfile.predictor import Predictor
from imageclf.models.heads import logits_to_probs

TARGETS = ("sensitivity", "specificity", "youden", "f1")


def parse_target(text: str) -> tuple[str, float | None]:
    """``sensitivity=0.95``, ``specificity=0.9``, ``youden`` or ``f1`` -> (kind, value)."""
    kind, _, value = text.strip().lower().partition("=")
    if kind not in TARGETS:
        raise ConfigError(f"unknown threshold target {text!r}; use sensitivity=X, specificity=X, "
                          "youden or f1")
    if kind in ("sensitivity", "specificity"):
        try:
            v = float(value)
        except ValueError:
            v = -1.0
        if not 0.0 < v <= 1.0:
            raise ConfigError(f"target {text!r}: {kind} needs a value in (0, 1], e.g. {kind}=0.95")
        return kind, v
    if value:
        raise ConfigError(f"target {text!r}: {kind} takes no value")
    return kind, None


def candidate_thresholds(p1: np.ndarray) -> np.ndarray:
    """One threshold per distinct decision: 0, the midpoints between neighbouring scores, and
    just above the top score.

    Midpoints keep a decision stable when a probability is recomputed with a last-bit
    difference. They are rounded to the scores' own precision (numpy compares float32
    probabilities with a float32 threshold), and where that rounding would land on the
    lower score, the upper score itself is used, so every decision on these scores holds.
    """
    dtype = np.asarray(p1).dtype.type if np.asarray(p1).dtype in (np.float16, np.float32) else np.float64
    s = np.unique(np.asarray(p1, dtype))
    mids = ((s[:-1].astype(np.float64) + s[1:]) / 2).astype(dtype)
    mids = np.where(mids > s[:-1], mids, s[1:])
    top = np.nextafter(s[-1], dtype(np.inf)) if len(s) else dtype(1.0)
    return np.r_[0.0, mids.astype(np.float64), min(1.0, float(top))]


def threshold_rates(labels: np.ndarray, p1: np.ndarray, thresholds: np.ndarray) -> dict[str, np.ndarray]:
    """Sensitivity, specificity and F1 at each threshold (``p1 >= t`` is positive)."""
    y = np.asarray(labels).astype(bool)
    pos = np.sort(np.asarray(p1, np.float64)[y])
    neg = np.sort(np.asarray(p1, np.float64)[~y])
    tp = len(pos) - np.searchsorted(pos, thresholds, "left")
    fp = len(neg) - np.searchsorted(neg, thresholds, "left")
    fn = len(pos) - tp
    with np.errstate(divide="ignore", invalid="ignore"):
        sens = tp / len(pos) if len(pos) else np.full(len(thresholds), np.nan)
        spec = 1 - fp / len(neg) if len(neg) else np.full(len(thresholds), np.nan)
        f1 = np.where(2 * tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), 0.0)
    return {"sensitivity": sens, "specificity": spec, "f1": f1}


def choose_threshold(labels: np.ndarray, p1: np.ndarray, target: str) -> float:
    """The threshold on p(class 1) that meets ``target`` on these labels.

    ``sensitivity=X``: the highest threshold whose sensitivity is at least X (so the best
    specificity that keeps it); ``specificity=X``: the lowest whose specificity is at
    least X; ``youden``: the maximum of sensitivity + specificity - 1; ``f1``: the
    maximum F1 of class 1.
    """
    kind, value = parse_target(target)
    y = np.asarray(labels).astype(bool)
    if not y.any() or y.all():
        raise DataError(f"threshold target {target!r} needs images of both classes")
    t = candidate_thresholds(p1)
    r = threshold_rates(y, p1, t)
    eps = 1e-12
    if kind == "sensitivity":
        return float(t[np.flatnonzero(r["sensitivity"] >= value - eps).max()])
    if kind == "specificity":
        ok = np.flatnonzero(r["specificity"] >= value - eps)
        if not len(ok):
            raise DataError(f"no threshold reaches specificity {value}")
        return float(t[ok.min()])
    score = r["sensitivity"] + r["specificity"] - 1 if kind == "youden" else r["f1"]
    return float(t[int(np.argmax(score))])


def temperature_nll(logits: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    """Validation log loss of the view-averaged probabilities at ``temperature``."""
    z = torch.from_numpy(logits)
    probs = torch.stack([logits_to_probs(v, temperature) for v in z]).mean(0).numpy()
    p = np.clip(probs[np.arange(len(labels)), labels], 1e-12, 1.0)
    return float(-np.log(p).mean())


def fit_temperature(logits: np.ndarray, labels: np.ndarray, low: float = 0.05, high: float = 20.0,
                    iterations: int = 60) -> float:
    """The temperature in [low, high] with the lowest log loss (golden-section search on log T)."""
    labels = np.asarray(labels, np.int64)
    a, b = math.log(low), math.log(high)
    g = (math.sqrt(5) - 1) / 2
    c, d = b - g * (b - a), a + g * (b - a)
    fc, fd = temperature_nll(logits, labels, math.exp(c)), temperature_nll(logits, labels, math.exp(d))
    for _ in range(iterations):
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - g * (b - a)
            fc = temperature_nll(logits, labels, math.exp(c))
        else:
            a, c, fc = c, d, fd
            d = a + g * (b - a)
            fd = temperature_nll(logits, labels, math.exp(d))
    return float(math.exp((a + b) / 2))


def _logit(p: float) -> float:
    p = min(max(p, 1e-12), 1 - 1e-12)
    return math.log(p / (1 - p))


@dataclass
class CalibrationResult:
    """What was chosen, on which images, and what it gives there."""

    run: str
    split: str
    n: int
    threshold: float | None
    previous_threshold: float | None
    target: str | None
    temperature: float
    previous_temperature: float
    nll_before: float
    nll_after: float
    at_threshold: dict | None
    saved: bool

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        lines = [f"{self.run}: calibrated on the {self.split} split ({self.n} images)"]
        if self.previous_temperature != self.temperature:
            lines.append(f"temperature {self.previous_temperature:.4f} -> {self.temperature:.4f} "
                         f"(log loss {self.nll_before:.4f} -> {self.nll_after:.4f})")
        if self.threshold is not None:
            how = f"for {self.target}" if self.target else "kept, moved to the new temperature"
            lines.append(f"threshold {self.previous_threshold:.6f} -> {self.threshold:.6f} ({how})")
        if self.at_threshold:
            op = self.at_threshold
            lines.append(f"on {self.split} at this threshold: sensitivity {op['sensitivity']:.4f}, "
                         f"specificity {op['specificity']:.4f}, PPV {op['ppv']:.4f}, NPV {op['npv']:.4f}, "
                         f"F1 {op['f1']:.4f}")
        lines.append("saved to config.json" if self.saved else "not saved (dry run)")
        return "\n".join(lines)


def _validation_dataset(ds: Dataset, split: str, recipe: dict) -> Dataset:
    if split == "test":
        raise DataError(f"{ds.source}: refusing to calibrate on the test split; choose thresholds and "
                        "temperatures on validation data (--split val) so test figures stay honest")
    return Dataset(ds.source, ds.kind, ds.classes, {split: evaluation_split(ds, split, recipe)},
                   group_by=ds.group_by, group_kind=ds.group_kind)


def calibrate(model: Predictor, data: str | Path | Dataset, *, split: str = "val", target: str | None = None,
              temperature: bool = False, save: bool = True, batch_size: int = 128,
              class_names: list[str] | None = None, reporter: Reporter = QUIET) -> CalibrationResult:
    """Fit temperature (optional), then choose the threshold for ``target`` on ``split``; store both
    in the model folder ``model`` was loaded from (``model.source``) unless ``save`` is False.

    >>> calibrate(imageclf.load("runs/xray"), "data/xray", target="sensitivity=0.95")  # doctest: +SKIP
    """
    if target is None and not temperature:
        raise ConfigError("nothing to calibrate: give a threshold target and/or temperature scaling")
    if target is not None:
        parse_target(target)
    run = model.source
    if target is not None and len(model.classes) != 2:
        raise ConfigError(f"{run}: threshold targets need a two-class model (this one has "
                          f"{len(model.classes)} classes); temperature scaling works for any")
    ds = open_for_model(model, data, class_names)
    subset = _validation_dataset(ds, split, model.config.recipe)
    result = evaluate(model, subset, split, batch_size=batch_size, keep_images=True, reporter=reporter)
    labels, probs = result.labels, result.probs
    old_t, old_threshold = model.config.temperature, model.config.threshold
    nll_before = nll_after = float(result.metrics["log_loss"])
    new_t = old_t
    if temperature:
        logits = model.view_logits(result.images, batch_size)
        nll_before = temperature_nll(logits, labels, old_t)
        new_t = fit_temperature(logits, labels)
        nll_after = temperature_nll(logits, labels, new_t)
        model.config.temperature = new_t
        probs = model.predict_arrays(result.images, batch_size)
    threshold, op = None, None
    if len(model.classes) == 2:
        if target is not None:
            threshold = choose_threshold(labels, probs[:, 1], target)
        elif new_t != old_t:
            # Keep the old decision boundary in logit space (exact without test-time flips).
            threshold = 1 / (1 + math.exp(-old_t * _logit(old_threshold) / new_t))
        if threshold is not None:
            op = operating_point(labels, probs[:, 1], threshold)
    out = CalibrationResult(str(run), result.split, len(labels), threshold,
                            old_threshold if threshold is not None else None, target, new_t, old_t,
                            nll_before, nll_after, op, save)
    if save:
        metrics = dict(model.config.metrics)
        metrics["calibration"] = {k: v for k, v in out.to_dict().items() if k not in ("run", "saved")}
        changes = {"temperature": new_t, "metrics": metrics}
        if threshold is not None:
            changes["threshold"] = threshold
        config = update_config(run, **changes)
        if (Path(run) / CARD_FILE).is_file():  # the card states the threshold: written again from config.json
            write_card(run, config)
    return out
