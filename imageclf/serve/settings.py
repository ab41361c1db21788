"""The server's limits, in one place: every one of them is a ``imageclf serve`` option."""

from __future__ import annotations

from dataclasses import dataclass

from imageclf.core.errors import ConfigError


@dataclass(frozen=True)
class ServeSettings:
    """Limits that keep a hostile or overloaded client from hurting the server.

    max_upload_mb: largest request body, all files together (checked while it streams in).
    max_pixels: largest image, width x height, read from the header before decoding.
    max_files: images in one request. max_batch: images in one forward pass.
    max_wait_ms: how long the first request of a batch waits for others to join it.
    max_queue: requests admitted at once (reading, decoding, waiting or in inference);
    one more is answered 503 with Retry-After, so memory is bounded by
    max_queue x max_upload_mb. timeout: seconds a request may take, upload included.
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

    def __post_init__(self) -> None:
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
