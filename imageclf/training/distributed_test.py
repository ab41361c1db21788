"""Data-parallel training: 2 gloo processes on CPU end with the weights of 1 process."""

from __future__ import annotations

import numpy as np
import pytest

import imageclf
from imageclf.core.errors import ImageclfError
from imageclf.data import synthetic as testing
from imageclf.training import distributed
from imageclf.training.checkpoint import load_checkpoint

# mnist-basic has no dropout and no augmentation: the seed is the only randomness, so the
# two runs can agree to float rounding. SGD rather than Adam: Adam's first steps are
# ~lr * sign(gradient), which would turn a rounding-level difference in a near-zero
# gradient into a full step. fp32: bf16's rounding would turn that difference into 1e-3.
SETTINGS = dict(recipe="mnist-basic", device="cpu", precision="fp32", img_size=28, channels=1, epochs=2,
                optimizer="sgd", optimizer_kwargs={}, lr=0.05)


@pytest.fixture(scope="module")
def odd_npz(tmp_path_factory):
    # 89 = 5 x 16 + 9: the last global batch splits 5 / 4 over two ranks.
    return testing.make_npz(tmp_path_factory.mktemp("ddp") / "odd.npz", n_train=89, n_val=21, size=28)


def test_two_gloo_processes_end_with_the_single_process_weights(tmp_path, odd_npz):
    one, two = tmp_path / "one", tmp_path / "two"
    imageclf.train(odd_npz, out=one, batch_size=16, **SETTINGS)
    # Global batch 2 x 8 = 16, as the single process' 16.
    distributed.launch(2, imageclf.train, odd_npz, out=two, batch_size=8, **SETTINGS)
    a, b = load_checkpoint(one)[0]["model"], load_checkpoint(two)[0]["model"]
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_allclose(a[k].numpy(), b[k].numpy(), rtol=0, atol=1e-5, err_msg=k)
    assert not np.allclose(a["classifier.1.weight"].numpy(), 0)  # it did train
    rows_one = (one / "history.csv").read_text().splitlines()
    rows_two = (two / "history.csv").read_text().splitlines()
    assert len(rows_two) == len(rows_one) == 3  # header + 2 epochs, written once (rank 0)
    # The epoch's training metrics are summed over both ranks: same loss as one process.
    loss_one = [float(r.split(",")[2]) for r in rows_one[1:]]
    loss_two = [float(r.split(",")[2]) for r in rows_two[1:]]
    np.testing.assert_allclose(loss_two, loss_one, rtol=1e-4)


def test_a_worker_user_error_is_one_clear_error(tmp_path):
    with pytest.raises(ImageclfError, match="no such file"):
        distributed.launch(2, imageclf.train, tmp_path / "missing.npz", out=tmp_path / "run", **SETTINGS)


def test_single_process_helpers_are_identities():
    idx = np.arange(10)
    assert distributed.world_size() == 1 and distributed.is_main()
    assert np.array_equal(distributed.shard(idx), idx)
    assert distributed.contiguous_shard(10) == slice(0, 10)
    assert distributed.loss_scale(16) == 1 / 16
    assert distributed.broadcast_flag(True) is True
    rows = np.ones((3, 2))
    assert distributed.all_gather_rows(rows) is rows
