"""What a prediction gives back (:class:`Predictions`) and which files it reads
(:func:`expand_inputs`), torch-free: ``imageclf predict`` on ONNX Runtime or OpenVINO runs
without PyTorch, and these are the parts of :mod:`imageclf.inference.classifier` it needs."""

from __future__ import annotations

import csv
import glob
import io
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from imageclf.core.decision import decide
from imageclf.core.errors import ConfigError, ImageclfError
from imageclf.core.io import atomic_write_text
from imageclf.data.images import image_files
from imageclf.modelfile.ood_field import OOD_MODES, OUTSIDE


def check_ood_mode(mode: str) -> str:
    if mode not in OOD_MODES:
        raise ConfigError(f"--ood must be one of {', '.join(OOD_MODES)}, got {mode!r}")
    return mode


def no_ood_note(source: str) -> str:
    return (f"{source}: this model has no out-of-distribution statistics (trained before imageclf recorded "
            "them): its answers carry no OOD score; add them with 'imageclf ood RUN DATA'")


@dataclass
class Predictions:
    """Per-image results: ``paths[i]``, ``labels[i]`` (class name) and ``probs[i]`` (per class).

    With OOD scores (``ood_scores[i]``; None for a model without the statistics) an image whose
    score is past ``ood_threshold`` is :attr:`outside`; in ``refuse`` mode (the default) its label
    is :data:`~imageclf.modelfile.ood_field.OUTSIDE` instead of a class, in ``flag`` mode it keeps its
    class and is only flagged. ``indices`` are always the model's class decisions.
    """

    paths: list[str]
    probs: np.ndarray
    classes: list[str]
    threshold: float
    errors: list[tuple[str, str]]
    ood_scores: np.ndarray | None = None
    ood_threshold: float | None = None
    ood_mode: str = "refuse"

    @property
    def indices(self) -> np.ndarray:
        return decide(self.probs, self.threshold) if len(self.probs) else np.zeros(0, np.int64)

    @property
    def outside(self) -> np.ndarray:
        """Whether each image's OOD score is past the threshold (all False without scores)."""
        if self.ood_scores is None or self.ood_threshold is None:
            return np.zeros(len(self.paths), bool)
        return np.asarray(self.ood_scores) > self.ood_threshold

    @property
    def refused(self) -> np.ndarray:
        """The images answered :data:`~imageclf.modelfile.ood_field.OUTSIDE` instead of a class."""
        return self.outside & (self.ood_mode == "refuse")

    @property
    def labels(self) -> list[str]:
        return [OUTSIDE if r else self.classes[i] for i, r in zip(self.indices, self.refused)]

    def __len__(self) -> int:
        return len(self.paths)

    def rows(self) -> list[dict]:
        scored = self.ood_scores is not None
        return [{"path": p, "predicted": label, **{f"p_{c}": float(v) for c, v in zip(self.classes, probs)},
                 **({"ood_score": float(self.ood_scores[i]), "outside": bool(self.outside[i])}
                    if scored else {})}
                for i, (p, label, probs) in enumerate(zip(self.paths, self.labels, self.probs))]

    def to_csv(self, path: str | Path | None = None) -> str:
        buf = io.StringIO()
        extra = ["ood_score", "outside"] if self.ood_scores is not None else []
        columns = ["path", "predicted", *(f"p_{c}" for c in self.classes), *extra]
        writer = csv.DictWriter(buf, fieldnames=columns)
        writer.writeheader()
        for row in self.rows():
            writer.writerow({k: (f"{v:.6f}" if isinstance(v, float) else v) for k, v in row.items()})
        if path is not None:
            atomic_write_text(path, buf.getvalue())
        return buf.getvalue()


class ImagePaths(list):
    """Files :func:`expand_inputs` has listed and checked. Given to it again they come back as
    they are: ``imageclf predict`` expands its arguments to count them (``--backend auto``) before
    the classifier sees them, and a second stat of 5,000 files took 60 ms."""


def expand_inputs(inputs: Iterable[str | Path]) -> list[str]:
    """Files as given, folders walked (image files, sorted), globs expanded; missing -> error."""
    if isinstance(inputs, ImagePaths):
        return inputs
    out: list[str] = []
    for item in inputs:
        s = str(item)
        p = Path(s).expanduser()
        try:  # one stat, not is_dir and is_file: a list of 5,000 files paid 0.1-0.5 s for two
            mode = os.stat(p).st_mode
        except OSError:
            mode = 0
        if stat.S_ISDIR(mode):
            found = image_files(p)
            if not found:
                raise ImageclfError(f"{p}: folder has no images")
            out += found
        elif stat.S_ISREG(mode):
            out.append(str(p))
        elif any(ch in s for ch in "*?["):
            found = sorted(f for f in glob.glob(s, recursive=True) if Path(f).is_file())
            if not found:
                raise ImageclfError(f"{s}: no files match")
            out += found
        else:
            raise ImageclfError(f"{s}: no such file or folder")
    return ImagePaths(out)
