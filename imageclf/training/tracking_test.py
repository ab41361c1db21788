"""Experiment tracking against the real libraries: TensorBoard's event files read back with its own
EventAccumulator, MLflow runs read back from a SQLite tracking store through its client."""

from __future__ import annotations

import csv
import warnings

import pytest

import imageclf
from imageclf.core.errors import ConfigError
from imageclf.training.options import TrainOptions

FAST = dict(img_size=32, channels=1, epochs=2, steps_per_epoch=None, batch_size=16, device="cpu")


def _history(run) -> list[dict]:
    with open(run / "history.csv") as f:
        return list(csv.DictReader(f))


def test_tensorboard_scalars_per_epoch_and_the_recipe(tmp_path, tiny_npz):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "tb"
    imageclf.train(tiny_npz, "catsdogs-2conv", run, log=("tensorboard",), **FAST)
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    assert {
        "train/loss",
        "train/accuracy",
        "val/loss",
        "val/accuracy",
        "val/auc",
        "lr",
        "images_per_s",
    } <= scalars
    history = _history(run)
    losses = events.Scalars("train/loss")
    assert [e.step for e in losses] == [1, 2]
    assert [e.value for e in losses] == pytest.approx([float(r["loss"]) for r in history], rel=1e-5)
    assert [e.value for e in events.Scalars("lr")] == pytest.approx([float(r["lr"]) for r in history])
    recipe_text = events.Tensors("recipe/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "catsdogs-2conv" in recipe_text and "img_size: 32" in recipe_text
    assert (run / "history.csv").is_file()  # the CSV stays, beside the tracker


def _mlflow(tmp_path):
    pytest.importorskip("mlflow")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import mlflow
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(tracking_uri=uri)
    # Artifacts in tmp_path too: a SQLite store's default artifact root is ./mlruns in the CWD.
    client.create_experiment("imageclf", artifact_location=(tmp_path / "artifacts").as_uri())
    return client, uri


def _runs(client) -> list:
    experiment = client.get_experiment_by_name("imageclf")
    return client.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"])


def test_mlflow_params_metrics_and_model_artifacts(tmp_path, tiny_npz):
    """Params, per-epoch metrics and the model folder's files, as MLflow's own client reads them."""
    client, uri = _mlflow(tmp_path)
    run = tmp_path / "runs" / "ml"
    imageclf.train(tiny_npz, "catsdogs-2conv", run, log=("mlflow",), tracking_uri=uri, **FAST)
    [logged] = _runs(client)
    assert logged.info.status == "FINISHED" and logged.info.run_name == "runs/ml"
    params = logged.data.params
    assert params["name"] == "catsdogs-2conv" and params["img_size"] == "32" and "augment.rotation" in params
    history = _history(run)
    val_loss = client.get_metric_history(logged.info.run_id, "val_loss")
    assert [m.step for m in val_loss] == [1, 2]
    assert [m.value for m in val_loss] == pytest.approx([float(r["val_loss"]) for r in history], rel=1e-6)
    assert {"train_loss", "lr", "images_per_s", "final_val_accuracy"} <= set(logged.data.metrics)
    names = {a.path for a in client.list_artifacts(logged.info.run_id, "model")}
    assert {
        "model/model.safetensors",
        "model/config.json",
        "model/ood.safetensors",
        "model/README.md",
        "model/recipe.yaml",
        "model/history.csv",
    } <= names
    assert not any("checkpoint" in n for n in names)


def test_one_mlflow_run_per_fold(tmp_path, tiny_npz):
    from imageclf.training.folds import cross_validate

    client, uri = _mlflow(tmp_path)
    options = TrainOptions(device="cpu", log=("mlflow",), tracking_uri=uri)
    cross_validate(
        tiny_npz,
        "catsdogs-2conv",
        tmp_path / "cv",
        2,
        options,
        img_size=32,
        channels=1,
        epochs=1,
        steps_per_epoch=None,
        batch_size=16,
    )
    runs = _runs(client)
    assert [r.info.run_name for r in runs] == ["cv/fold-1", "cv/fold-2"]
    assert all(r.info.status == "FINISHED" and "val_auc" in r.data.metrics for r in runs)


def test_one_mlflow_run_per_trial(tmp_path, tiny_npz):
    pytest.importorskip("optuna")
    from imageclf.training.tune import tune

    client, uri = _mlflow(tmp_path)
    options = TrainOptions(device="cpu", log=("mlflow",), tracking_uri=uri)
    result = tune(
        tiny_npz,
        "catsdogs-2conv",
        tmp_path / "tune",
        trials=2,
        sizes=[32],
        batch_sizes=[16],
        options=options,
        channels=1,
        epochs=1,
        steps_per_epoch=None,
    )
    runs = _runs(client)
    assert [r.info.run_name for r in runs] == ["tune/trial-000", "tune/trial-001"]
    by_state = {t["run"].split("/")[-1]: t["state"] for t in result.trials}
    for r in runs:
        want = "FINISHED" if by_state[r.info.run_name.split("/")[-1]] == "COMPLETE" else "KILLED"
        assert r.info.status == want
        assert r.data.params["lr"] != ""  # each trial's own sampled recipe


def test_an_unknown_tracker_is_refused_before_training():
    with pytest.raises(ConfigError, match="--log takes csv, tensorboard, mlflow"):
        TrainOptions(log=("wandb",))
    assert TrainOptions(log=("csv", "tensorboard", "tensorboard")).log == ("tensorboard",)
