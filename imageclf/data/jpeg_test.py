import io

import numpy as np
import pytest
from PIL import Image

from imageclf.core.errors import BadImageError, ConfigError
from imageclf.data.images import Preprocessing, load_image
from imageclf.data.jpeg import decode_scaled, plain_size


def _jpeg(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90, **kw)
    return buf.getvalue()


def _noise(h: int, w: int, mode: str = "RGB") -> Image.Image:
    shape = (h, w, 3) if mode == "RGB" else (h, w)
    return Image.fromarray(np.random.default_rng(0).integers(0, 255, shape, np.uint8))


def _pillow_at(data: bytes, mode: str, scale: int) -> np.ndarray:
    img = Image.open(io.BytesIO(data))
    img.draft(mode, (img.size[0] // scale, img.size[1] // scale))
    return np.asarray(img.convert(mode))


@pytest.mark.parametrize("mode, channels", [("RGB", 3), ("L", 1)])
@pytest.mark.parametrize("scale", [1, 2, 4, 8])
def test_at_a_scale_pillow_also_has_the_pixels_are_pillows(mode, channels, scale):
    data = _jpeg(_noise(160, 240))
    target = (160 // scale, 240 // scale)
    ours = np.asarray(decode_scaled(data, target[::-1], channels))
    assert ours.shape[:2] == target
    assert np.array_equal(ours, _pillow_at(data, mode, scale))


def test_the_smallest_eighth_that_keeps_the_target_is_chosen():
    data = _jpeg(_noise(256, 256))
    # 64 of 256: 2/8 exactly; 65 needs 3/8 (96 px) where Pillow's halves would take 1/2 (128).
    assert decode_scaled(data, (64, 64), 3).size == (64, 64)
    assert decode_scaled(data, (65, 65), 3).size == (96, 96)
    assert decode_scaled(data, (130, 130), 3).size == (160, 160)  # 5/8 keeps 130 (jpeg_draft 2)
    assert decode_scaled(data, (64, 65), 3).size == (96, 96)  # width, height: both kept


def test_a_gray_jpeg_for_a_colour_model_is_pillows_conversion():
    data = _jpeg(_noise(64, 64, "L"))
    ours = np.asarray(decode_scaled(data, (64, 64), 3))
    assert np.array_equal(ours, np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))


def test_plain_size_only_for_jpegs_with_nothing_but_pixels():
    exif = Image.Exif()
    exif[0x0112] = 6
    assert plain_size(_jpeg(_noise(30, 40))) == (40, 30)
    assert plain_size(_jpeg(_noise(30, 40, "L"))) == (40, 30)
    assert plain_size(_jpeg(_noise(30, 40), icc_profile=b"\0" * 200)) == (40, 30)  # APP2, not MPF
    assert plain_size(_jpeg(_noise(30, 40), exif=exif)) is None  # APP1: an orientation to read
    assert plain_size(_jpeg(_noise(30, 40), xmp=b"<x:xmpmeta/>")) is None
    assert plain_size(_jpeg(Image.new("CMYK", (40, 30)))) is None
    assert plain_size(b"\xff\xd8\xff garbage") is None
    assert plain_size(b"\x89PNG\r\n\x1a\n") is None


def test_eighths_and_halves_load_the_same_photo_closely_and_a_model_file_says_which():
    data = _jpeg(_noise(256, 200))
    eighths, halves = (Preprocessing((64, 64), 3, jpeg_scales=s) for s in ("eighths", "halves"))
    a, b = load_image(data, eighths).astype(int), load_image(data, halves).astype(int)
    assert a.shape == b.shape == (64, 64, 3) and not np.array_equal(a, b)
    assert Preprocessing((64, 64), 3).jpeg_scales == "eighths"
    assert Preprocessing.from_dict(eighths.to_dict()) == eighths
    older = {k: v for k, v in eighths.to_dict().items() if k != "jpeg_scales"}
    assert Preprocessing.from_dict(older).jpeg_scales == "halves"  # files from before the field
    assert Preprocessing.from_dict(older).to_dict() == older
    with pytest.raises(ConfigError, match="jpeg_scales"):
        Preprocessing((64, 64), 3, jpeg_scales="thirds")


def test_pillow_path_and_plain_path_give_the_same_pixels():
    # An ICC profile keeps the plain path; a (no-op) EXIF block sends the file through Pillow's open.
    img, exif = _noise(120, 90), Image.Exif()
    exif[0x010F] = "camera"
    pre = Preprocessing((40, 30), 3)
    plain, through_pillow = _jpeg(img), _jpeg(img, exif=exif)
    assert plain_size(plain) and not plain_size(through_pillow)
    assert np.array_equal(load_image(plain, pre), load_image(through_pillow, pre))


@pytest.mark.parametrize("scales", ["eighths", "halves"])
def test_truncated_jpeg_is_an_error_not_a_grey_image(scales):
    data = _jpeg(_noise(200, 200))
    with pytest.raises(BadImageError, match="cannot be"):
        load_image(data[: len(data) // 2], Preprocessing((32, 32), 3, jpeg_scales=scales))


def test_pixel_limit_checked_before_decoding_on_the_plain_path():
    data = _jpeg(_noise(200, 200))
    with pytest.raises(BadImageError, match="over the limit"):
        load_image(data, Preprocessing((32, 32), 3, max_pixels=10_000))


def test_cmyk_jpeg_still_loads():
    out = load_image(_jpeg(Image.new("CMYK", (80, 80), (0, 0, 0, 0))), Preprocessing((16, 16), 3))
    assert out.shape == (16, 16, 3) and out.min() > 240  # CMYK zero ink is white
