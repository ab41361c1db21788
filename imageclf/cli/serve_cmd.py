"""``imageclf serve`` and ``imageclf export``."""

from __future__ import annotations

from pathlib import Path

import typer

from imageclf.cli.common import Backend, app, console
from imageclf.core.errors import ConfigError, ImageclfError
from imageclf.core.progress import Reporter


def _check_backend(backend: str) -> str:
    # lazy: the model's modules import numpy and the runtimes; --help needs none of them
    from imageclf.inference.backends import BACKENDS

    if backend not in BACKENDS:
        raise ConfigError(f"--backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    return backend


@app.command("serve")
def serve_command(
    run: Path = typer.Argument(..., help="Model folder (or, with --backend onnx, an exported .onnx file)."),
    host: str = typer.Option("127.0.0.1", help="Address to listen on (0.0.0.0 exposes it to the network)."),
    port: int = typer.Option(8000, help="Port to listen on."),
    backend: Backend = "torch",
    max_upload_mb: float = typer.Option(20.0, help="Largest request body, all files together."),
    max_pixels: int = typer.Option(36_000_000, help="Largest image (width x height), read from its header."),
    max_files: int = typer.Option(16, help="Images in one request."),
    max_batch: int = typer.Option(32, help="Images per forward pass (shared by requests arriving together)."),
    max_wait_ms: float = typer.Option(5.0, help="How long a batch waits for requests still uploading or "
                                      "decoding; a lone request on an idle server runs at once."),
    max_queue: int = typer.Option(64, help="Requests in progress at once; more get 503 + Retry-After."),
    timeout: float = typer.Option(30.0, help="Seconds a request may take, upload included."),
    ood: str = typer.Option("refuse", "--ood", help="An image unlike the training images (past the model's "
                            "OOD threshold): 'refuse' answers 'outside what this model was trained on' "
                            "instead of a class; 'flag' gives its class and flags it."),
    token_file: Path = typer.Option(None, "--token-file", help="Require 'Authorization: Bearer <token>' "
                                    "(the file's first line) on every request but /health and the page; "
                                    "default: $IMAGECLF_TOKEN when set, else open."),
    cors_origin: list[str] = typer.Option(None, "--cors-origin", help="An origin whose pages may call the "
                                          "API from a browser, e.g. https://app.example.org (repeatable; "
                                          "default: none, same origin only)."),
    log_level: str = typer.Option("info", help="uvicorn log level."),
) -> None:
    """Serve RUN over HTTP: a web page at /, POST /predict, POST /explain, /docs."""
    # Lazy, documented: imageclf.serve needs FastAPI, an optional extra ('imageclf[serve]').
    from imageclf.serve import ServeSettings, read_token, run_server

    settings = ServeSettings(max_upload_mb=max_upload_mb, max_pixels=max_pixels, max_files=max_files,
                             max_batch=max_batch, max_wait_ms=max_wait_ms, max_queue=max_queue,
                             timeout=timeout, backend=_check_backend(backend), ood=ood,
                             token=read_token(token_file), cors_origins=tuple(cors_origin or ()))
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        raise ImageclfError("serving needs FastAPI and uvicorn; pip install 'imageclf[serve]'") from None
    access = "token required" if settings.token else "no token: anyone who reaches it may ask"
    console.print(f"serving {run} on http://{host}:{port}/  (API docs: /docs, {access}; Ctrl-C to stop)")
    run_server(run, settings, host=host, port=port, log_level=log_level)


@app.command("export")
def export_command(
    run: Path = typer.Argument(..., help="Model folder."),
    onnx: Path = typer.Option(None, "--onnx", help="ONNX file to write (default: RUN/model.onnx, which the "
                              "graph backends pick up while it is current)."),
    int8: bool = typer.Option(False, "--int8", help="Also write RUN/model.int8.onnx: int8 weights and "
                              "activations, calibrated on the model's validation images, with its accuracy, "
                              "ROC-AUC and speed against fp32 (--backend onnx-int8 / openvino-int8); made "
                              "again with its last convolution and dense layers in float32 where it "
                              "measures unequal."),
    calibration: str = typer.Option(None, "--calibration", help="Data whose validation split calibrates and "
                                    "measures (default: the data RUN's config.json records)."),
    measure: bool = typer.Option(True, "--measure/--no-measure", help="Measure every installed backend on "
                                 "the validation images into RUN/backends.json (what --backend auto reads)."),
    force: bool = typer.Option(False, "--force", help="Replace an existing RUN/model.int8.onnx."),
    opset: int = typer.Option(17, help="ONNX opset version."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only the written path."),
) -> None:
    """Export RUN to ONNX (dynamic batch axis; classes, threshold and preprocessing in its metadata),
    optionally quantised to int8, and measure the backends for --backend auto.

    The graph takes float32 NCHW input (pixels / 255, then (x - mean) / std when the recipe
    normalises) and outputs 'probs' (temperature and TTA applied), 'logits' and, with OOD
    statistics, 'ood'. RUN/model.onnx is picked up by 'predict --backend onnx / openvino' and
    'serve --backend ...'.
    """
    # lazy: export needs the PyTorch network and onnx; --help and predict on a graph backend need neither
    from imageclf.inference.measure import export_run
    from imageclf.modelfile.onnx_meta import INT8_FILE

    reporter = Reporter(quiet=quiet)
    out = export_run(run, onnx, int8=int8, calibration=calibration, measure=measure and onnx is None,
                     force=force, opset=opset, reporter=reporter)
    typer.echo(str(out["onnx"]))
    if out["int8"] is not None:
        typer.echo(str(Path(run) / INT8_FILE))
