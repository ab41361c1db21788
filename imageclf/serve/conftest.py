"""Fixtures for the serving tests: the tiny trained model, a test client and sample images."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from imageclf.data import synthetic as testing
from imageclf.serve.testing import encode


@pytest.fixture(scope="session")
def sample_images() -> tuple[np.ndarray, np.ndarray]:
    """Eight 40 px grayscale images of both classes (a different size from the model's 32)."""
    return testing.synthetic_images(8, size=40, seed=3)


@pytest.fixture(scope="session")
def png_bytes(sample_images) -> bytes:
    return encode(sample_images[0][0])


@pytest.fixture(scope="session")
def served_model(trained_run):
    import imageclf

    return imageclf.load(trained_run, device="cpu")


@pytest.fixture(scope="module")
def client(served_model):
    with warnings.catch_warnings():
        # Starlette asks for httpx2 in its test client; httpx is what the project installs.
        warnings.simplefilter("ignore")
        from fastapi.testclient import TestClient

    from imageclf.serve import ServeSettings, create_app

    settings = ServeSettings(max_upload_mb=1, max_pixels=2_000_000, max_files=4)
    with TestClient(create_app(served_model, settings)) as c:
        yield c

