"""Serving a trained model: a FastAPI app with a web page, batched inference and strict upload limits.

>>> from imageclf.serve import ServeSettings, create_app, run_server
>>> run_server("runs/xray", ServeSettings(max_upload_mb=10), port=8000)   # doctest: +SKIP
"""

from __future__ import annotations

from imageclf.serve.app import create_app
from imageclf.serve.server import run_server
from imageclf.serve.settings import ServeSettings, read_token

__all__ = ["ServeSettings", "create_app", "read_token", "run_server"]
