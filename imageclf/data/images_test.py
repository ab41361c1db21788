import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from imageclf.core.errors import BadImageError, ConfigError
from imageclf.data.images import Preprocessing, load_image, prepare_array, to_uint8


def _png(img: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


GRAY = Preprocessing(size=(8, 8), channels=1)
RGB = Preprocessing(size=(8, 8), channels=3)


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "LA", "P", "I;16", "I", "F", "CMYK", "1"])
@pytest.mark.parametrize("pre", [GRAY, RGB], ids=["gray", "rgb"])
def test_every_mode_becomes_the_recipe_channels(mode, pre):
    img = Image.new("RGB", (8, 8), (200, 100, 50)).convert(mode)
    fmt = "JPEG" if mode == "CMYK" else "TIFF" if mode in ("I", "F") else "PNG"
    arr = load_image(_png(img, fmt), pre)
    assert arr.shape == (8, 8, pre.channels) and arr.dtype == np.uint8


def test_sixteen_bit_scaled_by_bit_depth_not_clipped():
    # 12-bit data: 4095 is white, 2048 mid grey (clipping would make both 255).
    arr16 = np.array([[0, 2048], [4095, 1024]], np.uint16)
    img = Image.fromarray(arr16)
    out = load_image(_png(img), Preprocessing(size=(2, 2), channels=1))[..., 0]
    assert out[1, 0] == 255 and out[0, 0] == 0
    assert 125 <= out[0, 1] <= 130


def test_transparent_palette_pixels_become_black():
    img = Image.new("P", (4, 4), 1)
    img.putpalette([0, 0, 0, 255, 255, 255] + [0] * 762)
    img.info["transparency"] = 1
    out = load_image(_png(img, transparency=1), Preprocessing(size=(4, 4), channels=1))
    assert out.max() == 0


def _oriented(fmt: str, where: str) -> bytes:
    """A 4 x 2 image, left half white, stored with orientation 6 ("rotate 90 degrees clockwise
    to view") in EXIF or in XMP."""
    arr = np.zeros((2, 4), np.uint8)
    arr[:, :2] = 255
    img = Image.fromarray(arr)
    lossless = {"lossless": True} if fmt == "WEBP" else {}
    if where == "xmp":
        xmp = ('<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF>'
               '<rdf:Description tiff:Orientation="6"/></rdf:RDF></x:xmpmeta>')
        if fmt == "PNG":  # an iTXt chunk, as Pillow reads a PNG's XMP
            info = PngImagePlugin.PngInfo()
            info.add_itxt("XML:com.adobe.xmp", xmp)
            return _png(img, fmt, pnginfo=info)
        return _png(img, fmt, xmp=xmp.encode(), **lossless)
    exif = Image.Exif()
    exif[0x0112] = 6
    if fmt == "TIFF":
        return _png(img, fmt, tiffinfo={0x0112: 6})
    return _png(img, fmt, exif=exif, **lossless)


@pytest.mark.parametrize("fmt, where", [("PNG", "exif"), ("WEBP", "exif"), ("TIFF", "exif"),
                                        ("PNG", "xmp"), ("WEBP", "xmp")])
def test_orientation_applied_wherever_the_file_stores_it(fmt, where):
    out = load_image(_oriented(fmt, where), Preprocessing(size=(4, 2), channels=1))[..., 0]
    # After rotation the image is 2 wide x 4 high with the white half on top.
    assert out.shape == (4, 2)
    assert out[:2].min() == 255 and out[2:].max() == 0


@pytest.mark.parametrize("where", ["exif", "xmp"])
@pytest.mark.parametrize("scales", ["eighths", "halves"])
def test_orientation_of_a_jpeg_applied(where, scales):
    # JPEG's own loss blurs the edge: the halves are told apart by their means.
    pre = Preprocessing(size=(4, 2), channels=1, jpeg_scales=scales)
    out = load_image(_oriented("JPEG", where), pre)[..., 0]
    assert out.shape == (4, 2) and out[:2].mean() > 200 > 50 > out[2:].mean()


@pytest.mark.parametrize("data, reason", [
    (b"", "empty file"),
    (b"just some text, not an image", "not an image"),
])
def test_unreadable_bytes(data, reason):
    with pytest.raises(BadImageError, match=reason):
        load_image(data, GRAY)


