"""User-facing errors: one class the CLI turns into a one-line message and exit code 2."""

from __future__ import annotations

from pathlib import Path


class ImageclfError(Exception):
    """A problem with the user's input (path, data, model file, option), not a bug.

    The CLI prints ``error: <message>`` and exits with code 2, no traceback.
    """

    exit_code = 2


class BadImageError(ImageclfError):
    """An image that cannot be decoded (corrupt, truncated, not an image, too large)."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class DataError(ImageclfError):
    """A dataset that cannot be used as given (missing path, empty class, one class, ...)."""


class ModelFileError(ImageclfError):
    """A model folder that is missing, incomplete, edited or unsafe."""


class ConfigError(ImageclfError):
    """An unknown recipe or model, or an override that does not fit."""
