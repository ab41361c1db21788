"""Interrupted training: kill -9 or Ctrl-C at a random step, ``--resume``, same weights, bit for bit.

And no checkpoint or model file is ever half-written: a kill inside a write, or a full
disk, leaves the previous file intact and no temp file behind (after the next start).

The interrupted runs are real ``imageclf train`` processes; a hook on the optimizer
delivers the signal right after the chosen step's update, the worst moment (weights
changed, the step not yet counted).
"""

from __future__ import annotations

import errno
import importlib
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import safetensors.torch
import torch
from safetensors.torch import load_file

from imageclf.cli.testing import exit_code
from imageclf.core.errors import ImageclfError
from imageclf.data import synthetic as testing
from imageclf.modelfile.artifact import MODEL_FILE
from imageclf.recipes.schema import get_recipe
from imageclf.training.checkpoint import CHECKPOINT_FILE, load_checkpoint

STEPS_PER_EPOCH, EPOCHS = 5, 3  # 40 training images, batches of 8
TOTAL_STEPS = STEPS_PER_EPOCH * EPOCHS

# Runs `imageclf train ...` (argv) and sends itself $SIGNALS right after optimizer step
# $AT_STEP, or (with $KILL_IN_WRITE=n) kills itself half-way through the n-th safetensors write.
_INTERRUPTED_TRAIN = r"""
import importlib, os, signal, sys
import safetensors.torch
import torch

torch.set_num_threads(1)
train_module = importlib.import_module("imageclf.training.loop")
from imageclf.cli import main

from imageclf.training.resume_test import watching_build_optimizer

at_step = int(os.environ.get("AT_STEP", "0"))
signals = [getattr(signal, s) for s in os.environ.get("SIGNALS", "").split(",") if s]
train_module.build_optimizer = watching_build_optimizer(train_module, at_step, signals)

kill_in_write = int(os.environ.get("KILL_IN_WRITE", "0"))
save_file, writes = safetensors.torch.save_file, [0]

def save_then_die(tensors, path, metadata=None):
    writes[0] += 1
    save_file(tensors, path, metadata=metadata)
    if writes[0] == kill_in_write:
        with open(path, "r+b") as f:
            f.truncate(os.path.getsize(path) // 2)
        os.kill(os.getpid(), signal.SIGKILL)

safetensors.torch.save_file = save_then_die
main(sys.argv[1:])
"""



@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """(data, recipe file, reference run): every stateful feature of the loop is switched on."""
    root = tmp_path_factory.mktemp("resume")
    data = testing.make_npz(root / "tiny.npz", n_train=8 * STEPS_PER_EPOCH, n_val=8, size=16)
    recipe = get_recipe("catsdogs-2conv").override({
        "img_size": 16, "channels": 1, "epochs": EPOCHS, "batch_size": 8, "steps_per_epoch": "null",
        "seed": 7, "optimizer": "adam", "lr": 0.003, "optimizer_kwargs": {"eps": 1e-7},
        "ema": 0.9, "mixup": 0.2, "class_weights": "balanced", "label_smoothing": 0.1,
        "grad_clip": 1.0, "schedule": "cosine", "warmup_epochs": 0.5, "reduce_lr.patience": 1,
        "early_stopping.patience": 9})
    recipe_file = root / "recipe.yaml"
    recipe_file.write_text(recipe.to_yaml())
    reference = root / "reference"
    assert _cli(_train_args(data, recipe_file, reference)) == 0
    return data, recipe_file, reference


def _train_args(data, recipe_file, out) -> list[str]:
    # fp32, not auto: on a CPU with native bf16, auto times a step in each precision as the run
    # starts, and a busy machine can decide it one way for the reference and the other for the
    # interrupted run. That a resumed run keeps the precision it started in is loop_test's.
    return ["train", str(data), "-r", str(recipe_file), "-o", str(out), "--device", "cpu", "-q",
            "--precision", "fp32"]


_cli = exit_code


def _interrupted(argv, **env) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", **{k: str(v) for k, v in env.items()})
    return subprocess.run([sys.executable, "-c", _INTERRUPTED_TRAIN, *argv], env=env,
                          capture_output=True, text=True, timeout=300)


def _resume(data, out, command: list[str] | None = None) -> None:
    """``--resume`` alone, or added to the ``command`` that started the run."""
    assert _cli([*(command or ["train", data, "-o", out, "--device", "cpu", "-q"]), "--resume"]) == 0


