"""Concurrency: shared forward passes, the bounded queue (503 + Retry-After) and request timeouts.

A gate (threading.Event) holds the model's forward pass, so the tests decide exactly
when inference finishes and nothing depends on timing.
"""

from __future__ import annotations

import asyncio
import threading
import time

import httpx
import numpy as np
import pytest

from imageclf.inference.classifier import Classifier
from imageclf.serve import ServeSettings, create_app
from imageclf.serve.batcher import MicroBatcher


class GatedModel(Classifier):
    """The served model, but each forward pass waits for ``gate`` and records its batch size."""

    def __init__(self, inner: Classifier) -> None:
        super().__init__(inner.predictor)
        self.gate = threading.Event()
        self.gate.set()
        self.batch_sizes: list[int] = []
        self.entered = 0  # forward passes started (some may be waiting at the gate)

    def predict_scored(self, images, batch_size=None, on_batch=None):  # what the server's passes call
        self.entered += 1
        self.gate.wait(30)
        self.batch_sizes.append(len(images))
        return super().predict_scored(images, batch_size, on_batch)


def files(png: bytes, n: int = 1):
    return [("files", (f"{i}.png", png, "image/png")) for i in range(n)]


async def wait_until(condition, what: str) -> None:
    for _ in range(2000):
        if condition():
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"timed out waiting for {what}")


def run(app, scenario):
    async def main():
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await scenario(client, app.state.imageclf)

    return asyncio.run(main())


@pytest.fixture()
def gated(served_model):
    model = GatedModel(served_model)
    yield model
    model.gate.set()


def test_requests_that_arrive_together_share_one_forward_pass(gated, png_bytes):
    app = create_app(gated, ServeSettings(max_batch=32))
    gated.batch_sizes.clear()

    async def scenario(client, state):
        gated.gate.clear()
        entered = gated.entered
        first = asyncio.create_task(client.post("/predict", files=files(png_bytes)))
        await wait_until(lambda: gated.entered == entered + 1, "the first pass to start")
        others = [asyncio.create_task(client.post("/predict", files=files(png_bytes, 2))) for _ in range(5)]
        await wait_until(lambda: state.batcher.pending == 10, "ten images queued")
        gated.gate.set()
        return await asyncio.gather(first, *others)

    responses = run(app, scenario)
    assert [r.status_code for r in responses] == [200] * 6
    assert gated.batch_sizes == [1, 10]
    probs = {tuple(p["probabilities"].values()) for r in responses for p in r.json()["predictions"]}
    assert len(probs) == 1  # the same image gives the same answer whatever batch it was in


def test_an_idle_server_answers_a_lone_request_without_waiting_for_a_batch(served_model, png_bytes):
    app = create_app(served_model, ServeSettings(max_wait_ms=1000))  # a 1 s batching window

    async def scenario(client, state):
        await client.post("/predict", files=files(png_bytes))
        bad = await client.post("/predict", files=[("files", ("x.png", b"not an image", "image/png"))])
        t0 = time.perf_counter()
        r = await client.post("/predict", files=files(png_bytes))
        return r, time.perf_counter() - t0, bad, state.arriving

    r, elapsed, bad, arriving = run(app, scenario)
    assert r.status_code == 200 and elapsed < 0.5
    assert bad.status_code == 415 and arriving == 0  # a refused request is no longer counted on its way


def test_full_queue_answers_503_with_retry_after(gated, png_bytes):
    app = create_app(gated, ServeSettings(max_queue=2))

    async def scenario(client, state):
        gated.gate.clear()
        admitted = [asyncio.create_task(client.post("/predict", files=files(png_bytes))) for _ in range(2)]
        await wait_until(lambda: state.in_flight == 2, "two requests in progress")
        refused = await asyncio.gather(*[client.post("/predict", files=files(png_bytes)) for _ in range(4)])
        health = await client.get("/health")
        gated.gate.set()
        return await asyncio.gather(*admitted), refused, health

    admitted, refused, health = run(app, scenario)
    assert [r.status_code for r in admitted] == [200, 200]
    for r in refused:
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
        assert r.json()["code"] == "busy"
    assert health.status_code == 200 and health.json()["in_flight"] == 2


