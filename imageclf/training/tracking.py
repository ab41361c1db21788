"""Experiment tracking beside the CSV history: ``imageclf train ... --log tensorboard --log mlflow``.

``RUN/history.csv`` is always written; each tracker named in ``TrainOptions.log`` also gets,
for one training run (so one per fold of ``--folds`` and per trial of ``tune``, each calling
:func:`~imageclf.training.loop.fit`):

- the resolved recipe as parameters (dotted keys: ``augment.rotation``),
- every epoch's history row as scalars (losses, accuracy, ROC-AUC, learning rate, images/s),
- at the end, the final validation figures and, for MLflow, the model folder's files as
  artifacts under ``model/`` (the checkpoint left out: it is only for ``--resume``).

TensorBoard writes event files to ``RUN/tensorboard/`` (``tensorboard --logdir runs``). MLflow
logs to ``TrainOptions.tracking_uri`` (``--tracking-uri``; else ``$MLFLOW_TRACKING_URI``, else
MLflow's default), in the experiment ``imageclf``, one run named after the run folder. Both are
optional extras (``pip install 'imageclf[tracking]'``), imported only when asked for. Only the
main process of a DDP run logs.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from imageclf.core.errors import ConfigError
from imageclf.modelfile.artifact import (
    CONFIG_FILE,
    HISTORY_FILE,
    METRICS_FILE,
    MODEL_FILE,
    RECIPE_FILE,
)
from imageclf.modelfile.card import CARD_FILE
from imageclf.modelfile.ood import OOD_FILE
from imageclf.training.options import TRACKERS

TENSORBOARD_DIR = "tensorboard"
EXPERIMENT = "imageclf"
# The model folder as MLflow artifacts: everything a user loads or reads, not the checkpoint.
ARTIFACT_FILES = (MODEL_FILE, CONFIG_FILE, OOD_FILE, CARD_FILE, RECIPE_FILE, HISTORY_FILE, METRICS_FILE)
# history.csv column -> scalar name: grouped as TensorBoard and MLflow show them.
SCALAR_NAMES = {
    "loss": "train/loss",
    "accuracy": "train/accuracy",
    "val_loss": "val/loss",
    "val_accuracy": "val/accuracy",
    "val_auc": "val/auc",
    "lr": "lr",
    "images_per_s": "images_per_s",
    "seconds": "epoch_seconds",
}


def check_trackers(names: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """The ``--log`` names, checked (``csv``, always written, is accepted and dropped)."""
    out = tuple(n for n in names if n != "csv")
    unknown = sorted(set(out) - set(TRACKERS))
    if unknown:
        raise ConfigError(f"--log takes csv, {', '.join(TRACKERS)}; got {', '.join(unknown)}")
    return tuple(dict.fromkeys(out))


def flat_params(d: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """A nested recipe as ``{dotted.key: value as text}``."""
    out: dict[str, str] = {}
    for key, value in d.items():
        if isinstance(value, dict) and value:
            out.update(flat_params(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value if isinstance(value, str) else json.dumps(value)
    return out


def scalars(row: dict[str, Any]) -> dict[str, float]:
    return {
        SCALAR_NAMES.get(k, k): float(v)
        for k, v in row.items()
        if k != "epoch" and isinstance(v, int | float) and not isinstance(v, bool)
    }


class TensorBoardTracker:
    def __init__(self, run_dir: Path, params: dict[str, str], recipe_yaml: str) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # torch's writer needs the tensorboard package
            raise ConfigError(
                "--log tensorboard needs TensorBoard: pip install 'imageclf[tracking]'"
            ) from None
        self.writer = SummaryWriter(log_dir=str(run_dir / TENSORBOARD_DIR))
        self.writer.add_text("recipe", "```\n" + recipe_yaml + "\n```", 0)
        self.params = params

    def log_epoch(self, row: dict[str, Any]) -> None:
        for name, value in scalars(row).items():
            self.writer.add_scalar(name, value, int(row["epoch"]))
        self.writer.flush()

    def finish(self, run_dir: Path, metrics: dict[str, Any]) -> None:
        final = {f"final/{k}": v for k, v in scalars(metrics).items()}
        self.writer.add_hparams(self.params, final, run_name="hparams")

    def close(self, status: str) -> None:
        self.writer.close()


class MlflowTracker:
    def __init__(self, run_dir: Path, params: dict[str, str], tracking_uri: str | None) -> None:
        try:
            import mlflow
        except ImportError:
            raise ConfigError("--log mlflow needs MLflow: pip install 'imageclf[tracking]'") from None
        self.client = mlflow.MlflowClient(tracking_uri=tracking_uri)
        experiment = self.client.get_experiment_by_name(EXPERIMENT)
        experiment_id = (
            experiment.experiment_id if experiment is not None else self.client.create_experiment(EXPERIMENT)
        )
        name = f"{run_dir.parent.name}/{run_dir.name}" if run_dir.parent.name else run_dir.name
        self.run = self.client.create_run(
            experiment_id, run_name=name, tags={"imageclf.run_dir": str(run_dir.resolve())}
        )
        self.run_id = self.run.info.run_id
        from mlflow.entities import Metric, Param

        self.metric = Metric
        items = [Param(k, str(v)[:6000]) for k, v in params.items()]
        for start in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
            self.client.log_batch(self.run_id, params=items[start : start + 100])

    def log_epoch(self, row: dict[str, Any]) -> None:
        step, now = int(row["epoch"]), int(time.time() * 1000)
        metrics = [self.metric(k.replace("/", "_"), v, now, step) for k, v in scalars(row).items()]
        self.client.log_batch(self.run_id, metrics=metrics)

    def finish(self, run_dir: Path, metrics: dict[str, Any]) -> None:
        now = int(time.time() * 1000)
        final = [self.metric(f"final_{k.replace('/', '_')}", v, now, 0) for k, v in scalars(metrics).items()]
        self.client.log_batch(self.run_id, metrics=final)
        for name in ARTIFACT_FILES:
            if (run_dir / name).is_file():
                self.client.log_artifact(self.run_id, str(run_dir / name), artifact_path="model")

    def close(self, status: str) -> None:
        self.client.set_terminated(self.run_id, status)


class Tracking:
    """The trackers of one training run; a context that ends their runs with the right status."""

    def __init__(
        self, names: tuple[str, ...], run_dir: Path, recipe, tracking_uri: str | None = None
    ) -> None:
        params = flat_params(recipe.to_dict())
        self.trackers: list = []
        try:
            for name in check_trackers(names):
                self.trackers.append(
                    TensorBoardTracker(run_dir, params, recipe.to_yaml())
                    if name == "tensorboard"
                    else MlflowTracker(run_dir, params, tracking_uri)
                )
        except BaseException:
            self.close("FAILED")
            raise
        self.stopped = False  # set when the caller's epoch callback stopped the run (a pruned trial)

    def log_epoch(self, row: dict[str, Any]) -> None:
        for t in self.trackers:
            t.log_epoch(row)

    def wrap(self, on_epoch: Callable[[dict], None] | None) -> Callable[[dict], None]:
        """An epoch callback: the trackers get the row, then ``on_epoch``; a raise from it (a
        pruned trial) marks their runs as stopped, not failed."""

        def each(row: dict) -> None:
            self.log_epoch(row)
            if on_epoch is not None:
                try:
                    on_epoch(row)
                except BaseException:
                    self.stopped = True
                    raise

        return each

    def finish(self, run_dir: Path, metrics: dict[str, Any]) -> None:
        for t in self.trackers:
            t.finish(run_dir, metrics)

    def close(self, status: str) -> None:
        for t in self.trackers:
            t.close(status)

    def __enter__(self) -> Tracking:
        return self

    def __exit__(self, kind, exc, tb) -> None:
        interrupted = kind is not None and (issubclass(kind, KeyboardInterrupt) or self.stopped)
        self.close("FINISHED" if kind is None else "KILLED" if interrupted else "FAILED")