def assert_same_weights(run: Path, reference: Path, context: str) -> None:
    want, got = load_file(reference / MODEL_FILE), load_file(run / MODEL_FILE)
    assert sorted(want) == sorted(got)
    for name in want:
        assert torch.equal(want[name], got[name]), f"{context}: {name} differs from the reference"
    # The last state too: weights, Adam moments, EMA (the model file holds the best epoch's).
    want_ckpt, got_ckpt = load_file(reference / CHECKPOINT_FILE), load_file(run / CHECKPOINT_FILE)
    for name in want_ckpt:
        assert torch.equal(want_ckpt[name], got_ckpt[name]), f"{context}: checkpoint {name} differs"


def temp_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_kill_9_at_a_random_step_then_resume_is_bit_identical(setup, tmp_path):
    data, recipe_file, reference = setup
    step = random.randrange(STEPS_PER_EPOCH + 1, TOTAL_STEPS)  # after the first epoch's checkpoint
    out = tmp_path / "run"
    proc = _interrupted(_train_args(data, recipe_file, out), AT_STEP=step, SIGNALS="SIGKILL")
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert not (out / MODEL_FILE).exists()
    _, _, meta = load_checkpoint(out)
    assert meta["epoch"] == (step - 1) // STEPS_PER_EPOCH and meta["step_in_epoch"] == 0
    _resume(data, out, _train_args(data, recipe_file, out))  # the command as first typed
    assert_same_weights(out, reference, f"kill -9 after step {step}")


def test_kill_9_inside_a_checkpoint_write_keeps_the_previous_one(setup, tmp_path):
    data, recipe_file, reference = setup
    out = tmp_path / "run"
    # Write 1 is the checkpoint after epoch 1; write 2, after epoch 2, is cut in half and killed.
    proc = _interrupted(_train_args(data, recipe_file, out), KILL_IN_WRITE=2)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert temp_files(out), "the killed write should have left its half-written temp file"
    _, _, meta = load_checkpoint(out)  # the previous checkpoint, whole
    assert meta["epoch"] == 1
    _resume(data, out)
    assert temp_files(out) == []
    assert_same_weights(out, reference, "kill -9 inside the epoch-2 checkpoint write")


