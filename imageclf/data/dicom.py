"""DICOM (.dcm) files as images: found by content, decoded with pydicom, shown as a reader would.

Listed among :mod:`imageclf.data.images`' readers, so every path that decodes an
image (datasets, ``predict``, the web page) reads DICOM through :func:`load_image` like
any PNG. What a radiologist's viewer does, this does, in this order:

1. the modality LUT: ``RescaleSlope`` / ``RescaleIntercept`` (e.g. CT values to Hounsfield units);
2. the VOI window: ``WindowCenter`` / ``WindowWidth`` (first of several, with
   ``VOILUTFunction`` LINEAR, LINEAR_EXACT or SIGMOID), else a VOI LUT sequence, else the
   image's own min-max;
3. ``MONOCHROME1`` (white is zero) inverted, so bone is bright in every image;
4. the first frame of a multi-frame file; 16-bit values brought to 8 bits by steps 2-3.

The pixel count is checked from the header before any pixel is decoded. pydicom is needed
only to decode: without it a DICOM file gets a message that says how to install it.
"""

from __future__ import annotations

import io
import struct
import warnings

import numpy as np
from PIL import Image

from imageclf.core.errors import BadImageError

PREAMBLE = 128
MAGIC = b"DICM"
# Value representations: the bytes after the first tag of an explicit-VR file without preamble.
_VRS = frozenset(
    b"AE AS AT CS DA DS DT FD FL IS LO LT OB OD OF OL OV OW PN SH SL SQ SS ST SV TM UC UI UL UN "
    b"UR US UT UV".split()
)
_IMPLICIT_VR_LE = "1.2.840.10008.1.2"
_EXPLICIT_VR_LE = "1.2.840.10008.1.2.1"


def is_dicom(data: bytes) -> bool:
    """True for a DICOM file: 'DICM' after the 128-byte preamble, or a bare dataset without one.

    A bare dataset (written by some old modalities and scripts) has no magic number; it is
    accepted only when it starts like one: a tag of group 0002 or 0008 with a low element
    number, then a valid VR (explicit) or a length that fits in the file (implicit).
    """
    if data[PREAMBLE:PREAMBLE + 4] == MAGIC:
        return True
    if len(data) < 8:
        return False
    group, element = struct.unpack_from("<HH", data)
    if group not in (0x0002, 0x0008) or element > 0x00FF:
        return False
    if data[4:6] in _VRS:
        return True
    (length,) = struct.unpack_from("<I", data, 4)
    return 0 < length <= len(data) - 8


def read_dicom(data: bytes, name: str, max_pixels: int) -> Image.Image:
    """Decode the first frame of a DICOM file to an 8-bit L or RGB image (see the module doc)."""
    try:
        import pydicom
    except ImportError:
        raise BadImageError(name, "is a DICOM file; reading it needs pydicom "
                                  "(pip install 'imageclf[dicom]')") from None
    # pydicom warns about every small deviation from the standard; the image either decodes
    # or becomes a BadImageError below, so the warnings would only be noise.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ds = pydicom.dcmread(io.BytesIO(data), force=data[PREAMBLE:PREAMBLE + 4] != MAGIC)
            _check_header(ds, name, max_pixels)
            frame = _first_frame(ds)
            pixels = _to_display(frame, ds, name)
        except BadImageError:
            raise
        except Exception as exc:  # pydicom raises many types on malformed input; all mean "cannot read"
            raise BadImageError(name, f"malformed DICOM ({type(exc).__name__}: {exc})") from None
    return Image.fromarray(pixels)


def _check_header(ds, name: str, max_pixels: int) -> None:
    if "PixelData" not in ds:
        raise BadImageError(name, "DICOM file has no pixel data (not an image)")
    for tag in ("Rows", "Columns"):
        if ds.get(tag) is None:
            raise BadImageError(name, f"DICOM file has pixel data but no {tag}")
    rows, cols = int(ds.Rows), int(ds.Columns)
    if rows < 1 or cols < 1:
        raise BadImageError(name, f"DICOM image has no pixels ({cols} x {rows})")
    if rows * cols > max_pixels:
        raise BadImageError(name, f"{cols} x {rows} = {rows * cols:,} pixels, over the limit of "
                                  f"{max_pixels:,}")


