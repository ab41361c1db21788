"""Evaluate a model on a dataset split: probabilities in data order, never shuffled, then metrics."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from imageclf.core.decision import decide
from imageclf.core.errors import DataError
from imageclf.core.io import atomic_write_text
from imageclf.core.progress import QUIET, Reporter
from imageclf.data.cache import cache_split
from imageclf.data.hashing import pixel_hashes
from imageclf.data.sources import Dataset, evaluation_split, open_dataset
from imageclf.data.tables import csv_columns
from imageclf.evaluation.metrics import classification_metrics, format_report
from imageclf.evaluation.report.figures import compute_figures
from imageclf.evaluation.report.html import evaluation_html
from imageclf.evaluation.report.subgroups import Subgroups, read_subgroups
from imageclf.modelfile.artifact import TRAIN_GROUPS_FILE, TRAIN_HASHES_FILE


@dataclass
class EvaluationResult:
    """Labels, probabilities and figures for one split; ``paths[i]`` names image ``i``."""

    classes: list[str]
    labels: np.ndarray
    probs: np.ndarray
    threshold: float
    paths: list[str]
    metrics: dict
    split: str
    source: str
    images: np.ndarray | None = None
    skipped: list[tuple[str, str]] = field(default_factory=list)
    overlap: int = 0
    run: str = ""
    split_counts: dict[str, list[int]] = field(default_factory=dict)
    # --group-by of the model's training: evaluation images whose group it trained on.
    group_overlap: dict | None = None
    subgroups: Subgroups | None = None  # --groups: each image's value in every group column
    # Each image's out-of-distribution score and the model's threshold (None: no statistics).
    ood_scores: np.ndarray | None = None
    ood_threshold: float | None = None
    _figures: dict | None = field(default=None, repr=False)

    @property
    def predictions(self) -> np.ndarray:
        return decide(self.probs, self.threshold)

    def report(self) -> str:
        head = f"{self.source} [{self.split}]: {len(self.labels)} images"
        return head + "\n\n" + format_report(self.metrics, self.classes) + ood_line(self.metrics.get("ood"))

    def figures(self, **options) -> dict:
        """The report's figures (curves, intervals, calibration...; see
        :mod:`imageclf.evaluation.report.figures`).

        Computed once and kept; ``options`` (``n_bootstrap``, ``seed``, ...) recompute them.
        """
        if self._figures is None or options:

            self._figures = compute_figures(self, **options)
        return self._figures

    def to_dict(self) -> dict:
        return {"source": self.source, "split": self.split, "classes": self.classes,
                "skipped": [list(s) for s in self.skipped], "train_overlap": self.overlap,
                "train_group_overlap": self.group_overlap, **self.metrics, "figures": self.figures()}

    def to_html(self, path: str | Path | None = None, **options) -> str:
        """One self-contained HTML report (plots embedded, no network); written to ``path`` if given.

        Image grids need the pixels: evaluate with ``keep_images=True``.
        """

        page = evaluation_html(self, self.figures(**options) if options else self.figures())
        if path is not None:
            atomic_write_text(path, page)
        return page

    def to_json(self, path: str | Path | None = None) -> str:
        text = json.dumps(self.to_dict(), indent=2, allow_nan=True) + "\n"
        if path is not None:
            atomic_write_text(path, text)
        return text


def ood_summary(labels: np.ndarray, predictions: np.ndarray, scores: np.ndarray | None,
                threshold: float | None) -> dict | None:
    """How many images score past the OOD threshold, and the accuracy on the others."""
    if scores is None or threshold is None:
        return None
    inside = scores <= threshold
    return {"threshold": float(threshold), "outside": int((~inside).sum()), "answered": int(inside.sum()),
            "share_answered": float(inside.mean()) if len(inside) else 1.0,
            "accuracy_answered": (float((predictions[inside] == labels[inside]).mean()) if inside.any()
                                  else None),
            "score_median": float(np.median(scores)) if len(scores) else None}


def ood_line(ood: dict | None) -> str:
    if not ood:
        return "\nOOD: this model has no out-of-distribution statistics"
    acc = "" if ood["accuracy_answered"] is None else f"; accuracy on those {ood['accuracy_answered']:.4f}"
    return (f"\nOOD: {ood['answered']} of {ood['answered'] + ood['outside']} images "
            f"({ood['share_answered']:.1%}) within the threshold {ood['threshold']:.4g}, {ood['outside']} "
            f"outside what this model was trained on (scored above all the same){acc}")


def overlap_with_training(run_dir: str, images) -> int:
    """How many of ``images`` are pixel-identical to a training image of the run (0 if unknown)."""
    hashes_file = Path(run_dir) / TRAIN_HASHES_FILE
    if not run_dir or not hashes_file.is_file():
        return 0
    try:
        train = np.load(hashes_file, allow_pickle=False)
    except (OSError, ValueError):  # a damaged or foreign file: the overlap is unknown, not an error
        return 0
    if train.dtype != np.uint64 or train.ndim != 1:
        return 0
    return int(np.isin(pixel_hashes(images), train).sum())


def train_groups(run_dir: str) -> dict | None:
    """RUN/train_groups.json: the run's ``--group-by`` and each training image's group (None
    when the run had none, or the file cannot be read)."""
    path = Path(run_dir) / TRAIN_GROUPS_FILE if run_dir else None
    if path is None or not path.is_file():
        return None
    try:
        d = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not (isinstance(d, dict) and isinstance(d.get("group_by"), str) and isinstance(d.get("groups"), list)):
        return None
    return d


def open_for_model(model, data: str | Path | Dataset, class_names: list[str] | None = None, *,
                   path_column: str | None = None, label_column: str | None = None) -> Dataset:
    """``data`` opened to judge ``model``: an npz's labels named as the model's classes, and its
    images grouped as the model's training grouped them (``--group-by``; a grouping that
    matches nothing here is no grouping), so that the validation carve is the one training made."""
    if isinstance(data, Dataset):
        return data
    trained = train_groups(model.source)
    group_by = trained["group_by"] if trained else None
    if trained and trained.get("kind") == "column" and group_by.lower() not in csv_columns(Path(data)):
        group_by = None  # a column of the training CSV, absent here: never read as a pattern
    return open_dataset(data, class_names or (model.classes if str(data).endswith(".npz") else None),
                        path_column=path_column, label_column=label_column, group_by=group_by,
                        strict_groups=False)


def group_overlap(trained: dict | None, ds: Dataset, groups: np.ndarray | None) -> dict | None:
    """How many evaluation images (with ``groups``) belong to a group the model trained on."""
    if trained is None or groups is None or ds.group_by != trained["group_by"]:
        return None
    seen = {g for g in trained["groups"] if g is not None}
    shared = [g for g in groups if g is not None and g in seen]
    common = sorted(set(shared))
    return {"group_by": trained["group_by"], "images": len(shared), "groups": len(common),
            "examples": common[:5]}


def evaluate(model, data: str | Path | Dataset, split: str | None = None, *, batch_size: int = 128,
             skip_bad: bool = False, workers: int | None = None, class_names: list[str] | None = None,
             keep_images: bool = False, reporter: Reporter = QUIET, path_column: str | None = None,
             label_column: str | None = None, groups: str | Path | None = None) -> EvaluationResult:
    """Run ``model`` (a Classifier) over a split of ``data`` in file order and score it.

    Class names are matched by name, so a folder whose classes are a subset of the
    model's, in any order, is scored correctly; an unknown class is an error.
    ``path_column`` / ``label_column`` name a CSV's columns (as for training). When the model
    trained with ``--group-by``, evaluation images of groups it trained on are counted and
    warned about. ``groups`` is a CSV of image paths and group columns (site, sex, ...): the
    figures then hold each subgroup's (:mod:`imageclf.evaluation.report.subgroups`).
    """
    ds = open_for_model(model, data, class_names, path_column=path_column, label_column=label_column)
    chosen = evaluation_split(ds, split, model.config.recipe)
    if groups is not None:  # read before any image is decoded: a bad table stops at once
        read_subgroups(groups, ds, [])
    unknown = sorted(set(ds.classes) - set(model.classes))
    if unknown:
        raise DataError(f"{ds.source}: classes {unknown} are not among the model's {model.classes}")
    remap = np.array([model.classes.index(c) for c in ds.classes])
    pre = model.preprocessing
    with reporter.task(f"decoding {chosen.name}", total=len(chosen)) as bar:
        cached = cache_split(chosen, pre, storage="memory", workers=workers, skip_bad=skip_bad,
                             progress=bar.advance)
    for path, reason in cached.skipped:
        reporter.warn(f"skipped {path}: {reason}")
    with reporter.task("predicting", total=len(cached)) as bar:
        probs, scores = model.predict_scored(cached.images, batch_size, on_batch=bar.advance)
    labels = remap[cached.labels]
    metrics = classification_metrics(labels, probs, model.classes, model.threshold)
    if (ood := ood_summary(labels, decide(probs, model.threshold), scores, model.ood_threshold)) is not None:
        metrics["ood"] = ood
    overlap = overlap_with_training(model.source, cached.images)
    if overlap:
        reporter.warn(f"{overlap} of {len(labels)} evaluation images are identical to training "
                      "images of this model: these figures are not an honest test")
    shared = group_overlap(train_groups(model.source), ds, cached.groups)
    if shared and shared["images"]:
        examples = ", ".join(shared["examples"])
        reporter.warn(f"{shared['images']} of {len(labels)} evaluation images belong to {shared['groups']} "
                      f"groups (--group-by '{shared['group_by']}', e.g. {examples}) that this model "
                      "trained on: these figures are not an honest test on unseen patients")
    paths = [chosen.item_name(int(i)) for i in cached.source_index]
    subgroups = read_subgroups(groups, ds, paths) if groups is not None else None
    split_counts = {}
    for name, s in ds.splits.items():
        counts = np.zeros(len(model.classes), np.int64)
        counts[remap] = s.counts(ds.num_classes)
        split_counts[name] = counts.tolist()
    return EvaluationResult(model.classes, labels, probs, model.threshold, paths, metrics,
                            chosen.name, ds.source, cached.images if keep_images else None,
                            cached.skipped, overlap, model.source, split_counts, shared, subgroups,
                            scores, model.ood_threshold)
