import csv
import json
import sys

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

import imageclf
from imageclf.cli.testing import exit_code
from imageclf.conftest import TINY
from imageclf.core.errors import ConfigError, ImageclfError
from imageclf.models.seed_cnns import feature_size, min_input_size
from imageclf.recipes.schema import get_recipe
from imageclf.training.loop import batch_plan, class_weight_vector
from imageclf.training.precision import bf16_cpu_warning, cpu_has_native_bf16, use_bf16

SEED_SIZES = {"xray-alexnet": 67, "xray-4block": 46, "xray-5block": 94, "catsdogs-2conv": 32,
              "mnist-basic": 28}


def _history(run):
    with open(run / "history.csv") as f:
        return list(csv.DictReader(f))


def _weights(run):
    return load_file(str(run / "model.safetensors"))


@pytest.mark.parametrize("recipe", sorted(SEED_SIZES))
def test_every_seed_recipe_trains_one_epoch(tmp_path, tiny_npz, recipe):
    model = imageclf.train(tiny_npz, recipe, tmp_path / "run", device="cpu", epochs=1,
                           img_size=SEED_SIZES[recipe], steps_per_epoch=2, batch_size=8)
    assert (tmp_path / "run" / "model.safetensors").is_file()
    assert model.classes == ["0", "1"]
    rows = _history(tmp_path / "run")
    assert len(rows) == 1 and float(rows[0]["loss"]) > 0
    assert get_recipe(str(tmp_path / "run" / "recipe.yaml")).name == recipe


def test_seed_minimum_sizes_are_the_real_ones():
    from imageclf.models import (
        model_entry,  # noqa: F401
        seed_cnns,
    )
    from imageclf.models.seed_cnns import xray_5block  # noqa: F401
    alex = (seed_cnns.Conv(32, 11, 4), seed_cnns.Pool(3, 2), seed_cnns.Conv(64, 5, same=True),
            seed_cnns.Pool(3, 2), seed_cnns.Conv(96, 3, same=True), seed_cnns.Pool(3, 2))
    assert min_input_size(alex) == 67 and feature_size(alex, 67) == 1


def test_same_seed_gives_bit_identical_weights(tmp_path, tiny_npz):
    settings = dict(device="cpu", **TINY, **{"augment.rotation": 10, "augment.horizontal_flip": True})
    imageclf.train(tiny_npz, "catsdogs-2conv", tmp_path / "a", **settings)
    imageclf.train(tiny_npz, "catsdogs-2conv", tmp_path / "b", **settings)
    a, b = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    assert all(np.array_equal(a[k], b[k]) for k in a)
    imageclf.train(tiny_npz, "catsdogs-2conv", tmp_path / "c", **{**settings, "seed": 1})
    c = _weights(tmp_path / "c")
    assert not all(np.array_equal(a[k], c[k]) for k in a)


def test_resume_continues_to_the_same_weights(tmp_path, tiny_npz):
    full = dict(device="cpu", **{**TINY, "epochs": 3})
    imageclf.train(tiny_npz, "catsdogs-2conv", tmp_path / "full", **full)
    imageclf.train(tiny_npz, "catsdogs-2conv", tmp_path / "part", **{**full, "epochs": 1})
    # precision "auto" on resume: the fp32 the run started in, even where auto would be bf16
    imageclf.train(tiny_npz, out=tmp_path / "part", device="cpu", resume=True, epochs=3)
    a, b = _weights(tmp_path / "full"), _weights(tmp_path / "part")
    assert all(np.array_equal(a[k], b[k]) for k in a)
    history = _history(tmp_path / "part")
    assert [r["epoch"] for r in history] == ["1", "2", "3"]


def test_resume_takes_the_command_that_started_the_run(tmp_path, tiny_npz, capsys):
    run = tmp_path / "run"
    command = ["train", tiny_npz, "--recipe", "mnist-basic", "--seed", "0", "--out", run,
               "--device", "cpu", "-q"]
    assert exit_code([*command, "--epochs", "1"]) == 0
    # The same command plus --resume: the seed is the saved one, and the total of epochs may change.
    assert exit_code([*command, "--epochs", "2", "--resume"]) == 0
    assert [r["epoch"] for r in _history(run)] == ["1", "2"]
    capsys.readouterr()
    another_seed = [*command[:5], "1", *command[6:], "--resume"]
    assert exit_code(another_seed) == 2
    err = capsys.readouterr().err
    assert "only epochs can change when resuming: seed is 0 in the saved recipe, 1 here" in err
    assert exit_code(["train", tiny_npz, "-r", "catsdogs-2conv", "-o", run, "--set", "augment.rotation=5",
                      "--resume", "-q"]) == 2
    err = capsys.readouterr().err
    assert "name is 'mnist-basic' in the saved recipe, 'catsdogs-2conv' here" in err
    assert "augment.rotation is 0.0 in the saved recipe, 5 here" in err
    assert len(_history(run)) == 2  # refused before anything was trained


