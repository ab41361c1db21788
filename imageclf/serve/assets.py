"""The web page and the offline API docs, read into memory once and served by exact name.

No request path is ever joined to a folder: a name that is not in the table is a 404,
so ``/static/../../etc/passwd`` cannot reach the disk. The Swagger UI files come from
the ``fastapi-offline`` package when it is installed (so /docs works without internet);
without it FastAPI's default /docs page, which loads them from a CDN, is used.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, Response
from starlette.exceptions import HTTPException

STATIC_DIR = Path(__file__).parent / "static"
MEDIA_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
               ".css": "text/css; charset=utf-8", ".png": "image/png", ".svg": "image/svg+xml"}
SWAGGER_FILES = ("swagger-ui-bundle.js", "swagger-ui.css")
# The page loads only its own files; images shown are blob: previews and the heatmap.
PAGE_CSP = ("default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; "
            "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'")


def _swagger_dir() -> Path | None:
    try:
        import fastapi_offline
    except ImportError:
        return None
    folder = Path(fastapi_offline.__file__).parent / "static"
    return folder if all((folder / f).is_file() for f in SWAGGER_FILES) else None


@dataclass
class Assets:
    """name -> (bytes, media type) for /static/<name> and /docs-assets/<name>."""

    static: dict[str, tuple[bytes, str]] = field(default_factory=dict)
    docs: dict[str, tuple[bytes, str]] = field(default_factory=dict)

    @classmethod
    def load(cls) -> Assets:
        static = {p.name: (p.read_bytes(), MEDIA_TYPES.get(p.suffix, "application/octet-stream"))
                  for p in sorted(STATIC_DIR.iterdir()) if p.is_file() and p.suffix in MEDIA_TYPES}
        docs = {}
        swagger = _swagger_dir()
        if swagger is not None:
            docs = {name: ((swagger / name).read_bytes(), MEDIA_TYPES[Path(name).suffix])
                    for name in SWAGGER_FILES}
        return cls(static, docs)

    @property
    def has_docs(self) -> bool:
        return bool(self.docs)

    @staticmethod
    def _serve(table: dict[str, tuple[bytes, str]], name: str, csp: bool = False) -> Response:
        if name not in table:
            raise HTTPException(404, f"no such file: {name[:100]}")
        body, media_type = table[name]
        headers = {"X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"}
        if csp:
            headers["Content-Security-Policy"] = PAGE_CSP
        return Response(body, media_type=media_type, headers=headers)

    def add_routes(self, app: FastAPI) -> None:
        @app.get("/", include_in_schema=False)
        async def index() -> Response:
            return self._serve(self.static, "index.html", csp=True)

        @app.get("/static/{name}", include_in_schema=False)
        async def static(name: str) -> Response:
            return self._serve(self.static, name)

        if not self.docs:
            return

        @app.get("/docs-assets/{name}", include_in_schema=False)
        async def docs_asset(name: str) -> Response:
            return self._serve(self.docs, name)

        @app.get("/docs", include_in_schema=False)
        async def docs() -> HTMLResponse:
            return get_swagger_ui_html(openapi_url=app.openapi_url, title="imageclf API",
                                       swagger_js_url="/docs-assets/swagger-ui-bundle.js",
                                       swagger_css_url="/docs-assets/swagger-ui.css",
                                       swagger_favicon_url="/static/favicon.svg")
