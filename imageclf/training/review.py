"""Label-issue review: ``imageclf review DATA --recipe R --folds K --out DIR``.

Every training image (the cross-validation pool: train + val, never test) gets an
out-of-fold probability: the pool is decoded once, cut into K stratified folds (whole
groups with ``--group-by``), and for each fold a model trained on the other K - 1 folds
(:func:`~imageclf.training.loop.fit`, into ``DIR/fold-k``) scores it. Those probabilities
rank the images by how likely their given label is wrong (confident learning, Northcutt et
al. 2021): with `cleanlab <https://github.com/cleanlab/cleanlab>`_ installed (the
``review`` extra), its label-quality scores and ``find_label_issues``; without it, the same
self-confidence / normalized-margin scores and the confident-joint rule written out here.

``DIR/review.csv`` (every image, most suspect first) and ``DIR/review.html`` (the top of
the list with thumbnails) are written atomically once every fold has run. Its ``exclude``
column is true for the images flagged as label issues; edit it, then
``imageclf train DATA --exclude DIR/review.csv`` trains without them.
"""

from __future__ import annotations

import csv
import io
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from imageclf.core.errors import ConfigError, DataError
from imageclf.core.io import atomic_write_text, check_output_folder
from imageclf.data.cache import cache_split
from imageclf.data.dataset import item_key
from imageclf.data.sources import Dataset, Split
from imageclf.evaluation.label_issues import rank_label_issues
from imageclf.evaluation.names import RANKINGS
from imageclf.evaluation.report.review_html import review_html
from imageclf.inference.classifier import Classifier
from imageclf.modelfile.artifact import REVIEW_CSV_FILE, REVIEW_HTML_FILE
from imageclf.recipes import resolve_recipe
from imageclf.recipes.schema import Recipe
from imageclf.training.folds import cv_pool, fold_assignment
from imageclf.training.loop import fit
from imageclf.training.options import TrainOptions


@dataclass
class Review:
    """What a review found: ``rows`` are every image, most suspect first (as in review.csv)."""

    out: Path
    classes: list[str]
    rows: list[dict[str, Any]]
    method: str
    folds: int
    seconds: float
    skipped: list[tuple[str, str]]

    @property
    def issues(self) -> int:
        return sum(r["issue"] for r in self.rows)

    def summary(self) -> str:
        return (f"reviewed {len(self.rows)} images in {self.folds} folds ({self.seconds:.0f} s; "
                f"{self.method}): {self.issues} likely label issues\n{self.out / REVIEW_CSV_FILE}\n"
                f"{self.out / REVIEW_HTML_FILE}")

    def to_csv(self) -> str:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(self.rows[0]), lineterminator="\n")
        writer.writeheader()
        for row in self.rows:
            writer.writerow({k: (f"{v:.6f}" if isinstance(v, float) else str(v).lower() if isinstance(v, bool)
                                 else v) for k, v in row.items()})
        return buf.getvalue()


def check_reviewable(ds: Dataset, pool: Split, folds: int) -> None:
    counts = np.bincount(pool.labels, minlength=ds.num_classes)
    present = [c for c, n in zip(ds.classes, counts) if n]
    if len(present) < 2:
        raise DataError(f"{ds.source}: every training image is labelled {present[0]!r}: a review compares "
                        "classes and needs images of at least two")
    if folds < 2:
        raise ConfigError(f"--folds needs at least 2 folds, got {folds}")
    if counts.min() < folds:
        small = ds.classes[int(counts.argmin())]
        raise DataError(f"{ds.source}: class {small!r} has only {int(counts.min())} training images, fewer "
                        f"than {folds} folds")


def review(data: str | Path | Dataset, recipe: str | Path | Recipe, out: str | Path, folds: int = 5,
           options: TrainOptions | None = None, *, rank_by: str = "self_confidence", html_rows: int = 200,
           **overrides: Any) -> Review:
    """Rank every training image of ``data`` by how likely its label is wrong; see the module doc.

    ``options`` say how each fold trains (``force`` lets ``out`` be overwritten); ``overrides``
    change the recipe (few ``epochs`` make a quick review). ``html_rows`` images head the page.

    >>> review("xrays.npz", "xray-fast", "runs/review", folds=5, epochs=5).issues  # doctest: +SKIP
    """
    t0 = time.perf_counter()
    options = options or TrainOptions()
    if rank_by not in RANKINGS:
        raise ConfigError(f"--rank-by must be one of {', '.join(RANKINGS)}, got {rank_by!r}")
    resolved = resolve_recipe(recipe, overrides)
    ds = options.open_dataset(data)
    pool = cv_pool(ds)
    check_reviewable(ds, pool, folds)
    out = Path(out)
    check_output_folder(out, options.force)  # before anything is decoded or written
    rep = options.reporter()
    with rep.task("decoding the training images", total=len(pool)) as bar:
        cached = cache_split(pool, resolved.preprocessing(), storage="memory", workers=options.workers,
                             skip_bad=options.skip_bad, progress=bar.advance)
    for path, reason in cached.skipped[:20]:
        rep.warn(f"skipped {path}: {reason}")
    images, labels = np.asarray(cached.images), cached.labels
    assignment = fold_assignment(labels, folds, resolved.carve_seed, cached.groups)
    out.mkdir(parents=True, exist_ok=True)
    probs = np.zeros((len(labels), ds.num_classes))
    fold_options = replace(options, force=True, resume=False, cache="memory")
    for k in range(folds):
        held = np.flatnonzero(assignment == k)
        train = np.flatnonzero(assignment != k)
        rep.print(f"[bold]fold {k + 1}/{folds}[/bold]: train {len(train)} / score {len(held)}")
        fold_ds = Dataset(ds.source, ds.kind, ds.classes, {
            "train": Split("train", labels[train], arrays=images[train]),
            "val": Split("val", labels[held], arrays=images[held])}, layout=ds.layout)
        result = fit(fold_ds, resolved, out / f"fold-{k + 1}", fold_options)
        model = Classifier.load(result.path, device=result.device)
        probs[held] = model.predict_arrays(images[held])
    scores, issues, method = rank_label_issues(labels, probs, rank_by)
    names = [pool.item_name(int(i)) for i in cached.source_index]
    order = np.argsort(scores, kind="stable")  # lowest label quality first, ties in data order
    suggested = probs.argmax(1)
    rows = [{"rank": rank, "path": item_key(names[i]), "given": ds.classes[labels[i]],
             "suggested": ds.classes[suggested[i]], "score": float(scores[i]), "issue": bool(issues[i]),
             "exclude": bool(issues[i]), "fold": int(assignment[i]) + 1,
             **{f"p_{c}": float(probs[i, j]) for j, c in enumerate(ds.classes)}}
            for rank, i in enumerate(order, start=1)]
    result = Review(out, list(ds.classes), rows, method, folds, time.perf_counter() - t0, cached.skipped)
    atomic_write_text(out / REVIEW_CSV_FILE, result.to_csv())
    page = review_html(rows[:html_rows], images[order[:html_rows]], result.classes, method, ds.source,
                       len(rows), result.issues)
    atomic_write_text(out / REVIEW_HTML_FILE, page)
    return result