def test_slow_inference_times_out_with_503(gated, png_bytes):
    app = create_app(gated, ServeSettings(timeout=0.3))

    async def scenario(client, state):
        gated.gate.clear()
        r = await client.post("/predict", files=files(png_bytes))
        in_flight = state.in_flight
        gated.gate.set()
        after = await client.post("/predict", files=files(png_bytes))
        return r, in_flight, after

    r, in_flight, after = run(app, scenario)
    assert r.status_code == 503 and r.json()["code"] == "timeout" and "retry-after" in r.headers
    assert in_flight == 0  # the slot was given back
    assert after.status_code == 200


def test_slow_upload_times_out_with_408(served_model, png_bytes):
    app = create_app(served_model, ServeSettings(timeout=0.3))

    async def slow_body():
        yield png_bytes[:10]
        await asyncio.sleep(5)
        yield png_bytes[10:]

    async def scenario(client, state):
        return await client.post("/predict", content=slow_body(),
                                 headers={"content-type": "application/octet-stream"})

    r = run(app, scenario)
    assert r.status_code == 408 and r.json()["code"] == "timeout"


def test_a_failing_model_is_a_json_500_and_the_server_goes_on(served_model, png_bytes):
    class Broken(GatedModel):
        fail = True

        def predict_scored(self, images, batch_size=None, on_batch=None):
            if self.fail and len(images) == 1 and images.sum() > 0:
                raise RuntimeError("boom")
            return super().predict_scored(images, batch_size, on_batch)

    model = Broken(served_model)
    app = create_app(model, ServeSettings())

    async def scenario(client, state):
        bad = await client.post("/predict", files=files(png_bytes))
        model.fail = False
        return bad, await client.post("/predict", files=files(png_bytes))

    bad, good = run(app, scenario)
    assert bad.status_code == 500 and bad.json()["code"] == "internal_error"
    assert good.status_code == 200


def test_batcher_alone_splits_nothing_and_skips_abandoned_requests():
    seen = []

    def predict(batch):
        seen.append(len(batch))
        return batch.reshape(len(batch), -1)[:, :2].astype(np.float32)

    async def main():
        b = MicroBatcher(predict, max_batch=4, max_wait=0.05)
        images = np.arange(6 * 2, dtype=np.uint8).reshape(6, 1, 2, 1)
        out = await asyncio.gather(b.predict(images[:3]), b.predict(images[3:]))
        abandoned = asyncio.ensure_future(b.predict(images[:1]))
        await asyncio.sleep(0)
        abandoned.cancel()
        await asyncio.sleep(0.1)
        await b.close()
        return out

    out = asyncio.run(main())
    np.testing.assert_array_equal(np.concatenate(out), np.arange(12).reshape(6, 2))
    assert sum(seen) == 6 and max(seen) <= 4  # the cancelled image never ran


def test_onnx_backend_serves_the_same_answers(served_model, trained_run, png_bytes):
    pytest.importorskip("onnxruntime")
    from imageclf.inference.backends import load_backend
    from imageclf.inference.onnx_predictor import OnnxPredictor
    from imageclf.modelfile.onnx import onnx_bytes

    # A bare predictor (no Classifier around it), from bytes as from a bare .onnx file: no folder.
    bare = OnnxPredictor(onnx_bytes(served_model), served_model.config, "mem")
    upload = [("file", ("a.png", png_bytes, "image/png"))]
    models = {"torch": served_model, "bare": bare, "folder": load_backend(trained_run, "onnx")}
    answers, heatmaps = [], {}
    for name, model in models.items():
        app = create_app(model, ServeSettings())

        async def scenario(client, state):
            return (await client.post("/predict", files=files(png_bytes, 3)),
                    await client.post("/explain", files=upload))

        predicted, explained = run(app, scenario)
        assert predicted.status_code == 200
        answers.append([list(p["probabilities"].values()) for p in predicted.json()["predictions"]])
        assert predicted.json()["model"]["backend"] == ("torch" if name == "torch" else "onnx")
        heatmaps[name] = explained
    np.testing.assert_allclose(answers[0], answers[1], atol=1e-4)
    np.testing.assert_allclose(answers[0], answers[2], atol=1e-4)
    # Grad-CAM needs the PyTorch network: loaded beside an ONNX model from its folder, absent for
    # a bare file (501, without the server's paths).
    assert heatmaps["torch"].status_code == heatmaps["folder"].status_code == 200
    assert heatmaps["folder"].content == heatmaps["torch"].content
    assert heatmaps["bare"].status_code == 501 and heatmaps["bare"].json()["code"] == "explain_unavailable"
    assert "bare .onnx" in heatmaps["bare"].json()["error"]


