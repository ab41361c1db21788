"""A corpus of broken, odd and hostile image files, built here (nothing large is committed).

Every file is either decoded correctly (16-bit, CMYK, palette, EXIF-rotated, animated,
1 x 1, gray <-> RGB, wrong extension) or refused with a message naming it (empty,
truncated, text, decompression bomb): by ``load_image``, ``imageclf train`` (exit 2, or
``--skip-bad`` reports and goes on) and ``imageclf predict``. The bomb is refused from its
header, without its pixels ever being allocated.
"""

from __future__ import annotations

import io
import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import imageclf
from imageclf.cli.testing import exit_code
from imageclf.core.errors import BadImageError
from imageclf.data import synthetic as testing
from imageclf.data.images import Preprocessing, load_image

# --- building the corpus -------------------------------------------------------------------

def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def raw_png(width: int, height: int, depth: int, color_type: int, idat: bytes) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, depth, color_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat)
            + _png_chunk(b"IEND", b""))


def bomb_png(side: int = 30_000) -> bytes:
    """A valid side x side 8-bit gray PNG of zeros: ``side**2`` bytes of pixels in a small file.

    Built without ever holding the pixels: one deflate block of 64 zero rows, emitted after
    a full flush (so every copy is byte-identical), repeated; the zlib checksum of n zero
    bytes is ``(n % 65521) << 16 | 1``.
    """
    row = b"\0" * (side + 1)  # filter byte + pixels
    rows = 64
    c = zlib.compressobj(9)
    first = c.compress(row * rows) + c.flush(zlib.Z_FULL_FLUSH)
    again = c.compress(row * rows) + c.flush(zlib.Z_FULL_FLUSH)
    full, tail_rows = divmod(side, rows)
    tail = c.compress(row * tail_rows) + c.flush()
    total = len(row) * side
    idat = first + again * (full - 1) + tail[:-4] + struct.pack(">I", (total % 65521) << 16 | 1)
    return raw_png(side, side, 8, 0, idat)


