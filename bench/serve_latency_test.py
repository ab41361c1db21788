"""The latency benchmark's client against a stand-in server: one request at a time, one connection."""

from __future__ import annotations

import io

from fastapi import FastAPI, Request
from PIL import Image

from bench.serve_latency import WARM_UP, measure, sample_png
from imageclf.serve.testing import live_server


def test_one_keep_alive_connection_sends_every_request_and_the_figures_add_up():
    app = FastAPI()
    seen: dict = {"ports": set(), "requests": 0, "bodies": set()}

    @app.post("/predict")
    async def predict(request: Request) -> dict:
        seen["ports"].add(request.client.port)
        seen["requests"] += 1
        seen["bodies"].add(len(await request.body()))
        return {"timing_ms": {"read": 0.1, "decode": 0.2, "inference": 1.0, "total": 1.3}}

    png = sample_png(size=64)
    with live_server(app) as url:
        result = measure(url, png, 25)
    assert seen["requests"] == WARM_UP + 25 and len(seen["ports"]) == 1  # keep-alive: one connection
    assert len(seen["bodies"]) == 1  # the same upload every time
    lat = result["latency_ms"]
    assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"]
    assert result["requests_per_s"] > 0
    assert result["server_timing_ms_p50"] == {"read": 0.1, "decode": 0.2, "inference": 1.0, "total": 1.3}
    assert Image.open(io.BytesIO(png)).size == (64, 64)