@pytest.fixture
def python_sigint():
    """Python's own Ctrl-C handler for the test. A job a shell starts in the background inherits
    SIGINT ignored, and the training guard rightly leaves that alone; these tests are about
    Ctrl-C in a terminal, whatever started pytest."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def watching_build_optimizer(train_module, at_step: int, signals: list[int]):
    """``train_module.build_optimizer`` with a hook that sends ``signals`` to this process right
    after optimizer step ``at_step`` (used in this process and in the interrupted child)."""
    build_optimizer = train_module.build_optimizer

    def build_and_watch(*args, **kwargs):
        opt = build_optimizer(*args, **kwargs)
        steps = [0]

        def after_step(*_):
            steps[0] += 1
            if steps[0] == at_step:
                for sig in signals:
                    os.kill(os.getpid(), sig)

        opt.register_step_post_hook(after_step)
        return opt

    return build_and_watch


def _signal_after_step(monkeypatch, at_step: int, signals: list[int]) -> None:
    """In this process: send ``signals`` to itself right after optimizer step ``at_step``."""
    train_module = importlib.import_module("imageclf.training.loop")
    monkeypatch.setattr(train_module, "build_optimizer",
                        watching_build_optimizer(train_module, at_step, signals))


def test_ctrl_c_mid_step_saves_a_mid_epoch_checkpoint_that_resumes_bit_identical(
        setup, tmp_path, monkeypatch, capsys, python_sigint):
    # In this process (Ctrl-C is an exception here, not a death): the CLI exits 130.
    data, recipe_file, reference = setup
    step = random.choice([s for s in range(STEPS_PER_EPOCH + 1, TOTAL_STEPS) if s % STEPS_PER_EPOCH])
    out = tmp_path / "run"
    _signal_after_step(monkeypatch, step, [signal.SIGINT])
    assert _cli(_train_args(data, recipe_file, out)) == 130
    monkeypatch.undo()
    err = capsys.readouterr().err
    assert "interrupted; checkpoint saved" in err and "--resume" in err
    _, _, meta = load_checkpoint(out)
    # Held until the step was done: the checkpoint counts it, in the middle of its epoch.
    assert (meta["epoch"], meta["step_in_epoch"]) == divmod(step, STEPS_PER_EPOCH), step
    _resume(data, out)
    assert_same_weights(out, reference, f"Ctrl-C during step {step}")


def test_second_ctrl_c_stops_at_once_and_keeps_the_last_consistent_checkpoint(
        setup, tmp_path, monkeypatch, capsys, python_sigint):
    data, recipe_file, reference = setup
    step = random.choice([s for s in range(STEPS_PER_EPOCH + 1, TOTAL_STEPS) if s % STEPS_PER_EPOCH])
    out = tmp_path / "run"
    _signal_after_step(monkeypatch, step, [signal.SIGINT, signal.SIGINT])
    assert _cli(_train_args(data, recipe_file, out)) == 130
    monkeypatch.undo()
    assert "interrupted twice; stopped without a new checkpoint" in capsys.readouterr().err
    _, _, meta = load_checkpoint(out)
    assert (meta["epoch"], meta["step_in_epoch"]) == ((step - 1) // STEPS_PER_EPOCH, 0)
    _resume(data, out)
    assert_same_weights(out, reference, f"double Ctrl-C during step {step}")


# --- a full disk ---------------------------------------------------------------------------

def _full_disk_after(monkeypatch, good_writes: int, error: Exception) -> None:
    """safetensors writes fail after ``good_writes`` successes, half-way through the file."""
    real, count = safetensors.torch.save_file, [0]

    def save_file(tensors, path, metadata=None):
        count[0] += 1
        if count[0] <= good_writes:
            return real(tensors, path, metadata=metadata)
        blob = safetensors.torch.save(tensors, metadata=metadata)
        with open(path, "wb") as f:
            f.write(blob[: len(blob) // 2])
        raise error

    monkeypatch.setattr(safetensors.torch, "save_file", save_file)


ENOSPC = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
# What safetensors itself raises on a full disk (its own type, not an OSError).
SAFETENSORS_ENOSPC = safetensors.SafetensorError(
    "Error while serializing: I/O error: No space left on device (os error 28)")


@pytest.mark.parametrize("error", [ENOSPC, SAFETENSORS_ENOSPC], ids=["oserror", "safetensors"])
def test_full_disk_during_training_keeps_the_last_checkpoint_and_resume_finishes(
        setup, tmp_path, monkeypatch, capsys, error):
    data, recipe_file, reference = setup
    out = tmp_path / "run"
    _full_disk_after(monkeypatch, good_writes=1, error=error)  # the epoch-2 checkpoint fails
    assert _cli(_train_args(data, recipe_file, out)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {out / CHECKPOINT_FILE}: cannot write it (No space left on device); "
                   "the previous version, if any, is unchanged"]
    assert temp_files(out) == []
    _, _, meta = load_checkpoint(out)
    assert meta["epoch"] == 1
    monkeypatch.undo()  # space freed
    _resume(data, out)
    assert_same_weights(out, reference, "resume after a full disk")


def test_full_disk_never_leaves_a_half_model_file(setup, tmp_path, monkeypatch):
    from imageclf.inference.classifier import Classifier
    from imageclf.modelfile.artifact import build_model, read_config, save_model

    _, _, reference = setup
    run = tmp_path / "model"
    run.mkdir()
    for name in (MODEL_FILE, "config.json"):
        (run / name).write_bytes((reference / name).read_bytes())
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    config = read_config(run)
    model = build_model(config)
    torch.nn.init.constant_(next(model.parameters()), 0.5)  # a different model to save over it
    _full_disk_after(monkeypatch, good_writes=0, error=ENOSPC)
    with pytest.raises(ImageclfError, match="model.safetensors: cannot write it"):
        save_model(run, model, config)
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before  # no temp file, both intact
    monkeypatch.undo()

    # config.json on a full disk: Path.write_bytes fails half-way, as a real write would.
    real_write = Path.write_bytes

    def half_then_enospc(self, data):
        real_write(self, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Path, "write_bytes", half_then_enospc)
    with pytest.raises(ImageclfError, match="config.json: cannot write it"):
        save_model(run, Classifier.load(reference, device="cpu").model, config)
    monkeypatch.undo()
    assert (run / "config.json").read_bytes() == before["config.json"]
    assert temp_files(run) == []
