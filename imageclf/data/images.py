"""Decoding one image into the uint8 array a model is trained on: the single preprocessing path.

Training, evaluation, prediction and the server all call :func:`load_image` (or
:func:`prepare_array` for in-memory arrays) with the :class:`Preprocessing` stored in the
model file, so a prediction sees exactly the pixels training saw.
"""

from __future__ import annotations

import io
import math
import os
import struct
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from imageclf.core.errors import BadImageError, ConfigError
from imageclf.data.dicom import is_dicom, read_dicom
from imageclf.data.jpeg import decode_scaled, plain_size

# Above this many pixels a file is refused before it is decoded (a 30,000 x 30,000 PNG of a
# few KB decompresses to gigabytes). 100 M pixels still admits any real radiograph.
DEFAULT_MAX_PIXELS = 100_000_000

IMAGE_SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".dcm"}
)

RESIZE_MODES = ("squash", "pad", "crop")

# JPEGs were drafted at twice the target (Pillow's thumbnail rule) until 2026-12-02; at once
# the target a 250 px photo to 64 px takes 0.30-0.40 against 0.46-0.66 ms, and a model trains on
# what it is later shown either way (BENCHMARKS.md, Speed). Model files from before keep theirs.
LEGACY_JPEG_DRAFT = 2

# The DCT scales a JPEG may be decoded at. "halves": Pillow's 1/1, 1/2, 1/4, 1/8, what every model
# file written before this field was trained on (and one without the key means). "eighths": every n/8
# libjpeg-turbo offers (imageclf/data/jpeg.py): a 256 px photo bound for 64 px decodes at 3/8
# (96 px) rather than 1/2 (128 px), and at equal scale to the same pixels.
JPEG_SCALES = ("eighths", "halves")
LEGACY_JPEG_SCALES = "halves"
# How JPEGs were decoded before Preprocessing recorded it, field by field.
LEGACY_JPEG = {"jpeg_draft": LEGACY_JPEG_DRAFT, "jpeg_scales": LEGACY_JPEG_SCALES}

# The formats Pillow may decode: those IMAGE_SUFFIXES name, no more. Pillow knows ~40; the
# rest (EPS runs Ghostscript; PSD, FITS, SGI, ...) only widen what a hostile file can reach.
PILLOW_FORMATS = ("PNG", "JPEG", "BMP", "GIF", "TIFF", "WEBP", "PPM")

# What Pillow's decoders raise on malformed input besides OSError (imageclf/fuzz_test.py
# finds them): each means "this file cannot be decoded", never a bug of ours.
DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, IndexError, KeyError, TypeError,
                 struct.error, ArithmeticError, MemoryError, RecursionError)

# Where Pillow finds an image's orientation (Image.getexif; TIFFs also in their tags): an
# image with none of these is already upright.
ORIENTATION_INFO = ("exif", "Raw profile type exif", "XML:com.adobe.xmp", "xmp")

# Pillow refuses truncated files by default; keep it that way so a cut-off download is an
# error, not a silently grey image.
ImageFile.LOAD_TRUNCATED_IMAGES = False


