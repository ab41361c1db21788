"""JPEGs decoded by libjpeg-turbo at any n/8 DCT scale, through simplejpeg, without Pillow.

:func:`imageclf.data.images.load_image` uses these for a model whose ``jpeg_scales`` is
``eighths``: a 250 px photo bound for 64 px decodes at 3/8 rather than Pillow's 1/2, so the
resize after it starts from 96 px, not 128; and a JPEG that carries nothing Pillow would read
besides its pixels skips Pillow's open, a sixth of the whole load, which holds the GIL the
decode threads share. At equal scale the pixels are Pillow's to the bit (same libjpeg-turbo
methods: accurate integer IDCT, fancy upsampling).
"""

from __future__ import annotations

import simplejpeg
from PIL import Image

JPEG_START = b"\xff\xd8\xff"  # SOI, then the first marker: what Pillow's JPEG plugin accepts
START_OF_SCAN = 0xDA
APP1 = 0xE1  # EXIF and XMP, where the orientation is
APP2 = 0xE2  # ICC profiles (pixels unchanged) and MPF, which makes a multi-picture file
PLAIN_COLORSPACES = ("Gray", "YCbCr", "RGB")  # CMYK and YCCK need Pillow's conversion


def decode_scaled(data: bytes, least: tuple[int, int], channels: int) -> Image.Image:
    """The JPEG in L (``channels`` 1) or RGB at the smallest n/8 scale that keeps at least
    ``least`` (width, height). Raises ValueError for a truncated or corrupt file."""
    w, h = least
    # strict: libjpeg's warnings (a premature end) raise, as Pillow's OSError does with
    # LOAD_TRUNCATED_IMAGES off, rather than decoding the rest to grey.
    arr = simplejpeg.decode_jpeg(data, colorspace="GRAY" if channels == 1 else "RGB",
                                 min_width=w, min_height=h, strict=True)
    return Image.fromarray(arr[..., 0] if channels == 1 else arr)


def plain_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) of a JPEG whose pixels are all there is to it; None for anything else.

    What only Pillow reads sits in the segments before the scan: APP1 (EXIF, XMP: the
    orientation) and APP2 "MPF"; CMYK and YCCK files need its colour conversion. A file with
    any of them, or one this walk cannot follow, is None: Pillow's path, and its errors.
    """
    if not data.startswith(JPEG_START) or not _only_pixels(data):
        return None
    try:
        h, w, colorspace, _ = simplejpeg.decode_jpeg_header(data)
    except ValueError:
        return None
    return (w, h) if colorspace in PLAIN_COLORSPACES else None


def _only_pixels(data: bytes) -> bool:
    pos = 2
    while pos + 4 <= len(data) and data[pos] == 0xFF:
        marker = data[pos + 1]
        if marker == START_OF_SCAN:
            return True
        if marker == APP1 or (marker == APP2 and data[pos + 4:pos + 8] == b"MPF\0"):
            return False
        pos += 2 + int.from_bytes(data[pos + 2:pos + 4], "big")
    return False
