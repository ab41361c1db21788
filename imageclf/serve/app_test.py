"""API tests with FastAPI's test client: good images, batches and every kind of bad upload."""

from __future__ import annotations

import json
import tempfile

import numpy as np
import pytest

from imageclf.serve.testing import encode, png_header_only


def post_files(client, *files, field="files"):
    return client.post("/predict", files=[(field, f) for f in files])


def assert_error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["code"] == code and body["status"] == status and body["error"]
    return body


def test_predict_one_png_matches_the_python_api(client, served_model, png_bytes):
    r = post_files(client, ("scan.png", png_bytes, "image/png"))
    assert r.status_code == 200, r.text
    body = r.json()
    expected = served_model.predict([served_model.prepare(png_bytes)])
    pred = body["predictions"][0]
    assert pred["file"] == "scan.png"
    assert pred["class"] == expected.labels[0]
    probs = [pred["probabilities"][c] for c in body["classes"]]
    np.testing.assert_allclose(probs, expected.probs[0], atol=1e-5)
    assert pred["probability"] == pytest.approx(max(probs) if len(probs) > 2 else probs[pred["index"]])
    assert body["classes"] == served_model.classes and body["threshold"] == served_model.threshold
    assert body["model"]["version"] == served_model.config.weights_sha256[:12]
    assert body["model"]["backend"] == "torch"
    assert set(body["timing_ms"]) == {"read", "decode", "inference", "total"}


def test_batch_of_formats_keeps_order(client, served_model, sample_images):
    images = sample_images[0]
    rgb = np.stack([images[2]] * 3, -1)
    cmyk = encode(np.stack([images[3]] * 3, -1), "JPEG")  # converted below to CMYK
    from io import BytesIO

    from PIL import Image

    buf = BytesIO()
    Image.open(BytesIO(cmyk)).convert("CMYK").save(buf, "JPEG")
    sixteen = BytesIO()
    Image.fromarray(images[4].astype(np.uint16) * 257).save(sixteen, "PNG")
    files = [("a.png", encode(images[0]), "image/png"), ("b.jpg", encode(images[1], "JPEG"), "image/jpeg"),
             ("c.png", encode(rgb), "image/png"), ("d.jpg", buf.getvalue(), "image/jpeg")]
    r = post_files(client, *files)
    assert r.status_code == 200, r.text
    preds = r.json()["predictions"]
    assert [p["file"] for p in preds] == ["a.png", "b.jpg", "c.png", "d.jpg"]
    expected = served_model.predict([served_model.prepare(f[1]) for f in files])
    got = np.array([[p["probabilities"][c] for c in served_model.classes] for p in preds])
    np.testing.assert_allclose(got, expected.probs, atol=1e-5)
    r16 = post_files(client, ("e.png", sixteen.getvalue(), "image/png"))
    assert r16.status_code == 200, r16.text


def test_raw_body_is_one_image(client, png_bytes):
    r = client.post("/predict", content=png_bytes, headers={"content-type": "application/octet-stream"})
    assert r.status_code == 200
    assert [p["file"] for p in r.json()["predictions"]] == ["body"]


