"""Who may ask: an optional bearer token on every request but the health check and the page's
own files, and CORS closed unless origins are named.

The token is compared in constant time (:func:`hmac.compare_digest`), and a refusal says no
more than 401: not whether the header was missing, malformed or wrong. The web page (``/``,
``/static/*``) holds no model data and is served to anyone, so that it can ask for the token
(once per browser tab) and send it with every call it makes.
"""

from __future__ import annotations

import hmac
import json

PUBLIC_PATHS = frozenset({"/health", "/", "/favicon.ico"})
PUBLIC_PREFIXES = ("/static/",)
UNAUTHORIZED = json.dumps({"error": "unauthorized", "code": "unauthorized", "status": 401}).encode()


def is_public(path: str) -> bool:
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)


def authorized(header: bytes | None, token: str) -> bool:
    """Whether an ``Authorization`` header carries ``Bearer <token>`` (constant time in the token)."""
    scheme, _, given = (header or b"").decode("latin-1").partition(" ")
    ok = hmac.compare_digest(given.strip().encode(), token.encode())
    return ok and scheme.lower() == "bearer"


class BearerAuth:
    """ASGI middleware: 401 for a request without the token, before the app reads its body."""

    def __init__(self, app, token: str | None) -> None:
        self.app = app
        self.token = token

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or self.token is None or is_public(scope["path"]):
            await self.app(scope, receive, send)
            return
        header = dict(scope.get("headers") or []).get(b"authorization")
        if authorized(header, self.token):
            await self.app(scope, receive, send)
            return
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"www-authenticate", b"Bearer"),
                    (b"x-content-type-options", b"nosniff"),
                    (b"content-length", str(len(UNAUTHORIZED)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": UNAUTHORIZED})
