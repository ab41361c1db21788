"""Unit tests of upload handling: sniffing, file names, multipart parsing, the server's malloc tuning."""

from __future__ import annotations

import asyncio

import pytest

from imageclf.serve.uploads import ApiError, clean_filename, read_uploads, sniff


@pytest.mark.parametrize("head, fmt", [
    (b"\x89PNG\r\n\x1a\n....", "png"), (b"\xff\xd8\xff\xe0", "jpeg"), (b"GIF89a", "gif"),
    (b"II*\x00", "tiff"), (b"RIFF\x00\x00\x00\x00WEBPVP8 ", "webp"), (b"\0" * 128 + b"DICM", "dicom"),
    (b"RIFF\x00\x00\x00\x00WAVEfmt ", None), (b"hello", None), (b"", None),
])
def test_sniff(head, fmt):
    assert sniff(head) == fmt


@pytest.mark.parametrize("raw, clean", [
    ("../../etc/passwd", "passwd"), ("C:\\Users\\x\\scan.png", "scan.png"),
    ("a\x00b\x1b[31m.png", "ab[31m.png"), ("", "upload"), (None, "upload"), ("/", "upload"),
    ("x" * 500, "x" * 200), (b"caf\xc3\xa9.png", "café.png"),
])
def test_clean_filename(raw, clean):
    assert clean_filename(raw) == clean


async def _stream(*chunks):
    for c in chunks:
        yield c


def read(body: bytes, ctype: str, max_bytes: int = 10_000, max_files: int = 3, length: str | None = None):
    return asyncio.run(read_uploads(ctype, length, _stream(body[:7], body[7:]), max_bytes, max_files))


def test_multipart_keeps_files_and_ignores_fields():
    body = (b"--B\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhi\r\n"
            b"--B\r\nContent-Disposition: form-data; name=\"files\"; filename=\"a.png\"\r\n"
            b"Content-Type: image/png\r\n\r\n\x89PNG--not-a-boundary\r\n--B--\r\n")
    uploads = read(body, "multipart/form-data; boundary=B")
    assert [(u.filename, u.data) for u in uploads] == [("a.png", b"\x89PNG--not-a-boundary")]


def test_declared_length_over_the_limit_is_refused_before_reading():
    with pytest.raises(ApiError) as err:
        read(b"", "image/png", max_bytes=100, length="101")
    assert err.value.status == 413
    with pytest.raises(ApiError) as err:
        read(b"x", "image/png", length="lots")
    assert err.value.status == 400