def test_truncated_png_is_an_error():
    data = _png(Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), np.uint8)))
    with pytest.raises(BadImageError):
        load_image(data[: len(data) // 2], GRAY)


def test_missing_file_named(tmp_path):
    with pytest.raises(BadImageError, match="nope.png: no such file"):
        load_image(tmp_path / "nope.png", GRAY)


def test_pixel_limit_checked_before_decoding():
    img = Image.new("L", (300, 300))
    with pytest.raises(BadImageError, match="over the limit"):
        load_image(_png(img), Preprocessing(size=(8, 8), channels=1, max_pixels=10_000))


@pytest.mark.parametrize("draft", [1, 2])
def test_large_jpeg_draft_decoding_matches_full_decode_closely(draft):
    rng = np.random.default_rng(0)
    base = np.kron(rng.integers(0, 255, (20, 20)), np.ones((60, 60))).astype(np.uint8)
    data = _png(Image.fromarray(base), "JPEG", quality=95)
    pre = Preprocessing(size=(64, 64), channels=1, jpeg_draft=draft)
    fast = load_image(data, pre).astype(int)
    full = np.asarray(Image.open(io.BytesIO(data)).convert("L").resize((64, 64), Image.BILINEAR)).astype(int)
    assert np.abs(fast[..., 0] - full).mean() < 4


def test_jpeg_draft_is_the_model_files_and_older_files_keep_twice_the_size():
    # 400 px to 64: drafted at once the target, the decode starts from 1/4 (100 px); at
    # twice it, from 1/2 (200 px). Their pixels differ, so the model file must say which.
    rng = np.random.default_rng(1)
    data = _png(Image.fromarray(rng.integers(0, 255, (400, 400), np.uint8)), "JPEG", quality=90)
    at_once, at_twice = (load_image(data, Preprocessing((64, 64), 1, jpeg_draft=d)) for d in (1, 2))
    assert not np.array_equal(at_once, at_twice)
    pre = Preprocessing((64, 64), 1)
    assert pre.jpeg_draft == 1 and Preprocessing.from_dict(pre.to_dict()) == pre
    older = {k: v for k, v in pre.to_dict().items() if k != "jpeg_draft"}
    assert Preprocessing.from_dict(older).jpeg_draft == 2
    assert Preprocessing.from_dict(older).to_dict() == older  # its config reads back unchanged
    with pytest.raises(ConfigError, match="jpeg_draft"):
        Preprocessing((64, 64), 1, jpeg_draft=3)


@pytest.mark.parametrize("resize", ["squash", "pad", "crop"])
def test_resize_modes(resize):
    img = Image.new("L", (40, 20), 255)
    out = load_image(_png(img), Preprocessing(size=(10, 10), channels=1, resize=resize))[..., 0]
    assert out.shape == (10, 10)
    if resize == "pad":
        assert out[0].max() == 0 and out[5].min() == 255  # black bars top and bottom
    else:
        assert out.min() == 255


def test_prepare_array_matches_load_image_for_same_pixels():
    arr = np.random.default_rng(1).integers(0, 255, (28, 28), np.uint8)
    pre = Preprocessing(size=(32, 32), channels=1)
    assert np.array_equal(prepare_array(arr, pre), load_image(_png(Image.fromarray(arr)), pre))


def test_to_uint8_ranges():
    assert to_uint8(np.array([0.0, 0.5, 1.0])).tolist() == [0, 128, 255]
    assert to_uint8(np.array([-1.0, 1.0])).tolist() == [0, 255]
    assert to_uint8(np.array([0, 65535], np.uint16)).tolist() == [0, 255]


def test_bad_preprocessing_rejected():
    with pytest.raises(ConfigError):
        Preprocessing(size=(8, 8), channels=2)
    with pytest.raises(ConfigError):
        Preprocessing(size=(8, 8), channels=1, resize="stretch")


def _old_listing(folder):
    """What image_files replaced: rglob with a stat per file, sorted as Path objects."""
    from imageclf.data.images import is_image_file

    return [str(p) for p in sorted(p for p in folder.rglob("*") if is_image_file(p))]


def test_image_files_lists_what_rglob_found_in_the_same_order(tmp_path):
    from imageclf.data.images import image_files

    root = tmp_path / "data"
    names = ["a/b.png", "a-b/c.jpg", "a/x/deep.JPEG", "a/.hidden.png", "a/notes.txt", ".cache/d.png",
             "a.b/e.bmp", "z/f.png", "A/g.tif", "a/b-/h.png"]
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"x")
    (root / "folder.png").mkdir()  # a folder named like an image is not a file
    (root / "link.png").symlink_to(root / "z" / "f.png")  # a link to a file is listed
    (root / "loop").symlink_to(root / "a", target_is_directory=True)  # linked folders are not walked
    (root / "dangling.png").symlink_to(root / "missing.png")
    found = image_files(root)
    assert found == _old_listing(root)
    assert str(root / "a-b" / "c.jpg") in found and str(root / "a" / "notes.txt") not in found
    assert not any("loop" in f or "dangling" in f or "folder.png" in f for f in found)


def test_image_files_of_the_current_folder_has_no_dot_prefix(tmp_path, monkeypatch):
    from imageclf.data.images import image_files

    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "x.png").write_bytes(b"x")
    monkeypatch.chdir(tmp_path)
    assert image_files(".") == ["c/x.png"] == _old_listing(Path("."))
