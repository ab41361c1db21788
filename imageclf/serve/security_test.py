"""Who may ask and what they are told: the OOD answer, the bearer token on every endpoint but the
health check, CORS closed unless an origin is named, and uploads never on disk nor in the logs."""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import sys
import warnings

import numpy as np
import pytest

from imageclf.core.errors import ConfigError
from imageclf.modelfile.ood import OUTSIDE
from imageclf.serve import ServeSettings, create_app
from imageclf.serve.security import is_public
from imageclf.serve.settings import read_token
from imageclf.serve.testing import encode

TOKEN = "s3cret-T0ken_for-tests"


@contextlib.contextmanager
def client_for(model, **settings):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Starlette's test client asks for httpx2
        from fastapi.testclient import TestClient
    with TestClient(create_app(model, ServeSettings(**settings))) as c:
        yield c


def blank_png() -> bytes:
    return encode(np.full((32, 32), 140, np.uint8))


def test_a_blank_image_is_refused_and_a_scan_answered(served_model, png_bytes):
    with client_for(served_model) as c:
        body = c.post(
            "/predict", files=[("files", ("blank.png", blank_png())), ("files", ("scan.png", png_bytes))]
        ).json()
    blank, scan = body["predictions"]
    assert body["ood"]["mode"] == "refuse" and body["ood"]["threshold"] == served_model.ood_threshold
    assert blank["refused"] and blank["outside"] and blank["class"] is None and blank["answer"] == OUTSIDE
    assert blank["ood_score"] > body["ood"]["threshold"] and set(blank["probabilities"]) == set(
        body["classes"]
    )
    assert (
        not scan["refused"]
        and scan["class"] in body["classes"]
        and scan["ood_score"] <= body["ood"]["threshold"]
    )


def test_flag_mode_keeps_the_class_and_flags_it(served_model):
    with client_for(served_model, ood="flag") as c:
        pred = c.post("/predict", files=[("files", ("blank.png", blank_png()))]).json()["predictions"][0]
    assert pred["outside"] and not pred["refused"] and pred["class"] in served_model.classes


def test_model_links_the_card(client):
    info = client.get("/model").json()
    assert info["card"] == "/model/card" and info["ood"]["method"] == "mahalanobis+knn"
    card = client.get("/model/card")
    assert card.status_code == 200 and card.headers["content-type"].startswith("text/markdown")
    assert card.text.startswith("---\n") and "## Out-of-distribution threshold" in card.text


def _every_endpoint(app) -> list[tuple[str, str]]:
    """(method, path) of every route the app has, with path parameters filled in, and one it has not."""
    out = [("GET", "/no/such/route")]
    for route in app.routes:
        path = route.path.replace("{name}", "style.css")
        out += [(m, path) for m in sorted(getattr(route, "methods", None) or {"GET"}) if m != "HEAD"]
    return out


def test_with_a_token_every_endpoint_but_health_and_the_page_answers_401(served_model, png_bytes):
    with client_for(served_model, token=TOKEN) as c:
        endpoints = _every_endpoint(c.app)
        assert {
            ("POST", "/predict"),
            ("POST", "/explain"),
            ("GET", "/model"),
            ("GET", "/openapi.json"),
        } <= set(endpoints)
        for method, path in endpoints:
            for headers in (
                {},
                {"Authorization": "Bearer wrong"},
                {"Authorization": TOKEN},
                {"Authorization": f"Basic {TOKEN}"},
                {"Authorization": f"Bearer {TOKEN}x"},
            ):
                r = c.request(
                    method,
                    path,
                    headers=headers,
                    files=[("files", ("a.png", png_bytes))] if method == "POST" else None,
                )
                if is_public(path):
                    assert r.status_code != 401, (method, path)
                    continue
                assert r.status_code == 401, (method, path, headers)
                assert r.json() == {"error": "unauthorized", "code": "unauthorized", "status": 401}
                assert r.headers["www-authenticate"] == "Bearer"
        ok = {"Authorization": f"Bearer {TOKEN}"}
        assert c.post("/predict", headers=ok, files=[("files", ("a.png", png_bytes))]).status_code == 200
        assert c.get("/model", headers=ok).status_code == 200
        assert c.get("/health").status_code == 200 and c.get("/").status_code == 200


