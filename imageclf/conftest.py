"""Shared pytest fixtures: small synthetic datasets and one tiny trained run per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from imageclf.data import synthetic as testing

# One thread: tests are tiny (overhead, not arithmetic), and OpenMP's spin-waiting turns a
# loaded machine's second thread into a large slowdown.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Every test starts on one thread, whatever an earlier test (a DDP worker set-up in this
    process, say) changed; bit-identity tests compare runs with the same thread count."""
    torch.set_num_threads(1)
    yield


# Keep tests from touching the user's real cache.
os.environ.setdefault("IMAGECLF_CACHE", str(Path(os.environ.get("TMPDIR", "/tmp")) / "imageclf-test-cache"))


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="session")
def tiny_npz(data_dir) -> Path:
    """Two-class 28 px npz: 96 train, 32 val, 32 test images."""
    return testing.make_npz(data_dir / "tiny.npz", n_train=96, n_val=32, n_test=32, size=28)


@pytest.fixture(scope="session")
def tiny_folders(data_dir) -> Path:
    """Split folders train/ val/ test/ with NORMAL and PNEUMONIA, 32 px PNGs (64 per split)."""
    return testing.make_class_folders(data_dir / "splits", n=64, size=32, splits=("train", "val", "test"))


# Fast settings for the tiny runs: the catsdogs-2conv network at 32 px gray. In fp32, so the
# shared model is the same on every CI machine (auto trains in bf16 where the CPU has it).
TINY = dict(img_size=32, channels=1, epochs=3, steps_per_epoch=None, batch_size=8, precision="fp32")


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, tiny_folders) -> Path:
    """One tiny trained model folder, shared by tests that only read it."""
    import imageclf

    out = tmp_path_factory.mktemp("runs") / "tiny"
    imageclf.train(tiny_folders, "catsdogs-2conv", out, device="cpu", **TINY)
    return out
