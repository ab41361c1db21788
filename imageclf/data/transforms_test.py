import numpy as np
import pytest
import torch

from imageclf.core.errors import ConfigError
from imageclf.data.transforms import Augment, affine_matrices, augment, normalize, to_float, to_model_input


def _batch(n=4, h=12, w=16, c=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, c, h, w, generator=g)


def test_inactive_augment_is_identity():
    x = _batch()
    assert augment(x, Augment(), torch.Generator()) is x


def test_horizontal_flip_is_an_exact_mirror():
    x = _batch(n=64)
    out = augment(x.clone(), Augment(horizontal_flip=True), torch.Generator().manual_seed(0))
    flipped = torch.isclose(out, x.flip(3), atol=1e-6).flatten(1).all(1)
    same = torch.isclose(out, x, atol=1e-6).flatten(1).all(1)
    assert bool((flipped | same).all())
    assert 10 < int(flipped.sum()) < 54  # about half


def test_vertical_flip_is_an_exact_mirror():
    x = _batch(n=32)
    out = augment(x.clone(), Augment(vertical_flip=True), torch.Generator().manual_seed(1))
    flipped = torch.isclose(out, x.flip(2), atol=1e-6).flatten(1).all(1)
    same = torch.isclose(out, x, atol=1e-6).flatten(1).all(1)
    assert bool((flipped | same).all()) and flipped.any() and same.any()


def test_rotation_by_90_degrees_matches_rot90_on_square_images():
    x = _batch(n=1, h=9, w=9)
    aug = Augment(rotation=90)
    # Find a generator draw that gives exactly +-90 is impractical; build the matrix directly.
    g = torch.Generator().manual_seed(0)
    m = affine_matrices(1, 9, 9, aug, g, "cpu")
    theta = torch.atan2(m[0, 1, 0], m[0, 0, 0])
    assert abs(float(theta)) <= np.pi / 2 + 1e-6
    m90 = torch.tensor([[[0.0, -1.0, 0.0], [1.0, 0.0, 0.0]]])
    grid = torch.nn.functional.affine_grid(m90, [1, 1, 9, 9], align_corners=False)
    out = torch.nn.functional.grid_sample(x, grid, "nearest", "border", align_corners=False)
    assert torch.equal(out[0, 0], torch.rot90(x[0, 0], 1, (0, 1))) or torch.equal(
        out[0, 0], torch.rot90(x[0, 0], -1, (0, 1)))


def test_shift_moves_content_by_the_fraction():
    x = torch.zeros(1, 1, 10, 10)
    x[0, 0, :, 4] = 1.0
    aug = Augment(width_shift=0.2)
    g = torch.Generator().manual_seed(3)
    m = affine_matrices(1, 10, 10, aug, g, "cpu")
    shift_px = float(m[0, 0, 2]) * 5  # normalised -> pixels (w / 2)
    assert abs(shift_px) <= 2.0 + 1e-6
    assert torch.allclose(m[0, :, :2], torch.eye(2))


def test_rotation_stays_a_rotation_on_non_square_images():
    # The pixel-space linear part must be orthogonal even when H != W.
    m = affine_matrices(8, 10, 40, Augment(rotation=30), torch.Generator().manual_seed(0), "cpu")
    scale = torch.tensor([20.0, 5.0])
    pix = m[:, :, :2] * scale.view(1, 2, 1) / scale.view(1, 1, 2)
    eye = pix @ pix.transpose(1, 2)
    assert torch.allclose(eye, torch.eye(2).expand(8, 2, 2), atol=1e-5)


@pytest.mark.parametrize("fill", ["nearest", "reflect", "constant", "wrap"])
def test_fill_modes_keep_range_and_shape(fill):
    x = _batch(n=8)
    out = augment(x, Augment(rotation=40, zoom=0.3, shear=10, width_shift=0.2, height_shift=0.2,
                             fill_mode=fill, cval=0.5), torch.Generator().manual_seed(0))
    assert out.shape == x.shape and float(out.min()) >= 0 and float(out.max()) <= 1


def test_constant_fill_uses_cval():
    x = torch.zeros(4, 1, 16, 16)
    out = augment(x, Augment(zoom=0.9, fill_mode="constant", cval=0.5), torch.Generator().manual_seed(2))
    assert torch.isclose(out, torch.tensor(0.5)).any()


def test_same_generator_seed_same_result():
    x = _batch(n=8)
    aug = Augment(rotation=20, zoom=0.2, horizontal_flip=True, brightness=(0.8, 1.2), contrast=0.2,
                  erasing=0.5)
    a = augment(x, aug, torch.Generator().manual_seed(5))
    b = augment(x, aug, torch.Generator().manual_seed(5))
    c = augment(x, aug, torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_brightness_multiplies():
    x = torch.full((16, 1, 4, 4), 0.5)
    out = augment(x, Augment(brightness=(0.5, 0.5)), torch.Generator())
    assert torch.allclose(out, torch.full_like(x, 0.25))


def test_erasing_blanks_a_rectangle():
    x = torch.ones(32, 1, 16, 16)
    out = augment(x, Augment(erasing=1.0), torch.Generator().manual_seed(0))
    zeros = (out == 0).flatten(1).sum(1)
    assert bool((zeros > 0).all())
    assert bool((zeros < 16 * 16 * 0.5).all())


def test_uint8_nhwc_to_float_nchw():
    u8 = torch.randint(0, 256, (2, 5, 6, 3), dtype=torch.uint8)
    x = to_float(u8)
    assert x.shape == (2, 3, 5, 6)
    assert torch.allclose(x[1, 2, 3, 4], u8[1, 3, 4, 2].float() / 255)
    assert x.is_contiguous(memory_format=torch.channels_last)


def test_normalize():
    x = torch.ones(1, 3, 2, 2)
    out = normalize(x, (0.5, 0.5, 0.0), (0.5, 0.25, 1.0))
    assert out[0, :, 0, 0].tolist() == [1.0, 2.0, 1.0]
    assert to_model_input(torch.full((1, 2, 2, 1), 255, dtype=torch.uint8)).max() == 1.0


def test_bad_settings_rejected():
    with pytest.raises(ConfigError):
        Augment(fill_mode="mirror")
    with pytest.raises(ConfigError):
        Augment.from_dict({"rotate": 10})
    with pytest.raises(ConfigError):
        Augment(brightness=(1.2, 0.8))