def test_refuses_to_overwrite_without_force(tmp_path, tiny_npz):
    imageclf.train(tiny_npz, "mnist-basic", tmp_path / "run", device="cpu", epochs=1)
    with pytest.raises(ImageclfError, match="use --force"):
        imageclf.train(tiny_npz, "mnist-basic", tmp_path / "run", device="cpu", epochs=1)
    imageclf.train(tiny_npz, "mnist-basic", tmp_path / "run", device="cpu", epochs=1, force=True)


def test_resume_without_checkpoint_is_a_clear_error(tmp_path, tiny_npz):
    with pytest.raises(ImageclfError, match="no checkpoint.safetensors"):
        imageclf.train(tiny_npz, out=tmp_path / "none", resume=True)


def test_early_stopping_stops_and_keeps_the_best_epoch(tmp_path, tiny_npz):
    # A learning rate this large diverges after the first epoch; patience 1 stops it.
    model = imageclf.train(tiny_npz, "mnist-basic", tmp_path / "run", device="cpu", epochs=8, lr=5.0,
                           **{"early_stopping.patience": 1, "early_stopping.monitor": "val_loss"})
    history = _history(tmp_path / "run")
    assert len(history) < 8
    losses = [float(r["val_loss"]) for r in history]
    assert model.config.metrics["val_loss"] == pytest.approx(min(losses), rel=1e-6)
    assert model.config.metrics["best_epoch"] == 1 + int(np.argmin(losses))


def test_learns_the_synthetic_task(trained_run, tiny_folders):
    model = imageclf.load(trained_run)
    result = model.evaluate(tiny_folders, split="test")
    assert result.metrics["roc_auc"] > 0.9


def test_config_records_classes_preprocessing_and_data(trained_run):
    cfg = imageclf.load(trained_run).config
    assert cfg.classes == ["NORMAL", "PNEUMONIA"]
    assert cfg.preprocessing.size == (32, 32) and cfg.preprocessing.channels == 1
    assert cfg.data["kind"] == "split-folders" and len(cfg.data["sha256"]) == 64
    assert {"torch", "imageclf", "numpy"} <= set(cfg.versions)
    assert cfg.recipe["name"] == "catsdogs-2conv" and cfg.metrics["val_accuracy"] > 0.5


def test_balanced_class_weights():
    w = class_weight_vector(np.array([0] * 30 + [1] * 10), 2)
    assert w.tolist() == pytest.approx([40 / 60, 40 / 20])


def test_batch_plan_covers_each_image_once_per_epoch():
    plan = batch_plan(10, 4, epoch=0, seed=0, steps=None)
    assert [len(b) for b in plan] == [4, 4, 2]
    assert sorted(np.concatenate(plan).tolist()) == list(range(10))
    assert not np.array_equal(np.concatenate(plan), np.concatenate(batch_plan(10, 4, 1, 0, None)))


def test_batch_plan_with_steps_per_epoch_streams_passes():
    e0 = batch_plan(10, 4, epoch=0, seed=0, steps=5)
    e1 = batch_plan(10, 4, epoch=1, seed=0, steps=5)
    assert len(e0) == len(e1) == 5
    stream = e0 + e1  # 10 batches = passes of 3 batches each, cut at step boundaries
    assert sorted(np.concatenate(stream[:3]).tolist()) == list(range(10))
    assert sorted(np.concatenate(stream[3:6]).tolist()) == list(range(10))


def test_cpu_bf16_support_is_read_from_the_cpu_flags():
    assert cpu_has_native_bf16("processor : 0\nflags : fpu avx2 avx512f amx_bf16 amx_tile\n") is True
    assert cpu_has_native_bf16("processor : 0\nflags : fpu avx2 avx512_bf16\n") is True
    assert cpu_has_native_bf16("processor : 0\nflags : fpu sse4_2 avx2 fma\n") is False
    assert cpu_has_native_bf16("processor : 0\n") is False


def test_auto_precision_is_bf16_where_the_hardware_computes_it():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert use_bf16("auto", cpu, native_cpu=True) and not use_bf16("auto", cpu, native_cpu=False)
    assert use_bf16("auto", cuda, native_cpu=False)
    assert not use_bf16("fp32", cpu, native_cpu=True) and use_bf16("bf16", cpu, native_cpu=False)
    assert not use_bf16("auto", torch.device("mps"), native_cpu=True)
    with pytest.raises(ConfigError, match="precision must be one of"):
        use_bf16("fp16", cpu)


def test_the_run_says_which_precision_it_trained_in(tmp_path, tiny_npz):
    for precision in ("fp32", "bf16"):
        imageclf.train(tiny_npz, "xray-4block", tmp_path / precision, device="cpu", epochs=1, img_size=46,
                       steps_per_epoch=1, batch_size=8, quiet=True, precision=precision)
        assert json.loads((tmp_path / precision / "metrics.json").read_text())["precision"] == precision


def test_the_bf16_probe_leaves_the_model_and_the_random_state_as_they_were():
    from imageclf.training.precision import bf16_pays

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Dropout(0.5),
                              torch.nn.Flatten(), torch.nn.Linear(4 * 6 * 6, 1)).eval()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    example = torch.rand(4, 1, 8, 8)
    rng = torch.get_rng_state()
    faster, speedup = bf16_pays(net, example)
    assert isinstance(faster, bool) and speedup > 0 and faster == (speedup >= 1.2)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())  # BN statistics too
    assert torch.equal(torch.get_rng_state(), rng) and not net.training
    assert all(p.grad is None for p in net.parameters())