def test_the_token_is_compared_in_constant_time(served_model, monkeypatch):
    import imageclf.serve.security as security

    calls = []
    real = security.hmac.compare_digest
    monkeypatch.setattr(security.hmac, "compare_digest", lambda a, b: calls.append((a, b)) or real(a, b))
    with client_for(served_model, token=TOKEN) as c:
        c.get("/model", headers={"Authorization": "Bearer guess"})
    assert calls == [(b"guess", TOKEN.encode())]


def test_the_token_comes_from_a_file_or_the_environment(tmp_path, monkeypatch):
    monkeypatch.delenv("IMAGECLF_TOKEN", raising=False)
    assert read_token() is None
    monkeypatch.setenv("IMAGECLF_TOKEN", "from-env")
    assert read_token() == "from-env"
    (tmp_path / "t").write_text("from-file\n")
    assert read_token(tmp_path / "t") == "from-file"
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ConfigError, match="empty"):
        read_token(tmp_path / "empty")
    assert TOKEN not in repr(ServeSettings(token=TOKEN))  # never printed with the settings


def test_cors_is_closed_unless_an_origin_is_named(served_model):
    preflight = {
        "Origin": "https://app.example.org",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization",
    }
    with client_for(served_model) as c:
        assert (
            "access-control-allow-origin"
            not in c.get("/model", headers={"Origin": preflight["Origin"]}).headers
        )
        assert "access-control-allow-origin" not in c.options("/predict", headers=preflight).headers
    with client_for(served_model, cors_origins=("https://app.example.org",), token=TOKEN) as c:
        r = c.options("/predict", headers=preflight)
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "https://app.example.org"
        other = c.options("/predict", headers={**preflight, "Origin": "https://evil.example"})
        assert other.headers.get("access-control-allow-origin") != "https://evil.example"
    with pytest.raises(ConfigError, match="--cors-origin"):
        ServeSettings(cors_origins=("*",))


_WRITES: list = []
_WATCHING: list[bool] = [False]


def _audit(event: str, args) -> None:
    """Record every file opened for writing while a test watches (audit hooks cannot be removed)."""
    if _WATCHING[0] and event == "open":
        path, mode, flags = (list(args) + [None, None])[:3]
        writes = isinstance(mode, str) and any(ch in mode for ch in "wax+")
        writes = writes or (isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT))
        if writes:
            _WRITES.append((path, mode, flags))


sys.addaudithook(_audit)


def test_no_upload_reaches_the_disk_or_the_logs(served_model, caplog):
    rng = np.random.default_rng(5)
    big = encode(rng.integers(0, 256, (700, 700)).astype(np.uint8))  # ~0.5 MB: past any spooling size
    small = encode(np.full((40, 40), 90, np.uint8))
    with client_for(served_model, max_upload_mb=4) as c, caplog.at_level(logging.DEBUG):
        _WRITES.clear()
        _WATCHING[0] = True
        try:
            for files in (
                [("files", ("big.png", big))],
                [("files", ("a.png", small)), ("files", ("b.png", big))],
            ):
                assert c.post("/predict", files=files).status_code == 200
            assert c.post("/explain", files=[("file", ("x.png", small))]).status_code == 200
            assert c.post("/predict", content=big).status_code == 200
            assert c.post("/predict", files=[("files", ("t.png", b"not an image"))]).status_code == 415
        finally:
            _WATCHING[0] = False
    assert _WRITES == []
    logged = "\n".join(r.getMessage() + repr(r.args) for r in caplog.records)
    for data in (big, small):
        chunk = data[len(data) // 2 : len(data) // 2 + 24]
        assert repr(chunk)[2:-1] not in logged and chunk.hex() not in logged
        assert base64.b64encode(chunk).decode()[:24] not in logged
    # No record carries pixels or file bytes (PIL's debug lines name 4-byte chunk types, b'IDAT').
    args = [a for r in caplog.records for a in (r.args or ()) if not isinstance(r.args, dict)]
    assert not any(isinstance(a, np.ndarray) or isinstance(a, bytes) and len(a) > 8 for a in args)
