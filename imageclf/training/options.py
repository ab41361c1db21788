"""How to run a training (not what to train: that is the recipe), written once.

``imageclf.train(**kwargs)``, :func:`~imageclf.training.folds.cross_validate`,
:func:`~imageclf.training.tune.tune` and the ``imageclf train`` / ``imageclf tune`` commands
all hand one :class:`TrainOptions` down to :func:`~imageclf.training.loop.fit`, so a new
option is one field here (and its flag in ``imageclf/cli/train_cmd.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from imageclf.core.errors import ConfigError
from imageclf.core.progress import Reporter
from imageclf.data.sources import Dataset, open_dataset

TRACKERS = ("tensorboard", "mlflow")  # what --log may name besides csv (imageclf.training.tracking)


@dataclass
class TrainOptions:
    """How to run a training; every field is also a keyword of ``imageclf.train``."""

    device: str = "auto"  # auto (CUDA when present), cpu, cuda, cuda:1, ...
    resume: bool = False  # continue the run folder from its checkpoint
    force: bool = False  # overwrite a run folder that is not empty
    skip_bad: bool = False  # leave unreadable images out, with a warning, instead of stopping
    # How to read the data (see imageclf.data.sources.open_dataset): names for an .npz's labels
    # 0, 1, ...; a CSV's path and label columns where they have other names; the group of each
    # image (a CSV column or a regular expression on its path), kept on one side of every split;
    # a CSV of images to leave out of training (imageclf review's).
    class_names: list[str] | None = None
    path_column: str | None = None
    label_column: str | None = None
    group_by: str | None = None
    exclude: str | None = None
    cache: str = "auto"  # decoded-image cache: auto, memory or disk
    cache_dir: str | None = None  # folder for the disk cache (default ~/.cache/imageclf)
    workers: int | None = None  # processes for the first decoding pass (default: all cores)
    quiet: bool = True  # no progress bars or epoch lines (warnings still show)
    # auto: bf16 autocast on CUDA, and on a CPU with AMX / AVX512-BF16 where a step measures
    # faster in it, else fp32; bf16: on any CPU (emulated without those: warned); fp32: never
    # (imageclf.training.precision).
    precision: str = "auto"
    # Share of the validation images the out-of-distribution threshold keeps (imageclf.modelfile.ood).
    ood_keep: float = 0.99
    # Experiment trackers beside history.csv (imageclf.training.tracking): tensorboard, mlflow;
    # and MLflow's tracking URI (None: $MLFLOW_TRACKING_URI, else MLflow's default).
    log: tuple[str, ...] = ()
    tracking_uri: str | None = None

    def __post_init__(self) -> None:
        if not 0.0 < self.ood_keep <= 1.0:
            raise ConfigError(f"--ood-keep must be a share in (0, 1], got {self.ood_keep}")
        names = tuple(n for n in self.log if n != "csv")
        unknown = sorted(set(names) - set(TRACKERS))
        if unknown:
            raise ConfigError(f"--log takes csv, {', '.join(TRACKERS)}; got {', '.join(unknown)}")
        self.log = tuple(dict.fromkeys(names))

    @classmethod
    def split(cls, kwargs: dict[str, Any]) -> tuple[TrainOptions, dict[str, Any]]:
        """The options among ``kwargs`` (by field name), and the rest: recipe overrides."""
        names = {f.name for f in fields(cls)}
        return (cls(**{k: v for k, v in kwargs.items() if k in names}),
                {k: v for k, v in kwargs.items() if k not in names})

    def as_kwargs(self) -> dict[str, Any]:
        """The fields as keywords for ``imageclf.train`` (the inverse of :meth:`split`)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def open_dataset(self, data: str | Path | Dataset) -> Dataset:
        """``data`` read with these options (a Dataset is taken as it is)."""
        if isinstance(data, Dataset):
            return data
        return open_dataset(data, self.class_names, path_column=self.path_column,
                            label_column=self.label_column, group_by=self.group_by,
                            exclude=None if self.exclude is None else Path(self.exclude))

    def reporter(self) -> Reporter:
        return Reporter(quiet=self.quiet)