@pytest.mark.parametrize("measured", [(True, 1.7), (False, 0.8)])
def test_auto_precision_on_a_bf16_cpu_trains_as_the_step_measured(tmp_path, tiny_npz, monkeypatch, capsys,
                                                                   measured):
    # Both names: the loop imported its own (patching only precision's passed only on CPUs with bf16).
    for module in ("imageclf.training.precision", "imageclf.training.loop"):
        monkeypatch.setattr(sys.modules[module], "cpu_has_native_bf16", lambda: True)
    monkeypatch.setattr(sys.modules["imageclf.training.loop"], "bf16_pays", lambda model, example: measured)
    imageclf.train(tiny_npz, "xray-4block", tmp_path / "run", device="cpu", epochs=1, img_size=46,
                   steps_per_epoch=1, batch_size=8, quiet=False)
    precision = json.loads((tmp_path / "run" / "metrics.json").read_text())["precision"]
    assert precision == ("bf16" if measured[0] else "fp32")
    assert f"a bf16 step measured {measured[1]:.2f}x the fp32 one here: training in {precision}" in \
        capsys.readouterr().err


def test_bf16_on_a_cpu_without_it_warns_and_nowhere_else():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert "slower than fp32" in bf16_cpu_warning(True, cpu, native=False)
    assert bf16_cpu_warning(True, cpu, native=True) is None
    assert bf16_cpu_warning(True, cpu, native=None) is None  # unknown CPU: no guess
    assert bf16_cpu_warning(False, cpu, native=False) is None  # fp32 asked for
    assert bf16_cpu_warning(True, cuda, native=False) is None


def test_training_in_bf16_on_a_cpu_without_it_says_so(tmp_path, tiny_npz, monkeypatch, capsys):
    # imageclf.train is the function, so the module is patched through sys.modules.
    monkeypatch.setattr(sys.modules["imageclf.training.loop"], "cpu_has_native_bf16", lambda: False)
    imageclf.train(tiny_npz, "xray-4block", tmp_path / "run", device="cpu", epochs=1, img_size=46,
                   steps_per_epoch=1, batch_size=8, quiet=True, precision="bf16")
    assert "AVX512-BF16" in capsys.readouterr().err


@pytest.mark.parametrize("ema", [None, 0.9])
def test_the_best_epochs_weights_stay_restored_for_validation_and_saving(ema):
    from imageclf.training.callbacks import ModelEma
    from imageclf.training.run import TrainingState

    net = torch.nn.Linear(3, 1)
    state = TrainingState(model=net, optimizer=torch.optim.SGD(net.parameters(), lr=0.1), num_outputs=1,
                          ema=ModelEma(net, ema) if ema else None, device=torch.device("cpu"))
    state.track_best(0.1, "min", epoch=4)
    best = {k: v.clone() for k, v in state.eval_model().state_dict().items()}
    with torch.no_grad():  # later epochs move the weights (and their average) away from the best
        net.weight.add_(1.0)
    if state.ema is not None:
        state.ema.update(net)
    state.track_best(0.5, "min", epoch=5)  # worse: not kept
    state.restore_best()
    for _ in range(2):  # the final validation, then the saved model, each ask for eval_model()
        got = state.eval_model().state_dict()
        assert all(torch.equal(got[k], best[k]) for k in best)


@pytest.mark.parametrize("lr", [1e-3, 30.0])  # a sane run, and one that diverges after its first epoch
def test_final_validation_is_the_restored_epochs_own(tmp_path, tiny_folders, monkeypatch, lr):
    # The final figures are validated again only when the restored weights are not the last
    # epoch's; either way they are the best epoch's, as history.csv has them.
    from imageclf.data.dataset import Dataset
    from imageclf.training import loop

    calls = {"validate": 0, "fingerprint": 0}
    validate, fingerprint = loop.validate, Dataset.fingerprint

    def counting_validate(*args, **kwargs):
        calls["validate"] += 1
        return validate(*args, **kwargs)

    def counting_fingerprint(self):
        calls["fingerprint"] += 1
        return fingerprint(self)

    monkeypatch.setattr(loop, "validate", counting_validate)
    monkeypatch.setattr(Dataset, "fingerprint", counting_fingerprint)
    imageclf.train(tiny_folders, "catsdogs-2conv", tmp_path / "run", device="cpu", **TINY,
                   optimizer="sgd", optimizer_kwargs={}, lr=lr)
    rows = _history(tmp_path / "run")
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    best = rows[metrics["best_epoch"] - 1]
    assert metrics["val_loss"] == pytest.approx(float(best["val_loss"]))
    assert metrics["val_accuracy"] == pytest.approx(float(best["val_accuracy"]))
    assert calls["validate"] == len(rows) + (metrics["best_epoch"] != len(rows))
    assert calls["fingerprint"] == 1  # once per run, not at every checkpoint