def pattern(h: int = 32, w: int = 48) -> np.ndarray:
    """An asymmetric gray pattern of flat blocks (survives JPEG, shows any flip or turn)."""
    arr = np.full((h, w), 40, np.uint8)
    arr[: h // 2, : w // 3] = 230
    arr[h // 2:, w // 3: 2 * w // 3] = 140
    arr[: h // 4, 2 * w // 3:] = 90
    return arr


def rgb_pattern() -> Image.Image:
    p = pattern()
    return Image.fromarray(np.stack([p, p[::-1], 255 - p], -1))


def exif_jpeg(orientation: int, arr: np.ndarray) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(Image.fromarray(arr), "JPEG", quality=95, exif=exif.tobytes())


def animated_gif() -> bytes:
    frames = [Image.new("RGB", (16, 16), c) for c in ((200, 0, 0), (0, 200, 0), (0, 0, 200))]
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)


def palette_png() -> bytes:
    """Left half palette index 0 (red, fully transparent), right half index 1 (opaque green)."""
    img = Image.new("P", (16, 16), 1)
    img.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    img.paste(0, (0, 0, 8, 16))
    return encode(img, "PNG", transparency=0)


def sixteen_bit_png() -> bytes:
    ramp = np.tile(np.linspace(0, 65535, 64).astype(np.uint16), (8, 1))
    return encode(Image.fromarray(ramp), "PNG")


def rgb48_png() -> bytes:
    """A 16-bit-per-channel RGB PNG (Pillow reads it as 8-bit RGB from the high bytes)."""
    px = np.zeros((4, 4, 3), ">u2")
    px[..., 0], px[..., 1], px[..., 2] = 0xC800, 0x6400, 0x1400  # 200, 100, 20 in the high byte
    rows = b"".join(b"\0" + px[y].tobytes() for y in range(4))
    return raw_png(4, 4, 16, 2, zlib.compress(rows))


def unreadable() -> dict[str, tuple[bytes, str]]:
    """File name -> (content, words the refusal must contain)."""
    png = encode(rgb_pattern(), "PNG")
    jpeg = encode(rgb_pattern(), "JPEG", quality=90)
    return {
        "zero-bytes.png": (b"", "empty file"),
        "truncated.jpg": (jpeg[: len(jpeg) // 2], "truncated"),
        "truncated.png": (png[: len(png) // 2], "truncated"),
        "[red]notes.png": (b"these are my notes, not an image\n", "not an image"),
        "bomb.png": (bomb_png(30_000), "pixels"),
        # Between Pillow's warning and error thresholds: once crashed with UnboundLocalError.
        "bomb-144mpx.png": (bomb_png(12_000), "12000 x 12000 = 144,000,000 pixels"),
    }


def readable() -> dict[str, bytes]:
    g = Image.fromarray(pattern())
    return {
        "png-named.jpg": encode(rgb_pattern(), "PNG"),
        "jpeg-named.png": encode(rgb_pattern(), "JPEG", quality=95),
        "sixteen-bit.png": sixteen_bit_png(),
        "rgb48.png": rgb48_png(),
        "cmyk.jpg": encode(Image.new("RGB", (16, 16), (200, 120, 40)).convert("CMYK"), "JPEG", quality=95),
        "palette-alpha.png": palette_png(),
        "exif-rotated.jpg": exif_jpeg(6, pattern()),
        "one-pixel.png": encode(Image.new("L", (1, 1), 77), "PNG"),
        "animated.gif": animated_gif(),
        "gray.png": encode(g, "PNG"),
        "rgb.png": encode(rgb_pattern(), "PNG"),
    }


def write_all(folder: Path, files: dict[str, bytes]) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, data in files.items():
        out[name] = folder / name
        out[name].write_bytes(data)
    return out


GRAY = Preprocessing(size=(32, 32), channels=1)
RGB = Preprocessing(size=(32, 32), channels=3)



@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    """A model trained for one epoch on 16 px gray images (what predict needs: a real run)."""
    data = testing.make_class_folders(tmp_path_factory.mktemp("data") / "d", n=16, size=16)
    out = tmp_path_factory.mktemp("runs") / "tiny"
    assert _run(["train", data, "-o", out, *TRAIN_ARGS]) == 0
    return out


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("corpus")
    write_all(folder / "bad", {k: v[0] for k, v in unreadable().items()})
    write_all(folder / "good", readable())
    return folder


# --- load_image: refused by name, or decoded right -----------------------------------------

@pytest.mark.parametrize("name", list(unreadable()))
@pytest.mark.parametrize("pre", [GRAY, RGB], ids=["gray", "rgb"])
def test_unreadable_files_refused_naming_the_file(corpus, name, pre):
    path = corpus / "bad" / name
    with pytest.raises(BadImageError) as err:
        load_image(path, pre)
    assert str(err.value).startswith(f"{path}: ")
    assert unreadable()[name][1] in err.value.reason.lower()


@pytest.mark.parametrize("name", list(readable()))
@pytest.mark.parametrize("pre", [GRAY, RGB], ids=["gray", "rgb"])
def test_odd_but_valid_files_decode_to_the_model_input(corpus, name, pre):
    arr = load_image(corpus / "good" / name, pre)
    assert arr.shape == (32, 32, pre.channels) and arr.dtype == np.uint8


def test_format_comes_from_content_not_extension(corpus):
    as_png = load_image(corpus / "good" / "rgb.png", RGB)
    assert np.array_equal(load_image(corpus / "good" / "png-named.jpg", RGB), as_png)
    jpeg_as_png = load_image(corpus / "good" / "jpeg-named.png", RGB).astype(int)
    assert np.abs(jpeg_as_png - as_png).mean() < 4


@pytest.mark.parametrize("orientation, turn", [
    (2, np.fliplr), (3, lambda a: np.rot90(a, 2)), (6, lambda a: np.rot90(a, -1)),
    (8, lambda a: np.rot90(a, 1)),
])
def test_exif_orientation_turns_the_pixels(orientation, turn):
    arr = pattern()
    want = turn(arr)
    got = load_image(exif_jpeg(orientation, arr), Preprocessing(size=want.shape, channels=1))[..., 0]
    assert np.abs(got.astype(int) - want).mean() < 4
    if want.shape == arr.shape:  # and it is not just the unturned image
        assert np.abs(got.astype(int) - arr).mean() > 30


def test_sixteen_bit_png_spans_the_8_bit_range_in_order():
    row = load_image(sixteen_bit_png(), Preprocessing(size=(8, 64), channels=1))[0, :, 0].astype(int)
    assert row[0] == 0 and row[-1] == 255 and (np.diff(row) >= 0).all()


def test_rgb48_png_keeps_its_colour():
    assert load_image(rgb48_png(), Preprocessing(size=(4, 4), channels=3))[0, 0].tolist() == [200, 100, 20]


def test_cmyk_jpeg_comes_back_as_its_rgb_colour(corpus):
    px = load_image(corpus / "good" / "cmyk.jpg", RGB)[16, 16].astype(int)
    assert np.abs(px - [200, 120, 40]).max() <= 6


def test_transparent_palette_pixels_black_opaque_ones_their_colour(corpus):
    out = load_image(corpus / "good" / "palette-alpha.png", Preprocessing(size=(16, 16), channels=3))
    assert out[:, :8].max() == 0
    assert (out[:, 8:] == [0, 255, 0]).all()


def test_animated_gif_gives_its_first_frame(corpus):
    out = load_image(corpus / "good" / "animated.gif", RGB)
    assert (np.abs(out.astype(int) - [200, 0, 0]) <= 2).all()


def test_one_pixel_image_fills_the_input(corpus):
    assert (load_image(corpus / "good" / "one-pixel.png", GRAY) == 77).all()


def test_gray_file_for_rgb_model_and_rgb_file_for_gray_model(corpus):
    gray = load_image(corpus / "good" / "gray.png", GRAY)[..., 0]
    as_rgb = load_image(corpus / "good" / "gray.png", RGB)
    assert all(np.array_equal(as_rgb[..., c], gray) for c in range(3))
    rgb = load_image(corpus / "good" / "rgb.png", RGB).astype(float)
    luma = rgb @ [0.299, 0.587, 0.114]
    assert np.abs(load_image(corpus / "good" / "rgb.png", GRAY)[..., 0] - luma).max() <= 1.0


# --- the bomb costs nothing ----------------------------------------------------------------

_BOMB_PROBE = r"""
import resource, sys, types
from PIL import Image

# The images module alone (numpy + Pillow), without the package's torch import, so the
# baseline is small and every KiB of growth is the decode's.
package = types.ModuleType("imageclf")
package.__path__ = [sys.argv[2]]
sys.modules["imageclf"] = package
from imageclf.core.errors import BadImageError
from imageclf.data.images import Preprocessing, load_image

pre = Preprocessing(size=(32, 32), channels=1)
for pillow_limit in ("on", "off"):
    if pillow_limit == "off":  # as some libraries set it: then only imageclf's guard is left
        Image.MAX_IMAGE_PIXELS = None
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:
        load_image(sys.argv[1], pre)
        outcome = "decoded"
    except BadImageError as exc:
        outcome = "refused: " + exc.reason
    grew = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    print(f"{pillow_limit}\t{grew}\t{outcome}", flush=True)
"""


def test_decompression_bomb_refused_without_allocating_its_pixels(corpus):
    # A child process, so the peak resident size (ru_maxrss, KiB) is this decode's alone.
    bomb = corpus / "bad" / "bomb.png"
    assert bomb.stat().st_size < 1_000_000  # < 1 MB on disk, 900 MB of pixels
    package = Path(imageclf.__file__).parent
    out = subprocess.run([sys.executable, "-c", _BOMB_PROBE, str(bomb), str(package)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    lines = dict((ln.split("\t")[0], ln.split("\t")[1:]) for ln in out.stdout.splitlines())
    for pillow_limit in ("on", "off"):
        grew_kib, outcome = lines[pillow_limit]
        assert outcome.startswith("refused") and "pixels" in outcome and int(grew_kib) < 64 * 1024, (
            f"Pillow's limit {pillow_limit}: {outcome}, peak memory grew by {grew_kib} KiB")
    assert "30000 x 30000 = 900,000,000 pixels" in lines["off"][1]


# --- the command line: train, predict ------------------------------------------------------

TRAIN_ARGS = ["-r", "catsdogs-2conv", "--img-size", "16", "--channels", "1", "--epochs", "1",
              "--batch-size", "8", "--set", "steps_per_epoch=null", "--device", "cpu", "-q"]


_run = exit_code


@pytest.mark.parametrize("name", list(unreadable()))
def test_train_stops_at_a_bad_file_naming_it(tmp_path, corpus, capsys, name):
    data = testing.make_class_folders(tmp_path / "data", n=8, size=16)
    bad = data / "NORMAL" / name
    bad.write_bytes((corpus / "bad" / name).read_bytes())
    assert _run(["train", data, "-o", tmp_path / "run", *TRAIN_ARGS]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {bad}: "), err
    assert not (tmp_path / "run" / "model.safetensors").exists()


def test_train_skip_bad_reports_each_skipped_file_and_trains_on_the_rest(tmp_path, corpus, capsys):
    data = testing.make_class_folders(tmp_path / "data", n=16, size=16)
    bad = write_all(data / "NORMAL", {k: v[0] for k, v in unreadable().items()})
    good = write_all(data / "PNEUMONIA", readable())
    run = tmp_path / "run"
    assert _run(["train", data, "-o", run, *TRAIN_ARGS, "--skip-bad"]) == 0
    err = capsys.readouterr().err
    for path in bad.values():
        assert f"warning: skipped {path}: " in err
    assert f"skipped {len(bad)} unreadable" in err
    assert not any(str(p) in err for p in good.values())
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["skipped_images"] == len(bad)
    assert metrics["train_images"] + metrics["val_images"] == 16 + len(good)


@pytest.mark.parametrize("name", list(unreadable()))
def test_predict_refuses_a_bad_file_in_one_line(tiny_run, corpus, capsys, name):
    path = corpus / "bad" / name
    assert _run(["predict", tiny_run, path, "-q"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {path}: ") and unreadable()[name][1] in err[0]


def test_predict_reads_every_odd_file_and_skips_the_bad_ones(tiny_run, corpus, capsys):
    assert _run(["predict", tiny_run, corpus / "good", corpus / "bad", "--skip-bad", "-q"]) == 0
    captured = capsys.readouterr()
    rows = captured.out.strip().splitlines()[1:]
    assert len(rows) == len(readable())
    for name in unreadable():
        assert f"warning: skipped {corpus / 'bad' / name}: " in captured.err


def test_inspect_lists_every_unreadable_file_with_its_reason(tmp_path, corpus, capsys):
    data = tmp_path / "data"
    write_all(data / "NORMAL", {k: v[0] for k, v in unreadable().items()})
    write_all(data / "PNEUMONIA", readable())
    assert _run(["inspect", data, "-r", "catsdogs-2conv", "--img-size", "16", "--workers", "1"]) == 0
    out = capsys.readouterr().out
    for name, (_, reason) in unreadable().items():
        line = next(ln for ln in out.splitlines() if f"unreadable {data / 'NORMAL' / name}: " in ln)
        assert reason in line.lower()
    assert f"{len(unreadable())} unreadable" in out
