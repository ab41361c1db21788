"""The FastAPI app: ``create_app(model_or_run, settings)``.

Routes: ``POST /predict`` (one or many images -> classes and probabilities),
``POST /explain`` (one image -> Grad-CAM overlay PNG), ``GET /health``, ``GET /model``,
the web page at ``/`` and the OpenAPI page at ``/docs``. The model is loaded once;
images of concurrent requests share forward passes (:mod:`.batcher`). Every refusal is
a JSON ``{"error", "code", "status"}`` answer with a 4xx status, or 503 with
Retry-After when the server is full; no request path or file name reaches the disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from PIL import Image
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from imageclf.core.decision import decide
from imageclf.core.errors import ImageclfError
from imageclf.core.runtime import configure_process
from imageclf.core.version import __version__
from imageclf.evaluation.explain import explain_image
from imageclf.inference.backends import load_backend
from imageclf.inference.classifier import no_ood_note
from imageclf.modelfile.card import CARD_FILE
from imageclf.modelfile.ood import OUTSIDE
from imageclf.modelfile.predictor import Predictor
from imageclf.serve.assets import Assets
from imageclf.serve.batcher import MicroBatcher
from imageclf.serve.schemas import ERROR_RESPONSES, HealthResponse, PredictResponse
from imageclf.serve.security import BearerAuth
from imageclf.serve.settings import ServeSettings
from imageclf.serve.uploads import ApiError, Upload, decode_upload, read_uploads

log = logging.getLogger("imageclf.serve")

UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {"multipart/form-data": {"schema": {
            "type": "object", "required": ["files"],
            "properties": {"files": {"type": "array", "items": {"type": "string", "format": "binary"}}},
        }}},
    }
}
EXPLAIN_BODY = {
    "requestBody": {
        "required": True,
        "content": {"multipart/form-data": {"schema": {
            "type": "object", "required": ["file"],
            "properties": {"file": {"type": "string", "format": "binary"}},
        }}},
    }
}


def error_response(err: ApiError) -> JSONResponse:
    return JSONResponse(err.to_dict(), status_code=err.status,
                        headers={"X-Content-Type-Options": "nosniff", **err.headers})


class ServerState:
    """The one loaded model and everything shared between requests."""

    def __init__(self, model: Predictor, settings: ServeSettings) -> None:
        self.model = model
        self.settings = settings
        # A batch waits (up to max_wait_ms) only for /predict requests still reading or decoding.
        self.batcher = MicroBatcher(self._predict_rows, settings.max_batch, settings.max_wait_ms / 1000,
                                    arriving=lambda: self.arriving)
        self.decoders = ThreadPoolExecutor(min(4, os.cpu_count() or 1), thread_name_prefix="imageclf-decode")
        self.in_flight = 0
        self.arriving = 0  # /predict requests admitted, not yet at the batcher
        self.started = time.monotonic()

    def _predict_rows(self, images: np.ndarray) -> np.ndarray:
        """(N, K + 1): each image's probabilities and its OOD score (NaN: the model has none), so
        that the batcher hands every request its own rows."""
        probs, scores = self.model.predict_scored(images)
        scores = np.full(len(probs), np.nan) if scores is None else scores
        return np.concatenate([probs, np.asarray(scores, probs.dtype)[:, None]], 1)

    def ood_info(self) -> dict | None:
        t = self.model.ood_threshold
        if t is None:
            return None
        method = (self.model.config.ood or {}).get("method")
        return {"threshold": t, "method": method, "mode": self.settings.ood,
                "keep": (self.model.config.ood or {}).get("keep")}

    def model_info(self) -> dict:
        cfg = self.model.config
        return {"name": cfg.name or cfg.architecture, "architecture": cfg.architecture,
                "version": cfg.weights_sha256[:12], "created": cfg.created, "backend": self.model.backend}

    @contextlib.contextmanager
    def admit(self):
        """Count a request in, or refuse it with 503 when ``max_queue`` are already in."""
        if self.in_flight >= self.settings.max_queue:
            retry = str(self.settings.retry_after_s)
            raise ApiError(503, "busy", f"server busy ({self.in_flight} requests in progress); "
                           f"retry after {retry} s", headers={"Retry-After": retry})
        self.in_flight += 1
        try:
            yield
        finally:
            self.in_flight -= 1

    async def with_deadline(self, work, phase: dict):
        """Run ``work`` within the request timeout: 408 while uploading, 503 after."""
        try:
            return await asyncio.wait_for(work, self.settings.timeout)
        except asyncio.TimeoutError:
            retry = str(self.settings.retry_after_s)
            if phase.get("reading"):
                raise ApiError(408, "timeout", f"upload not received within {self.settings.timeout:g} s",
                               headers={"Connection": "close"}) from None
            raise ApiError(503, "timeout", f"not answered within {self.settings.timeout:g} s; "
                           f"retry after {retry} s", headers={"Retry-After": retry}) from None

    @contextlib.contextmanager
    def on_the_way(self) -> Iterator[None]:
        """Count a /predict request as on its way to the batcher (reading, decoding)."""
        self.arriving += 1
        try:
            yield
        finally:
            self.arriving -= 1

    async def read(self, request: Request, phase: dict, max_files: int) -> list[Upload]:
        phase["reading"] = True
        try:
            uploads = await read_uploads(request.headers.get("content-type"),
                                         request.headers.get("content-length"), request.stream(),
                                         self.settings.max_upload_bytes, max_files)
        except ClientDisconnect:
            raise ApiError(400, "disconnected", "the client closed the connection mid-upload") from None
        phase["reading"] = False
        return uploads

    async def decode(self, uploads: list[Upload]) -> np.ndarray:
        loop = asyncio.get_running_loop()
        pre, max_pixels = self.model.preprocessing, self.settings.max_pixels
        jobs = [loop.run_in_executor(self.decoders, decode_upload, u, pre, max_pixels) for u in uploads]
        return np.stack(await asyncio.gather(*jobs))

    def explain_model(self) -> Predictor:
        """What Grad-CAM runs on: the served model where it has its PyTorch network, else that
        network loaded beside it from the model folder (once, on the CPU)."""
        try:
            return self.model.torch_predictor()
        except ImageclfError as exc:
            log.warning("heatmaps unavailable: %s", exc)  # the reason names server paths: logged only
            raise ApiError(501, "explain_unavailable", "heatmaps need the model's PyTorch network, which "
                           "this server cannot load: serve the model folder, not a bare .onnx file") from None

    def predict_answer(self, uploads: list[Upload], rows: np.ndarray, timing: dict) -> dict:
        classes, threshold = self.model.classes, self.model.ood_threshold
        probs, scores = rows[:, :-1], rows[:, -1]
        refuse = self.settings.ood == "refuse"
        preds = []
        for u, k, p, s in zip(uploads, decide(probs, self.model.threshold), probs, scores):
            outside = threshold is not None and bool(s > threshold)
            pred = {"file": u.filename, "class": classes[k], "index": int(k),
                    "probability": round(float(p[k]), 6),
                    "probabilities": {c: round(float(v), 6) for c, v in zip(classes, p)},
                    "ood_score": None if threshold is None else round(float(s), 6), "outside": outside,
                    "refused": outside and refuse}
            if pred["refused"]:  # answered instead of a class; the probabilities stay, for reference
                pred.update({"class": None, "index": None, "probability": None, "answer": OUTSIDE})
            preds.append(pred)
        return {"model": self.model_info(), "classes": classes, "threshold": self.model.threshold,
                "ood": self.ood_info(), "predictions": preds,
                "timing_ms": {k: round(v * 1000, 2) for k, v in timing.items()}}


def _run_explain(model: Predictor, image: np.ndarray, layer: str | None) -> tuple[bytes, np.ndarray, str]:
    expl = explain_image(model, image, layer=layer)
    return expl.overlay_png(), np.asarray(expl.probs, dtype=np.float64).reshape(-1), expl.predicted


def _load(model_or_run: Predictor | str | Path, settings: ServeSettings) -> Predictor:
    if isinstance(model_or_run, str | Path):
        return load_backend(Path(model_or_run), settings.backend)
    return model_or_run


def create_app(model_or_run: Predictor | str | Path, settings: ServeSettings | None = None) -> FastAPI:
    """The serving app for a loaded model (a Classifier, say) or a model folder (loaded once, here).

    Serving is a process imageclf runs, so this makes its process settings first
    (:func:`~imageclf.core.runtime.configure_process`), before the model's first allocations.

    >>> app = create_app("runs/xray", ServeSettings(max_upload_mb=10))   # doctest: +SKIP
    >>> uvicorn.run(app, host="127.0.0.1", port=8000)                     # doctest: +SKIP
    """
    configure_process()
    settings = settings or ServeSettings()
    state = ServerState(_load(model_or_run, settings), settings)
    if state.model.ood_threshold is None:
        log.warning("%s", no_ood_note(state.model.source))  # said once, at start-up
    _warm_up(state)
    assets = Assets.load()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        await state.batcher.close()
        state.decoders.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="imageclf", version=__version__, lifespan=lifespan,
                  description="Image classification with a trained imageclf model: "
                              "predictions, Grad-CAM heatmaps and a web page at /.",
                  docs_url=None if assets.has_docs else "/docs", redoc_url=None)
    app.state.imageclf = state
    # Outermost last: CORS answers a browser's preflight before the token is asked for.
    app.add_middleware(BearerAuth, token=settings.token)
    if settings.cors_origins:  # closed unless named: no Access-Control-* headers at all
        app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors_origins),
                           allow_methods=["GET", "POST"], allow_headers=["Authorization", "Content-Type"])
    assets.add_routes(app)
    _add_error_handlers(app)
    _add_service_routes(app, state)
    _add_inference_routes(app, state)
    return app


def _warm_up(state: ServerState) -> None:
    """Decode and predict one blank image, so the first user does not pay for lazy imports and
    initialisation (~100 ms)."""
    pre, settings = state.model.preprocessing, state.settings
    blank = Image.new("L", (8, 8))
    buf = io.BytesIO()
    blank.save(buf, "PNG")
    decode_upload(Upload("warm-up.png", buf.getvalue()), pre, settings.max_pixels)
    state.model.predict_scored(np.zeros((1, *pre.size, pre.channels), np.uint8))


def _add_error_handlers(app: FastAPI) -> None:
    """Every error as the API's JSON error body (:func:`error_response`)."""
    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return error_response(ApiError(exc.status_code, code, str(exc.detail)))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(x) for x in first.get("loc", ()))
        return error_response(ApiError(422, "invalid_request", f"{where}: {first.get('msg', 'invalid')}"))

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("internal error on %s %s", request.method, request.url.path)
        return error_response(ApiError(500, "internal_error", f"internal error ({type(exc).__name__})"))