def _first_frame(ds) -> np.ndarray:
    from pydicom.dataset import FileMetaDataset
    from pydicom.pixels import pixel_array

    meta = getattr(ds, "file_meta", None) or FileMetaDataset()
    if "TransferSyntaxUID" not in meta:
        # A bare dataset read with force: its encoding was detected while parsing.
        implicit = getattr(ds, "original_encoding", (True, True))[0]
        meta.TransferSyntaxUID = _IMPLICIT_VR_LE if implicit else _EXPLICIT_VR_LE
        ds.file_meta = meta
    # index=0 decodes one frame, not all of a 1,000-frame cine loop.
    return pixel_array(ds, index=0)


def _to_display(arr: np.ndarray, ds, name: str) -> np.ndarray:
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    if photometric in ("MONOCHROME1", "MONOCHROME2"):
        if arr.ndim != 2:
            raise BadImageError(name, f"{photometric} DICOM with pixel array of shape {arr.shape}")
        gray = _window(_modality(arr, ds), ds)
        return (255 - gray) if photometric == "MONOCHROME1" else gray
    if photometric == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut

        rgb = apply_color_lut(arr, ds)
        return _scale_bits(rgb, 16 if rgb.dtype == np.uint16 else 8)
    if photometric in ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT") and arr.ndim == 3:
        return _scale_bits(arr, int(ds.get("BitsStored", 8) or 8))
    raise BadImageError(name, f"unsupported DICOM photometric interpretation {photometric!r}")


def _modality(arr: np.ndarray, ds) -> np.ndarray:
    """Stored values -> modality values (slope / intercept or a modality LUT), as float64."""
    from pydicom.pixels import apply_modality_lut

    return np.asarray(apply_modality_lut(arr, ds), dtype=np.float64)


def _first(value) -> float | None:
    if value is None:
        return None
    if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        value = value[0] if len(value) else None
    return None if value is None or value == "" else float(value)


def _window(x: np.ndarray, ds) -> np.ndarray:
    """Modality values -> uint8 by the file's VOI window, VOI LUT, or min-max (in that order)."""
    center, width = _first(ds.get("WindowCenter")), _first(ds.get("WindowWidth"))
    function = str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR").strip().upper()
    if center is not None and width is not None and np.isfinite([center, width]).all() and (
            width >= 1 or (width > 0 and function != "LINEAR")):
        if function == "SIGMOID":
            y = 1.0 / (1.0 + np.exp(np.clip(-4.0 * (x - center) / width, -700, 700)))
        elif function == "LINEAR_EXACT":
            y = (x - center) / width + 0.5
        else:  # LINEAR, as PS3.3 C.11.2.1.2.1 defines it (the 0.5 and width - 1 are the standard's)
            y = (x - (center - 0.5)) / max(width - 1.0, 1e-12) + 0.5
        return np.rint(np.clip(y, 0.0, 1.0) * 255).astype(np.uint8)
    if "VOILUTSequence" in ds:
        from pydicom.pixels import apply_voi_lut

        x = np.asarray(apply_voi_lut(x, ds), dtype=np.float64)
    lo, hi = float(np.min(x)), float(np.max(x))
    if not hi > lo:
        return np.zeros(x.shape, np.uint8)
    return np.rint((x - lo) / (hi - lo) * 255).astype(np.uint8)


def _scale_bits(arr: np.ndarray, bits: int) -> np.ndarray:
    if arr.dtype == np.uint8:
        return arr
    top = float(2 ** max(1, min(bits, 32)) - 1)
    return np.rint(np.clip(arr.astype(np.float64), 0, top) / top * 255).astype(np.uint8)