class FakeModel:
    """A predict function for the batcher alone: records batch sizes; each pass waits for ``gate``."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.gate.set()
        self.started = threading.Event()
        self.sizes: list[int] = []

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        self.started.set()
        self.gate.wait(30)
        self.sizes.append(len(batch))
        return batch.reshape(len(batch), -1)[:, :1].astype(np.float32)


def images(n: int, first: int = 0) -> np.ndarray:
    return np.arange(first, first + n, dtype=np.uint8).reshape(n, 1, 1, 1)


def test_a_lone_request_on_an_idle_batcher_runs_at_once_not_after_max_wait():
    fake = FakeModel()

    async def main():
        b = MicroBatcher(fake, max_batch=32, max_wait=1.0)
        await b.predict(images(1))  # the task and thread started
        times = []
        for i in range(5):
            t0 = time.perf_counter()
            out = await b.predict(images(1, i))
            times.append(time.perf_counter() - t0)
            assert out[0, 0] == i
        await b.close()
        return times

    times = asyncio.run(main())
    assert max(times) < 0.2, times  # a 1 s batching window would show in every one
    assert fake.sizes == [1] * 6


def test_requests_that_arrive_while_a_pass_runs_make_the_next_batch_together():
    fake = FakeModel()

    async def main():
        b = MicroBatcher(fake, max_batch=4, max_wait=1.0)
        fake.gate.clear()
        first = asyncio.ensure_future(b.predict(images(1)))
        await asyncio.get_running_loop().run_in_executor(None, fake.started.wait, 5)
        t0 = time.perf_counter()
        rest = [asyncio.ensure_future(b.predict(images(2, 10 + 2 * i))) for i in range(5)]
        await asyncio.sleep(0.05)
        fake.gate.set()
        out = await asyncio.gather(first, *rest)
        elapsed = time.perf_counter() - t0
        await b.close()
        return out, elapsed

    out, elapsed = asyncio.run(main())
    # 10 images queued behind a running pass: max_batch 4 at a time, in arrival order, no waiting.
    assert fake.sizes == [1, 4, 4, 2]
    assert [o[:, 0].tolist() for o in out] == [[0], [10, 11], [12, 13], [14, 15], [16, 17], [18, 19]]
    assert elapsed < 0.5


def test_a_batch_waits_up_to_max_wait_for_requests_on_their_way_and_no_longer():
    fake = FakeModel()
    on_the_way = [0]

    async def late(b: MicroBatcher, delay: float, first: int):
        await asyncio.sleep(delay)
        on_the_way[0] -= 1
        return await b.predict(images(1, first))

    async def main():
        b = MicroBatcher(fake, max_batch=32, max_wait=0.5, arriving=lambda: on_the_way[0])
        await b.predict(images(1))
        # One request on its way arrives 50 ms after the first: both share one pass.
        on_the_way[0] = 1
        await asyncio.gather(b.predict(images(1, 1)), late(b, 0.05, 2))
        # One that never comes: the first waits max_wait, then runs alone.
        on_the_way[0] = 1
        t0 = time.perf_counter()
        await b.predict(images(1, 3))
        waited = time.perf_counter() - t0
        await b.close()
        return waited

    waited = asyncio.run(main())
    assert fake.sizes == [1, 2, 1]
    assert 0.45 <= waited < 1.5
