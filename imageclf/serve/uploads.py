"""Reading uploads safely: a bounded body kept in memory, multipart parsed by hand, content sniffed.

Nothing from a request touches the disk: the body streams into memory and is refused as
soon as it passes the size limit (Starlette's own form parser would spool large files
to a temp file). A file's type comes from its first bytes, never from its name or its
Content-Type; its pixel count from its header, before a pixel is decoded. Every refusal
is an :class:`ApiError` with a 4xx status that the app turns into a JSON answer.
"""

from __future__ import annotations

import asyncio
import importlib.util
import io
import re
import warnings
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace

import numpy as np
from PIL import Image
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

from imageclf.core.errors import BadImageError
from imageclf.data.images import Preprocessing, load_image

try:
    from imageclf.data.dicom import is_dicom
except ImportError:  # a build without the DICOM reader: only the standard preamble + magic

    def is_dicom(data: bytes) -> bool:
        return data[128:132] == b"DICM"


class ApiError(Exception):
    """A refusal: HTTP status, a short machine-readable code and a one-line message."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None,
                 filename: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = headers or {}
        self.filename = filename

    def to_dict(self) -> dict:
        d = {"error": self.message, "code": self.code, "status": self.status}
        if self.filename is not None:
            d["file"] = self.filename
        return d


@dataclass
class Upload:
    """One uploaded file, in memory."""

    filename: str
    data: bytes


# (format, magic bytes, offset); DICOM is recognised by imageclf.data.dicom's own sniffer.
SIGNATURES: tuple[tuple[str, bytes, int], ...] = (
    ("png", b"\x89PNG\r\n\x1a\n", 0),
    ("jpeg", b"\xff\xd8\xff", 0),
    ("gif", b"GIF87a", 0),
    ("gif", b"GIF89a", 0),
    ("bmp", b"BM", 0),
    ("tiff", b"II*\x00", 0),
    ("tiff", b"MM\x00*", 0),
    ("webp", b"WEBP", 8),
)
ACCEPTED = "PNG, JPEG, DICOM, GIF, BMP, TIFF or WebP"


def sniff(data: bytes) -> str | None:
    """The image format named by a file's first bytes, or None."""
    if is_dicom(data):
        return "dicom"
    for fmt, magic, offset in SIGNATURES:
        if data[offset:offset + len(magic)] == magic:
            if fmt == "webp" and data[:4] != b"RIFF":
                continue
            return fmt
    return None


def _describe(data: bytes) -> str:
    """A few words on what a refused file looks like, for the error message."""
    head = data[:512]
    try:
        head.decode("utf-8")
        text = True
    except UnicodeDecodeError:
        text = False
    if text:
        start = head.lstrip()[:15].lower()
        kind = ("HTML" if start.startswith((b"<!doctype", b"<html")) else
                "JSON" if start[:1] in (b"{", b"[") else "text")
        return f"it looks like {kind}"
    if head.startswith(b"%PDF"):
        return "it looks like a PDF"
    if head.startswith(b"PK\x03\x04"):
        return "it looks like a ZIP archive"
    return "its first bytes match no image format"


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def clean_filename(raw: bytes | str | None) -> str:
    """A client's file name made safe to echo back (it is never used as a path)."""
    if raw is None:
        return "upload"
    name = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    name = _CONTROL.sub("", name).replace("\\", "/").rsplit("/", 1)[-1].strip()
    return name[:200] or "upload"


@dataclass
class _PartState:
    headers: dict[bytes, bytes] = field(default_factory=dict)
    header_field: bytearray = field(default_factory=bytearray)
    header_value: bytearray = field(default_factory=bytearray)
    data: io.BytesIO = field(default_factory=io.BytesIO)


class MultipartCollector:
    """Feeds body chunks to python-multipart's streaming parser and keeps file parts in memory."""

    def __init__(self, boundary: bytes, max_files: int) -> None:
        self.max_files = max_files
        self.uploads: list[Upload] = []
        self._part = _PartState()
        self.parser = MultipartParser(boundary, {
            "on_part_begin": self._begin,
            "on_header_field": lambda b, s, e: self._part.header_field.extend(b[s:e]),
            "on_header_value": lambda b, s, e: self._part.header_value.extend(b[s:e]),
            "on_header_end": self._header_end,
            "on_part_data": lambda b, s, e: self._part.data.write(b[s:e]),
            "on_part_end": self._end,
        })

    def _begin(self) -> None:
        self._part = _PartState()

    def _header_end(self) -> None:
        p = self._part
        p.headers[bytes(p.header_field).lower()] = bytes(p.header_value)
        p.header_field.clear()
        p.header_value.clear()

    def _end(self) -> None:
        disposition = self._part.headers.get(b"content-disposition", b"")
        _, options = parse_options_header(disposition.decode("latin-1"))
        if b"filename" not in options:
            return  # a plain form field, not a file: ignored
        if len(self.uploads) >= self.max_files:
            raise ApiError(413, "too_many_files",
                           f"too many files in one request (at most {self.max_files})")
        self.uploads.append(Upload(clean_filename(options[b"filename"]), self._part.data.getvalue()))

    def feed(self, chunk: bytes) -> None:
        try:
            self.parser.write(chunk)
        except FormParserError as exc:
            raise ApiError(400, "bad_multipart", f"malformed multipart body ({exc})") from None

    def finish(self) -> list[Upload]:
        try:
            self.parser.finalize()
        except FormParserError as exc:
            raise ApiError(400, "bad_multipart", f"malformed multipart body ({exc})") from None
        return self.uploads