def _add_service_routes(app: FastAPI, state: ServerState) -> None:
    """``/health`` and ``/model``."""
    settings, pre = state.settings, state.model.preprocessing
    card_path = Path(state.model.source or "-") / CARD_FILE
    card = card_path.read_text(encoding="utf-8", errors="replace") if card_path.is_file() else None  # once

    @app.get("/health", response_model=HealthResponse, tags=["service"])
    async def health() -> dict:
        """Liveness and load: requests in progress, batches and images served."""
        return {"status": "ok", "backend": state.model.backend, "in_flight": state.in_flight,
                "max_queue": settings.max_queue, "batches": state.batcher.batches,
                "images": state.batcher.images, "uptime_s": round(time.monotonic() - state.started, 1)}

    @app.get("/model", tags=["service"])
    async def model_card() -> dict:
        """Classes, input, threshold, training metrics and the server's limits."""
        cfg = state.model.config
        return {**state.model_info(), "classes": cfg.classes, "threshold": cfg.threshold,
                "temperature": cfg.temperature, "tta": cfg.tta, "ood": state.ood_info(),
                "input": {"height": pre.size[0], "width": pre.size[1], "channels": pre.channels,
                          "resize": pre.resize, "mean": pre.mean, "std": pre.std},
                "metrics": cfg.metrics, "limits": settings.limits(),
                "card": "/model/card" if card is not None else None}

    @app.get("/model/card", tags=["service"], response_class=PlainTextResponse)
    async def model_card_text() -> PlainTextResponse:
        """The model card (RUN/README.md: intended use, data, figures, thresholds, limits) as Markdown."""
        if card is None:
            raise ApiError(404, "no_card", "this model folder has no model card (README.md)")
        return PlainTextResponse(card, media_type="text/markdown; charset=utf-8",
                                 headers={"X-Content-Type-Options": "nosniff"})


