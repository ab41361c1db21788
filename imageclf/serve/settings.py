"""The server's limits, in one place: every one of them is a ``imageclf serve`` option."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from imageclf.core.errors import ConfigError
from imageclf.modelfile.ood import OOD_MODES

TOKEN_ENV = "IMAGECLF_TOKEN"


@dataclass(frozen=True)
class ServeSettings:
    """Limits that keep a hostile or overloaded client from hurting the server.

    max_upload_mb: largest request body, all files together (checked while it streams in).
    max_pixels: largest image, width x height, read from the header before decoding.
    max_files: images in one request. max_batch: images in one forward pass.
    max_wait_ms: how long the first request of a batch waits for /predict requests still on their
    way (reading, decoding) to join it; a lone request on an idle server runs at once, and those
    that arrive while a pass runs make the next batch together, whatever this is.
    max_queue: requests admitted at once (reading, decoding, waiting or in inference);
    one more is answered 503 with Retry-After, so memory is bounded by
    max_queue x max_upload_mb. timeout: seconds a request may take, upload included.
    ood: what an input unlike the training images gets, ``refuse`` (no class, "outside what
    this model was trained on") or ``flag`` (its class, flagged). token: when set, every
    request but /health and the page's own files must carry ``Authorization: Bearer <token>``.
    cors_origins: origins whose pages may call the API from a browser (none: same origin only).
    """

    max_upload_mb: float = 20.0
    max_pixels: int = 36_000_000
    max_files: int = 16
    max_batch: int = 32
    max_wait_ms: float = 5.0
    max_queue: int = 64
    timeout: float = 30.0
    backend: str = "torch"
    retry_after_s: int = 1
    ood: str = "refuse"
    token: str | None = field(default=None, repr=False)  # never printed with the settings
    cors_origins: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.ood not in OOD_MODES:
            raise ConfigError(f"serve setting ood must be one of {', '.join(OOD_MODES)}, got {self.ood!r}")
        if self.token is not None and (not self.token or any(c.isspace() for c in self.token)):
            raise ConfigError("the serve token must be non-empty, without spaces or line breaks")
        for origin in self.cors_origins:
            if origin == "*" or "://" not in origin or origin.endswith("/"):
                raise ConfigError(f"--cors-origin takes an origin such as https://app.example.org, got "
                                  f"{origin!r}")
        positive = {"max_upload_mb": self.max_upload_mb, "max_pixels": self.max_pixels,
                    "max_files": self.max_files, "max_batch": self.max_batch,
                    "max_queue": self.max_queue, "timeout": self.timeout}
        for name, value in positive.items():
            if value <= 0:
                raise ConfigError(f"serve setting {name} must be positive, got {value}")
        if self.max_wait_ms < 0:
            raise ConfigError(f"serve setting max_wait_ms must be >= 0, got {self.max_wait_ms}")

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    def limits(self) -> dict:
        """The limits a client needs to know (shown by GET /model and used by the web page)."""
        return {"max_upload_bytes": self.max_upload_bytes, "max_pixels": self.max_pixels,
                "max_files": self.max_files, "timeout_s": self.timeout}


def read_token(token_file: str | Path | None = None) -> str | None:
    """The bearer token: the first line of ``token_file``, else $IMAGECLF_TOKEN, else None (open)."""
    if token_file is not None:
        try:
            token = Path(token_file).read_text().strip()
        except OSError as exc:
            raise ConfigError(f"{token_file}: cannot read the token file ({exc.strerror})") from None
        if not token:
            raise ConfigError(f"{token_file}: the token file is empty")
        return token
    return os.environ.get(TOKEN_ENV) or None