async def read_uploads(content_type: str | None, content_length: str | None,
                       stream: AsyncIterator[bytes], max_bytes: int, max_files: int) -> list[Upload]:
    """The files of a request: multipart/form-data file parts, or the raw body as one image.

    The body is refused (413) as soon as it passes ``max_bytes``, before it is all read.
    """
    limit_msg = f"request body over the limit of {max_bytes / 2**20:.1f} MB"
    if content_length is not None:
        try:
            declared = int(content_length)
        except ValueError:
            raise ApiError(400, "bad_request", "Content-Length is not a number") from None
        if declared > max_bytes:
            raise ApiError(413, "too_large", limit_msg)
    mime, options = parse_options_header(content_type or "")
    collector = None
    if mime == b"multipart/form-data":
        boundary = options.get(b"boundary")
        if not boundary:
            raise ApiError(400, "bad_multipart", "multipart/form-data without a boundary")
        collector = MultipartCollector(boundary, max_files)
    raw = io.BytesIO()
    total = 0
    async for chunk in stream:
        total += len(chunk)
        if total > max_bytes:
            raise ApiError(413, "too_large", limit_msg)
        if collector is not None:
            collector.feed(chunk)
        else:
            raw.write(chunk)
        await asyncio.sleep(0)  # let other requests run between chunks of a big body
    if collector is not None:
        uploads = collector.finish()
    else:
        uploads = [Upload("body", raw.getvalue())] if total else []
    if not uploads:
        raise ApiError(400, "no_file", "no image in the request: send one or more files as "
                       "multipart/form-data (field 'files')")
    return uploads


def dicom_size(data: bytes) -> tuple[int, int] | None:
    """(columns, rows) of a DICOM file from its header, without reading the pixel data."""
    try:
        import pydicom

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True, force=True)
            return int(ds.Columns), int(ds.Rows)
    except Exception:  # malformed: load_image gives the message
        return None


def image_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the header, without decoding pixels; None if Pillow cannot tell."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                return img.size
    except Image.DecompressionBombError:
        return (2**31, 2**31)  # Pillow's own guard fired: far over any limit
    except Exception:  # not ours to explain here: decode_upload gives the message
        return None


def decode_upload(upload: Upload, pre: Preprocessing, max_pixels: int) -> np.ndarray:
    """Sniff, check the size from the header, decode: the model's (H, W, C) uint8 input.

    Runs in a worker thread. Raises :class:`ApiError` (400 / 413 / 415 / 422), never
    anything else for a bad file.
    """
    name, data = upload.filename, upload.data
    if not data:
        raise ApiError(400, "empty_file", f"{name}: empty file (0 bytes)", filename=name)
    fmt = sniff(data)
    if fmt is None:
        raise ApiError(415, "unsupported_type",
                       f"{name}: not a {ACCEPTED} image ({_describe(data)})", filename=name)
    if fmt == "dicom" and importlib.util.find_spec("pydicom") is None:
        raise ApiError(415, "dicom_unsupported", f"{name}: DICOM is not supported by this server "
                       "(pip install 'imageclf[dicom]')", filename=name)
    size = dicom_size(data) if fmt == "dicom" else image_size(data)
    if size is not None and size[0] * size[1] > max_pixels:
        pixels = f"{size[0]} x {size[1]} pixels" if size[0] < 2**31 else "too many pixels"
        raise ApiError(413, "too_many_pixels",
                       f"{name}: {pixels}, over the limit of {max_pixels:,}", filename=name)
    try:
        return load_image(data, replace(pre, max_pixels=max_pixels))
    except BadImageError as exc:
        raise ApiError(422, "bad_image", f"{name}: {exc.reason}", filename=name) from None
    except Exception as exc:
        # Decoders fed hostile bytes fail in more ways than images.py lists; each one is the
        # file's fault, and the server must answer 4xx, not 500.
        raise ApiError(422, "bad_image", f"{name}: cannot be decoded ({type(exc).__name__})",
                       filename=name) from None
