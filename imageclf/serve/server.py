"""Running the app under uvicorn: one process, so the model is loaded once."""

from __future__ import annotations

from pathlib import Path

from imageclf.core.runtime import configure_process
from imageclf.modelfile.predictor import Predictor
from imageclf.serve.app import create_app
from imageclf.serve.settings import ServeSettings


def run_server(model_or_run: Predictor | str | Path, settings: ServeSettings | None = None,
               host: str = "127.0.0.1", port: int = 8000, log_level: str = "info") -> None:
    """Make a server's process settings (:func:`~imageclf.core.runtime.configure_process`), load
    the model, then serve it until interrupted (Ctrl-C)."""
    import uvicorn

    configure_process(serving=True)  # before create_app's own call, which then keeps it
    app = create_app(model_or_run, settings)
    # The request timeout and the queue limit are the app's own (ServeSettings); uvicorn
    # only closes idle keep-alive connections quickly.
    uvicorn.run(app, host=host, port=port, log_level=log_level, timeout_keep_alive=5,
                server_header=False)
