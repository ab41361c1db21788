"""How to run a training (not what to train: that is the recipe), written once.

``imageclf.train(**kwargs)``, :func:`~imageclf.training.folds.cross_validate`,
:func:`~imageclf.training.tune.tune` and the ``imageclf train`` / ``imageclf tune`` commands
all hand one :class:`TrainOptions` down to :func:`~imageclf.training.loop.fit`, so a new
option is one field here (and its flag in ``imageclf/cli/train_cmd.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from imageclf.core.progress import Reporter


@dataclass
class TrainOptions:
    """How to run a training; every field is also a keyword of ``imageclf.train``."""

    device: str = "auto"  # auto (CUDA when present), cpu, cuda, cuda:1, ...
    resume: bool = False  # continue the run folder from its checkpoint
    force: bool = False  # overwrite a run folder that is not empty
    skip_bad: bool = False  # leave unreadable images out, with a warning, instead of stopping
    class_names: list[str] | None = None  # names for an .npz's labels 0, 1, ...
    cache: str = "auto"  # decoded-image cache: auto, memory or disk
    cache_dir: str | None = None  # folder for the disk cache (default ~/.cache/imageclf)
    workers: int | None = None  # processes for the first decoding pass (default: all cores)
    quiet: bool = True  # no progress bars or epoch lines (warnings still show)
    # auto: bf16 autocast on CUDA, fp32 on CPU; bf16: autocast on CPU too (fast with AMX /
    # AVX512-BF16, not bit-exact); fp32: never.
    precision: str = "auto"

    @classmethod
    def split(cls, kwargs: dict[str, Any]) -> tuple[TrainOptions, dict[str, Any]]:
        """The options among ``kwargs`` (by field name), and the rest: recipe overrides."""
        names = {f.name for f in fields(cls)}
        return (cls(**{k: v for k, v in kwargs.items() if k in names}),
                {k: v for k, v in kwargs.items() if k not in names})

    def as_kwargs(self) -> dict[str, Any]:
        """The fields as keywords for ``imageclf.train`` (the inverse of :meth:`split`)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def reporter(self) -> Reporter:
        return Reporter(quiet=self.quiet)