def _add_inference_routes(app: FastAPI, state: ServerState) -> None:
    """``/predict`` and ``/explain``: admitted under the queue limit, within the request deadline."""
    settings = state.settings
    @app.post("/predict", response_model=PredictResponse, responses=ERROR_RESPONSES,
              openapi_extra=UPLOAD_BODY, tags=["inference"])
    async def predict(request: Request) -> JSONResponse:
        """Classify one or many images (multipart field ``files``, or a raw image body)."""
        with state.admit():
            phase: dict = {}

            async def work() -> dict:
                t0 = time.perf_counter()
                with state.on_the_way():
                    uploads = await state.read(request, phase, settings.max_files)
                    t1 = time.perf_counter()
                    images = await state.decode(uploads)
                t2 = time.perf_counter()
                probs = await state.batcher.predict(images)
                t3 = time.perf_counter()
                return state.predict_answer(uploads, probs, {"read": t1 - t0, "decode": t2 - t1,
                                                             "inference": t3 - t2, "total": t3 - t0})

            return JSONResponse(await state.with_deadline(work(), phase))

    @app.post("/explain", responses={200: {"content": {"image/png": {}},
                                           "description": "Grad-CAM overlay"},
                                      501: {"description": "Heatmaps not available"},
                                      **ERROR_RESPONSES},
              response_class=Response, openapi_extra=EXPLAIN_BODY, tags=["inference"])
    async def explain(request: Request, layer: str | None = None) -> Response:
        """Grad-CAM heatmap over one image, as a PNG; the prediction is in X-Imageclf-Prediction."""
        with state.admit():
            phase: dict = {}

            async def work() -> Response:
                uploads = await state.read(request, phase, 1)
                image = (await state.decode(uploads))[0]
                model = await state.batcher.run_exclusive(state.explain_model)
                try:
                    png, probs, label = await state.batcher.run_exclusive(_run_explain, model, image, layer)
                except ImageclfError as exc:
                    raise ApiError(400, "bad_explain_request", str(exc)) from None
                classes = state.model.classes
                # ASCII JSON (json escapes non-ASCII class names), as HTTP headers must be.
                summary = json.dumps({"class": label, "probabilities": {
                    c: round(float(p), 6) for c, p in zip(classes, probs)}})
                return Response(png, media_type="image/png", headers={
                    "X-Imageclf-Prediction": summary, "X-Content-Type-Options": "nosniff"})

            return await state.with_deadline(work(), phase)
