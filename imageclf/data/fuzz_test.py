"""Fuzzing the image loader: random bytes, and valid files with bytes flipped, cut or inserted.

Whatever comes in, :func:`imageclf.data.images.load_image` returns the model's uint8 input or
raises :class:`BadImageError`; any other exception escaping is a crash the CLI would show
as a traceback and the server as a 500.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from imageclf.core.errors import BadImageError
from imageclf.data.images import Preprocessing, load_image

PRES = [Preprocessing(size=(16, 16), channels=1), Preprocessing(size=(16, 16), channels=3)]
FUZZ = settings(max_examples=300, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _seeds() -> list[bytes]:
    """Small valid files of every format the loader accepts, with the features decoders parse."""
    rng = np.random.default_rng(0)
    gray = Image.fromarray(rng.integers(0, 255, (12, 10), np.uint8))
    rgb = Image.fromarray(rng.integers(0, 255, (12, 10, 3), np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6
    pal = gray.convert("P")
    frames = [Image.new("RGB", (8, 8), c) for c in ((200, 0, 0), (0, 200, 0))]
    seeds = [
        _encode(rgb, "PNG"), _encode(gray, "PNG"), _encode(pal, "PNG", transparency=3),
        _encode(Image.fromarray((rng.integers(0, 65535, (12, 10))).astype(np.uint16)), "PNG"),
        _encode(rgb, "JPEG", quality=80, exif=exif.tobytes()),
        _encode(rgb, "JPEG", progressive=True), _encode(rgb.convert("CMYK"), "JPEG"),
        _encode(frames[0], "GIF", save_all=True, append_images=frames[1:]),
        _encode(rgb, "BMP"), _encode(rgb, "TIFF"), _encode(gray, "TIFF", compression="tiff_lzw"),
        _encode(rgb, "WEBP"), _encode(gray, "PPM"),
    ]
    try:
        from imageclf.data.dicom_test import make_dicom

        seeds.append(make_dicom(np.arange(80, dtype=np.uint16).reshape(8, 10) * 50,
                                WindowCenter=2000, WindowWidth=3000, RescaleSlope=1, RescaleIntercept=0))
    except ImportError:  # no pydicom: DICOM seeds are skipped, not the rest
        pass
    return seeds


SEEDS = _seeds()
MAGICS = [s[:8] for s in SEEDS] + [b"\0" * 128 + b"DICM", b"\x08\x00\x05\x00CS"]


def only_bad_image_error(data: bytes, pre: Preprocessing) -> None:
    try:
        arr = load_image(data, pre)
    except BadImageError:
        return
    assert arr.shape == (*pre.size, pre.channels) and arr.dtype == np.uint8


@st.composite
def mutated(draw) -> bytes:
    """A valid file, then 1-6 edits: a byte set, a run of bytes overwritten, cut, inserted."""
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 6))):
        if not data:
            break
        op = draw(st.sampled_from(["set", "overwrite", "delete", "truncate", "insert"]))
        at = draw(st.integers(0, len(data) - 1))
        if op == "set":
            data[at] = draw(st.integers(0, 255))
        elif op == "overwrite":  # extreme values land in sizes, counts and offsets
            run = draw(st.sampled_from([b"\xff\xff\xff\xff", b"\0\0\0\0", b"\x7f\xff\xff\xff",
                                        b"\x80\0\0\0", b"\xff\xff"]))
            data[at:at + len(run)] = run
        elif op == "delete":
            del data[at:at + draw(st.integers(1, 64))]
        elif op == "truncate":
            del data[at:]
        else:
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
    return bytes(data)


@FUZZ
@given(data=st.binary(max_size=4096), pre=st.sampled_from(PRES))
def test_random_bytes(data, pre):
    only_bad_image_error(data, pre)


@FUZZ
@given(data=st.builds(lambda m, tail: m + tail, st.sampled_from(MAGICS), st.binary(max_size=2048)),
       pre=st.sampled_from(PRES))
def test_a_format_signature_then_random_bytes(data, pre):
    only_bad_image_error(data, pre)


@settings(FUZZ, max_examples=1000)  # where the decoders' deep paths are: most of the budget
@given(data=mutated(), pre=st.sampled_from(PRES))
def test_mutated_valid_files(data, pre):
    only_bad_image_error(data, pre)


@pytest.mark.parametrize("index", range(len(SEEDS)))
def test_the_seeds_themselves_decode(index):
    # A fuzz run whose seeds never decode would only exercise the error path.
    for pre in PRES:
        assert load_image(SEEDS[index], pre).shape == (16, 16, pre.channels)
