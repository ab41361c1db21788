"""Adaptive micro-batching: images from requests that arrive together share one forward pass.

Requests put their decoded images on a queue and await futures. One asyncio task takes
the first waiting image and everything queued behind it (up to ``max_batch``), and runs
the batch in the single inference thread, so the event loop never blocks and the model
never runs two passes at once (Grad-CAM hooks run on the same thread for the same reason).

The batch waits for nobody when nobody is coming: a lone request on an idle server runs at
once, with no batching window. While a pass runs, the requests that arrive meanwhile queue
up and make the next batch together, so batches grow with the load by themselves. The one
wait left is for requests known to be on their way (admitted by the server, still reading
or decoding, as ``arriving()`` counts them): the first image then waits up to ``max_wait``
for them to join. Images of requests that gave up (timeout, disconnect) are dropped before
the pass.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np


def _nobody() -> int:
    return 0


class MicroBatcher:
    """``await batcher.predict(images)`` -> probabilities, batched with concurrent callers.

    ``arriving``: how many requests are on their way to the batcher (none: never wait).
    """

    def __init__(self, predict: Callable[[np.ndarray], np.ndarray], max_batch: int = 32,
                 max_wait: float = 0.005, arriving: Callable[[], int] = _nobody) -> None:
        self._predict = predict
        self.max_batch = max_batch
        self.max_wait = max_wait
        self.arriving = arriving
        # One thread: forward passes are serialised, torch parallelises inside each one.
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="imageclf-infer")
        self._queue: asyncio.Queue | None = None
        self._task: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.batches = 0
        self.images = 0

    def _ensure_started(self) -> asyncio.Queue:
        loop = asyncio.get_running_loop()
        # Started lazily, and again if the app moved to a new event loop (as test clients do).
        if self._task is None or self._task.done() or self._loop is not loop:
            self._loop = loop
            self._queue = asyncio.Queue()
            self._task = loop.create_task(self._run())
        return self._queue

    @property
    def pending(self) -> int:
        """Images waiting for a forward pass."""
        return self._queue.qsize() if self._queue is not None else 0

    async def predict(self, images: np.ndarray) -> np.ndarray:
        """Probabilities for (N, H, W, C) uint8 images; N of them join the shared queue."""
        queue = self._ensure_started()
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in range(len(images))]
        for image, future in zip(images, futures):
            queue.put_nowait((image, future))
        try:
            return np.stack(await asyncio.gather(*futures))
        finally:
            for f in futures:
                f.cancel()  # no-op for finished ones; drops the rest if this request gave up

    async def run_exclusive(self, fn: Callable, *args):
        """Run ``fn(*args)`` on the inference thread, between batches (e.g. Grad-CAM)."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    async def _gather(self, queue: asyncio.Queue) -> list:
        """The next batch: the first image, all queued behind it, and those of requests on
        their way if they come within ``max_wait``."""
        items = [await queue.get()]
        deadline = time.monotonic() + self.max_wait
        while len(items) < self.max_batch:
            while len(items) < self.max_batch and not queue.empty():
                items.append(queue.get_nowait())
            remaining = deadline - time.monotonic()
            if len(items) >= self.max_batch or remaining <= 0 or self.arriving() <= 0:
                break
            try:
                items.append(await asyncio.wait_for(queue.get(), remaining))
            except asyncio.TimeoutError:
                break
        return [(img, f) for img, f in items if not f.done()]

    async def _run(self) -> None:
        queue = self._queue
        loop = asyncio.get_running_loop()
        while True:
            items = await self._gather(queue)
            if not items:
                continue
            batch = np.stack([img for img, _ in items])
            try:
                probs = await loop.run_in_executor(self.executor, self._predict, batch)
            except Exception as exc:  # a bug, not bad input: every waiting request gets it
                for _, f in items:
                    if not f.done():
                        f.set_exception(exc)
                continue
            self.batches += 1
            self.images += len(items)
            for (_, f), p in zip(items, probs):
                if not f.done():
                    f.set_result(p)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.executor.shutdown(wait=False, cancel_futures=True)