@dataclass(frozen=True)
class Preprocessing:
    """Everything that turns a file into model input; saved in every model file.

    ``size`` is (height, width). ``resize``: ``squash`` stretches to size (as Keras'
    flow_from_directory does), ``pad`` keeps the aspect ratio and pads with black,
    ``crop`` keeps it and centre-crops. ``mean``/``std`` apply after scaling to [0, 1].
    ``jpeg_draft``: a JPEG is decoded at the smallest DCT scale (1/2, 1/4, 1/8 of its size)
    that keeps at least this many times ``size``, and resized from there (see
    :func:`load_image`); ``jpeg_scales`` says which scales there are (``JPEG_SCALES``).
    """

    size: tuple[int, int]
    channels: int
    resize: str = "squash"
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    max_pixels: int = DEFAULT_MAX_PIXELS
    jpeg_draft: int = 1
    jpeg_scales: str = "eighths"

    def __post_init__(self) -> None:
        if self.channels not in (1, 3):
            raise ConfigError(f"channels must be 1 or 3, got {self.channels}")
        if self.resize not in RESIZE_MODES:
            raise ConfigError(f"resize must be one of {', '.join(RESIZE_MODES)}, got {self.resize!r}")
        if min(self.size) < 1:
            raise ConfigError(f"image size must be positive, got {self.size}")
        if self.jpeg_draft not in (1, 2):
            raise ConfigError(f"jpeg_draft must be 1 or 2, got {self.jpeg_draft!r}")
        if self.jpeg_scales not in JPEG_SCALES:
            raise ConfigError(f"jpeg_scales must be one of {', '.join(JPEG_SCALES)}, "
                              f"got {self.jpeg_scales!r}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["size"] = list(self.size)
        for key in ("mean", "std"):
            if d[key] is not None:
                d[key] = list(d[key])
        # What a file without the key means: an older model's config (and the digests of it
        # that backends.json and exported graphs keep) reads back unchanged.
        for key, legacy in LEGACY_JPEG.items():
            if d[key] == legacy:
                del d[key]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Preprocessing:
        d = dict(d)
        d["size"] = tuple(d["size"])
        for key in ("mean", "std"):
            if d.get(key) is not None:
                d[key] = tuple(d[key])
        # A model file that does not say was trained on JPEGs decoded as they were before.
        for key, legacy in LEGACY_JPEG.items():
            d.setdefault(key, legacy)
        return cls(**d)


ImageSource = str | Path | bytes | BinaryIO

# A reader for formats Pillow does not know (DICOM): takes the raw bytes, the name for errors
# and the caller's pixel limit (checked from the header, before decoding), returns a PIL image.
# DICOM is built in (so every caller of load_image reads .dcm files; it needs pydicom only to
# decode, and says so per file when pydicom is missing); register_reader adds others.
Reader = Callable[[bytes, str, int], Image.Image]
_EXTRA_READERS: list[tuple[Callable[[bytes], bool], Reader]] = [(is_dicom, read_dicom)]


def register_reader(sniff: Callable[[bytes], bool], read: Reader) -> None:
    """Add a decoder for a format Pillow cannot read; ``sniff`` looks at the file's bytes."""
    _EXTRA_READERS.append((sniff, read))


def _source_name(source: ImageSource) -> str:
    if isinstance(source, str | Path):
        return str(source)
    return getattr(source, "name", "<bytes>")


def _read_bytes(source: ImageSource) -> bytes:
    name = _source_name(source)
    if isinstance(source, bytes):
        return source
    if isinstance(source, str | Path):
        # Opened straight away, not checked first: two stats per file were a fifth of the time
        # of a 28 px PNG's decode (and several times that on a cold directory cache).
        try:
            with open(source, "rb") as f:
                return f.read()
        except FileNotFoundError:
            raise BadImageError(name, "no such file") from None
        except IsADirectoryError:
            raise BadImageError(name, "is a folder, not an image") from None
    return source.read()


def open_image(source: ImageSource, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Open an image (any format Pillow or a registered reader knows), checking its size.

    The pixel count is checked from the header before any pixel is decoded, so a
    decompression bomb costs nothing. The format comes from the content, never the name.
    """
    return _open_bytes(_read_bytes(source), _source_name(source), max_pixels)


def _open_bytes(data: bytes, name: str, max_pixels: int) -> Image.Image:
    if not data:
        raise BadImageError(name, "empty file (0 bytes)")
    for sniff, read in _EXTRA_READERS:
        if sniff(data):
            img = read(data, name, max_pixels)
            break
    else:
        try:
            with warnings.catch_warnings():
                # Our own limit below, checked on the same header, replaces Pillow's warning.
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                img = Image.open(io.BytesIO(data), formats=PILLOW_FORMATS)
        except UnidentifiedImageError:
            raise BadImageError(name, "not an image Pillow can read") from None
        except Image.DecompressionBombError as exc:
            raise BadImageError(name, f"too many pixels ({exc})") from None
        except DECODE_ERRORS as exc:
            raise BadImageError(name, f"cannot be read ({exc})") from None
    _check_pixels(name, *img.size, max_pixels)
    return img


def _check_pixels(name: str, w: int, h: int, max_pixels: int) -> None:
    if w * h > max_pixels:
        raise BadImageError(
            name, f"{w} x {h} = {w * h:,} pixels, over the limit of {max_pixels:,}"
        )
    if w < 1 or h < 1:
        raise BadImageError(name, f"has no pixels ({w} x {h})")


def to_uint8(arr: np.ndarray) -> np.ndarray:
    """Bring 16/32-bit and float pixel arrays to uint8 by their range, never by clipping.

    Integers scale by their bit depth (12-bit data stored in 16-bit words scales by 4095,
    not 65535); floats in [0, 1] scale by 255, other floats by their min and max.
    """
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8) * 255
    x = arr.astype(np.float64)
    if np.issubdtype(arr.dtype, np.floating):
        lo, hi = float(np.nanmin(x)), float(np.nanmax(x))
        if lo >= 0.0 and hi <= 1.0:
            x = x * 255
        else:
            x = (x - lo) / (hi - lo) * 255 if hi > lo else np.zeros_like(x)
    else:
        lo, top = float(x.min()), float(x.max())
        if lo < 0:
            x, top = x - lo, top - lo
        bits = max(8, math.ceil(math.log2(top + 1))) if top > 0 else 8
        x = x / (2**bits - 1) * 255
    return np.clip(np.rint(np.nan_to_num(x)), 0, 255).astype(np.uint8)


def to_mode(img: Image.Image, channels: int) -> Image.Image:
    """Convert any Pillow mode (L, RGB, RGBA, LA, P, I;16, I, F, CMYK, YCbCr, 1) to L or RGB."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        img = Image.fromarray(to_uint8(np.asarray(img)))
    elif img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "LA", "PA"):
        # Transparent pixels become black, as a radiograph's background is.
        background = Image.new("RGB", img.size, (0, 0, 0))
        background.paste(img.convert("RGBA"), mask=img.getchannel("A"))
        img = background
    mode = "L" if channels == 1 else "RGB"
    return img if img.mode == mode else img.convert(mode)  # a same-mode convert is a copy


def upright(img: Image.Image) -> Image.Image:
    """The decoded image turned as its EXIF (or XMP) orientation says.

    ImageOps.exif_transpose parses the metadata and copies the image even when there is
    nothing to turn: 40 % of a 28 px PNG's whole decode (86 against 52 us). Most images
    carry no orientation at all, and Pillow knows where one would be once it has decoded.
    """
    img.load()
    if hasattr(img, "tag_v2") or any(key in img.info for key in ORIENTATION_INFO):
        return ImageOps.exif_transpose(img)
    return img


def _fit(img: Image.Image, pre: Preprocessing) -> Image.Image:
    h, w = pre.size
    if pre.resize == "squash":
        return img.resize((w, h), Image.BILINEAR) if img.size != (w, h) else img
    if pre.resize == "crop":
        return ImageOps.fit(img, (w, h), Image.BILINEAR)
    return ImageOps.pad(img, (w, h), Image.BILINEAR, color=0)


def load_image(source: ImageSource, pre: Preprocessing) -> np.ndarray:
    """Decode one image to a (H, W, C) uint8 array exactly as the model expects it.

    EXIF orientation is applied; animated images give their first frame; a JPEG is decoded
    at a reduced scale (DCT scaling: ``pre.jpeg_draft``, ``pre.jpeg_scales``) when the target
    is smaller than it, which is several times faster for large ones: the scaled inverse DCT
    averages the pixels the resize would average anyway.

    >>> pre = Preprocessing(size=(128, 128), channels=1)
    >>> load_image("xray.jpeg", pre).shape  # doctest: +SKIP
    (128, 128, 1)
    """
    name = _source_name(source)
    data = _read_bytes(source)
    try:
        img = _plain_jpeg(data, name, pre)
        if img is None:
            img = _open_bytes(data, name, pre.max_pixels)
            if img.format == "JPEG":
                img = _scaled_jpeg(img, data, pre)
        img = _fit(to_mode(upright(img), pre.channels), pre)
        arr = np.asarray(img, dtype=np.uint8)
    except BadImageError:
        raise
    except DECODE_ERRORS as exc:
        raise BadImageError(name, f"cannot be decoded ({exc})") from None
    return arr.reshape(pre.size[0], pre.size[1], pre.channels)


def _least_decoded(pre: Preprocessing) -> tuple[int, int]:
    """(width, height) a JPEG's scaled decode must keep: ``pre.jpeg_draft`` times the target."""
    h, w = pre.size
    return pre.jpeg_draft * w, pre.jpeg_draft * h


def _scaled_jpeg(img: Image.Image, data: bytes, pre: Preprocessing) -> Image.Image:
    """The JPEG decoded at the smallest DCT scale that keeps ``pre.jpeg_draft`` times the target."""
    least = _least_decoded(pre)
    # CMYK and YCCK JPEGs (Pillow's "CMYK") libjpeg-turbo cannot turn into RGB: Pillow's halves.
    if pre.jpeg_scales == "halves" or img.mode not in ("L", "RGB"):
        img.draft("L" if pre.channels == 1 else "RGB", least)
        return img
    scaled = decode_scaled(data, least, pre.channels)
    scaled.info = img.info  # its EXIF/XMP orientation, for upright()
    return scaled


def _plain_jpeg(data: bytes, name: str, pre: Preprocessing) -> Image.Image | None:
    """The JPEG decoded without Pillow where nothing but its pixels matter (see
    :func:`imageclf.data.jpeg.plain_size`); None: Pillow's path."""
    if pre.jpeg_scales != "eighths":
        return None
    size = plain_size(data)  # its first check, the JPEG's start, is what turns most files away
    if size is None or any(sniff(data) for sniff, _ in _EXTRA_READERS):
        return None
    _check_pixels(name, *size, pre.max_pixels)
    return decode_scaled(data, _least_decoded(pre), pre.channels)


def prepare_array(array: np.ndarray, pre: Preprocessing) -> np.ndarray:
    """Bring an in-memory image ((H, W), (H, W, 1|3|4), any dtype) to the model's input."""
    arr = np.asarray(array)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] not in (3, 4)):
        raise BadImageError("<array>", f"shape {arr.shape} is not an image (H, W[, 1|3|4])")
    img = Image.fromarray(to_uint8(arr))
    img = _fit(to_mode(img, pre.channels), pre)
    return np.asarray(img, dtype=np.uint8).reshape(pre.size[0], pre.size[1], pre.channels)


def is_image_name(name: str) -> bool:
    """True for a file name whose suffix names an image format (hidden files excluded)."""
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES


def is_image_file(path: Path) -> bool:
    """True for files whose suffix names an image format (used to list class folders)."""
    return is_image_name(path.name) and path.is_file()


def image_files(folder: str | Path) -> list[str]:
    """The image files at any depth under ``folder``, sorted as their ``Path`` objects sort.

    The same files ``Path.rglob`` with :func:`is_image_file` finds (symlinked folders are not
    followed, unreadable ones skipped), from one listing per folder instead of a stat per file:
    55,000 Fashion-MNIST PNGs listed in 0.05 s against 0.7 s.
    """
    found: list[str] = []
    pending = [str(Path(folder))]
    while pending:
        top = pending.pop()
        try:
            with os.scandir(top) as listing:
                entries = list(listing)
        except PermissionError:
            continue
        for entry in entries:
            path = entry.name if top == "." else os.path.join(top, entry.name)
            if entry.is_dir() and not entry.is_symlink():
                pending.append(path)
            elif is_image_name(entry.name) and entry.is_file():
                found.append(path)
    return sorted(found, key=lambda p: p.split(os.sep))

