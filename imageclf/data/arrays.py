"""The deterministic path from cached uint8 images to model input, in NumPy.

What :func:`imageclf.data.transforms.batch_input` and :func:`~imageclf.data.transforms.tta_views`
do with torch tensors, for the runtimes that take NumPy arrays (ONNX Runtime, OpenVINO): so a
prediction on them never imports torch. The two give the same float32 values.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from imageclf.data.images import Preprocessing


def model_input(images: np.ndarray, pre: Preprocessing) -> np.ndarray:
    """(N, H, W, C) uint8 -> float32 (N, C, H, W) in [0, 1], then (x - mean) / std per channel
    when the preprocessing has them: the exported graph's ``input``."""
    x = np.ascontiguousarray(np.asarray(images).transpose(0, 3, 1, 2), dtype=np.float32)
    x /= np.float32(255.0)  # a division, as transforms.to_float: the same floats to the bit
    if pre.mean is None:
        return x
    mean = np.asarray(pre.mean, np.float32).reshape(1, -1, 1, 1)
    std = np.asarray(pre.std, np.float32).reshape(1, -1, 1, 1)
    return (x - mean) / std


def tta_views(images: np.ndarray, tta: Sequence[str]) -> list[np.ndarray]:
    """(N, H, W, C) images, then their test-time flips in the order ``tta`` names them by kind
    (horizontal flips first), as :func:`imageclf.data.transforms.tta_views` orders them."""
    return ([images] + [images[:, :, ::-1] for t in tta if t == "hflip"]
            + [images[:, ::-1] for t in tta if t == "vflip"])
