"""The NumPy model input and test-time views equal the torch ones."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from imageclf.data import arrays, transforms
from imageclf.data.images import Preprocessing


@pytest.mark.parametrize("mean,std,channels", [(None, None, 1), ((0.3, 0.4, 0.5), (0.2, 0.25, 0.3), 3)])
def test_model_input_is_batch_input_to_the_bit(mean, std, channels):
    pre = Preprocessing(size=(9, 7), channels=channels, mean=mean, std=std)
    images = np.random.default_rng(0).integers(0, 256, (5, 9, 7, channels), dtype=np.uint8)
    got = arrays.model_input(images, pre)
    expected = transforms.batch_input(images, pre, torch.device("cpu")).numpy()
    assert got.dtype == np.float32 and got.shape == (5, channels, 9, 7) and got.flags.c_contiguous
    np.testing.assert_array_equal(got, expected)


def test_tta_views_are_the_torch_views_in_their_order():
    images = np.random.default_rng(1).integers(0, 256, (3, 6, 5, 1), dtype=np.uint8)
    tta = ["vflip", "hflip"]
    expected = transforms.tta_views(torch.from_numpy(images).permute(0, 3, 1, 2), tta)
    got = arrays.tta_views(images, tta)
    assert len(got) == 3
    for g, e in zip(got, expected):
        np.testing.assert_array_equal(g.transpose(0, 3, 1, 2), e.numpy())
    assert not np.array_equal(got[1], got[2])