@pytest.mark.parametrize("content, hint", [
    (b"just some text, named like an image", "text"),
    (b"<!doctype html><html><body>hi</body></html>", "HTML"),
    (b'{"image": "not really"}', "JSON"),
    (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n", "PDF"),
    (b"\x00\x01\x02\x03binary junk\xff\xfe", "no image format"),
])
def test_content_not_extension_decides_the_type(client, content, hint):
    body = assert_error(post_files(client, ("xray.png", content, "image/png")), 415, "unsupported_type")
    assert "xray.png" in body["error"] and hint in body["error"]
    assert body["file"] == "xray.png"


def test_a_png_named_txt_is_accepted(client, png_bytes):
    assert post_files(client, ("notes.txt", png_bytes, "text/plain")).status_code == 200


def test_empty_file_and_empty_request(client, png_bytes):
    assert_error(post_files(client, ("empty.png", b"", "image/png")), 400, "empty_file")
    only_a_field = (b'--b\r\nContent-Disposition: form-data; name="note"\r\n\r\nno file here\r\n'
                    b"--b--\r\n")
    assert_error(client.post("/predict", content=only_a_field,
                             headers={"content-type": "multipart/form-data; boundary=b"}), 400, "no_file")
    assert_error(client.post("/predict", content=b""), 400, "no_file")


def test_malformed_multipart(client):
    headers = {"content-type": "multipart/form-data; boundary=xyz"}
    r = client.post("/predict", content=b"--xyz\r\nthis is not a header block", headers=headers)
    assert r.status_code == 400 and r.json()["code"] in ("bad_multipart", "no_file")
    assert_error(client.post("/predict", content=b"abc", headers={"content-type": "multipart/form-data"}),
                 400, "bad_multipart")


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_images_are_422(client, sample_images, fmt):
    data = encode(sample_images[0][0], fmt)
    body = assert_error(post_files(client, ("cut." + fmt.lower(), data[: len(data) // 2], "image/png")),
                        422, "bad_image")
    assert body["error"].startswith("cut.")


def test_oversized_body_is_413_with_or_without_content_length(client):
    big = b"\x89PNG\r\n\x1a\n" + b"\0" * (1024 * 1024 + 10)
    assert_error(post_files(client, ("big.png", big, "image/png")), 413, "too_large")

    def chunks():
        for _ in range(40):
            yield b"\0" * 65536

    assert_error(client.post("/predict", content=chunks(),
                             headers={"content-type": "application/octet-stream"}), 413, "too_large")


def test_decompression_bombs_are_refused_from_the_header(client):
    body = assert_error(post_files(client, ("bomb.png", png_header_only(30000, 30000), "image/png")),
                        413, "too_many_pixels")
    assert "bomb.png" in body["error"] and "over the limit" in body["error"]
    # A real, valid 2000 x 2000 black PNG: 4 M pixels in a few KB, over this server's 2 M limit.
    small_bomb = encode(np.zeros((2000, 2000), np.uint8))
    assert len(small_bomb) < 50_000
    assert_error(post_files(client, ("b.png", small_bomb, "image/png")), 413, "too_many_pixels")


def test_too_many_files(client, png_bytes):
    body = assert_error(post_files(client, *[(f"{i}.png", png_bytes, "image/png") for i in range(5)]),
                        413, "too_many_files")
    assert "at most 4" in body["error"]


def test_file_names_are_never_paths(client, png_bytes, monkeypatch):
    # Nothing from a request may reach the disk: not even a temp file (Starlette's own form
    # parser would spool big uploads to one).
    def refuse(*args, **kwargs):
        raise AssertionError("a request tried to create a temp file")

    for name in ("SpooledTemporaryFile", "TemporaryFile", "NamedTemporaryFile", "mkstemp"):
        monkeypatch.setattr(tempfile, name, refuse)
    r = post_files(client, ("../../etc/passwd.png", png_bytes, "image/png"),
                   ("C:\\Windows\\x.png", png_bytes, "image/png"))
    assert r.status_code == 200
    assert [p["file"] for p in r.json()["predictions"]] == ["passwd.png", "x.png"]
    r = client.get("/static/..%2F..%2Fpredict.py")
    assert_error(r, 404, "not_found")


def test_health_model_and_page(client, served_model):
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["max_queue"] == 64
    card = client.get("/model").json()
    assert card["classes"] == served_model.classes
    assert card["metrics"] == served_model.config.metrics and "val_accuracy" in card["metrics"]
    assert card["input"]["height"] == served_model.preprocessing.size[0]
    assert card["limits"]["max_files"] == 4
    page = client.get("/")
    assert page.status_code == 200 and 'id="file-input"' in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    for asset in ("app.js", "style.css", "favicon.svg"):
        assert client.get(f"/static/{asset}").status_code == 200
    # The page works offline: it names no other host.
    for asset in ("/", "/static/app.js", "/static/style.css"):
        assert "http://" not in client.get(asset).text and "https://" not in client.get(asset).text


def test_openapi_docs(client):
    docs = client.get("/docs")
    assert docs.status_code == 200 and "swagger-ui" in docs.text
    spec = client.get("/openapi.json").json()
    assert "multipart/form-data" in spec["paths"]["/predict"]["post"]["requestBody"]["content"]
    assert {"/predict", "/explain", "/health", "/model"} <= set(spec["paths"])


def test_unknown_routes_and_methods_are_json(client):
    assert_error(client.get("/nowhere"), 404, "not_found")
    assert_error(client.get("/predict"), 405, "method_not_allowed")


def test_explain_returns_the_overlay_png(client, served_model, png_bytes, monkeypatch):
    import imageclf.serve.app as app_module

    seen = {}

    class FakeExplanation:
        probs = np.array([0.25, 0.75])
        predicted = served_model.classes[1]

        def overlay_png(self) -> bytes:
            return b"\x89PNG\r\n\x1a\nfake"

    def explain_image(model, image, layer=None):
        seen.update(model=model, shape=image.shape, layer=layer)
        return FakeExplanation()

    monkeypatch.setattr(app_module, "explain_image", explain_image)
    r = client.post("/explain?layer=features.0", files=[("file", ("a.png", png_bytes, "image/png"))])
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert r.content.startswith(b"\x89PNG")
    assert json.loads(r.headers["x-imageclf-prediction"])["class"] == served_model.classes[1]
    pre = served_model.preprocessing
    assert seen == {"model": served_model, "shape": (*pre.size, pre.channels), "layer": "features.0"}
    assert_error(client.post("/explain", files=[("file", ("t.png", b"text", "image/png"))]),
                 415, "unsupported_type")
    two = [("file", ("a.png", png_bytes, "image/png"))] * 2
    assert_error(client.post("/explain", files=two), 413, "too_many_files")


def test_dicom_upload(client, served_model):
    pydicom = pytest.importorskip("pydicom")
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    ds = FileDataset("x.dcm", {}, file_meta=meta, preamble=b"\0" * 128)
    pixels = (np.arange(48 * 48).reshape(48, 48) % 4096).astype(np.uint16)
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = pixels.tobytes()
    from io import BytesIO

    buf = BytesIO()
    pydicom.dcmwrite(buf, ds, enforce_file_format=True)
    r = post_files(client, ("chest.dcm", buf.getvalue(), "application/dicom"))
    assert r.status_code == 200, r.text
    assert r.json()["predictions"][0]["class"] in served_model.classes
    broken = buf.getvalue()[:200]
    assert post_files(client, ("broken.dcm", broken, "application/dicom")).status_code == 422


def test_explain_with_the_real_grad_cam(client, served_model, png_bytes):
    r = client.post("/explain", files=[("file", ("a.png", png_bytes, "image/png"))])
    assert r.status_code == 200, r.text
    from io import BytesIO

    from PIL import Image

    overlay = Image.open(BytesIO(r.content))
    assert overlay.format == "PNG" and min(overlay.size) >= 1
    summary = json.loads(r.headers["x-imageclf-prediction"])
    assert summary["class"] in served_model.classes
    assert sum(summary["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
    assert_error(client.post("/explain?layer=no.such.layer",
                             files=[("file", ("a.png", png_bytes, "image/png"))]), 400, "bad_explain_request")
