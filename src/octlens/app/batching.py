"""Micro-batching: requests that arrive together go through the model as one batch.

A model answers 16 scans in much less than 16 times the time of one. :class:`MicroBatcher` holds
each submitted item for at most ``max_wait`` seconds while more arrive (up to ``max_batch``),
then runs ``work`` on the list in one worker thread (so the event loop keeps serving and the
model is never called from two threads at once) and hands each caller its own result or error.

Items announced as coming (:meth:`MicroBatcher.coming`: uploads still being decoded) are waited
for up to ``max_hold`` seconds, so a burst is not cut into small batches while its scans are
still on their way; a lone request has nothing coming and waits ``max_wait`` only.
The queue is bounded: past ``max_pending`` waiting items, :meth:`submit` refuses at once
(:class:`Busy`) instead of letting memory grow without limit.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


class Busy(RuntimeError):
    """More items are waiting than the batcher holds."""


class MicroBatcher(Generic[Item, Result]):
    """Collect items into batches for ``work(items) -> results`` (one result per item, in order).

    Use as an async context manager (it owns its worker task and thread)::

        async with MicroBatcher(model_step, max_batch=16, max_wait=0.01) as batcher:
            result = await batcher.submit(item)
    """

    def __init__(
        self,
        work: Callable[[list[Item]], Sequence[Result]],
        max_batch: int = 16,
        max_wait: float = 0.01,
        max_pending: int = 256,
        max_hold: float = 0.1,
    ) -> None:
        self.work = work
        self.max_batch = max_batch
        self.max_wait = max_wait
        self.max_pending = max_pending
        self.max_hold = max_hold
        self._coming = 0
        self.batch_sizes: list[int] = []  # every batch run, for tests and benchmarks
        self._queue: asyncio.Queue[tuple[Item, asyncio.Future[Result]]] | None = None
        self._task: asyncio.Task[None] | None = None
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="octlens-model")

    async def __aenter__(self) -> MicroBatcher[Item, Result]:
        self._queue = asyncio.Queue(self.max_pending)
        self._task = asyncio.create_task(self._serve())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._thread.shutdown(wait=True)

    @contextlib.contextmanager
    def coming(self, count: int) -> Iterator[None]:
        """Announce ``count`` items that will be submitted before the block ends."""
        self._coming += count
        try:
            yield
        finally:
            self._coming -= count

    def enqueue(self, item: Item) -> asyncio.Future[Result]:
        """Queue ``item`` now; the future holds its result. :class:`Busy` if the queue is full."""
        if self._queue is None:
            raise RuntimeError("use the batcher inside 'async with'")
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        try:
            self._queue.put_nowait((item, future))
        except asyncio.QueueFull:
            raise Busy(f"{self.max_pending} requests are waiting; try again shortly") from None
        return future

    async def submit(self, item: Item) -> Result:
        """The result of ``item``, computed in a batch with the items submitted around it."""
        return await self.enqueue(item)

    async def _serve(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            start = loop.time()
            while len(batch) < self.max_batch:
                limit = start + (self.max_hold if self._coming else self.max_wait)
                remaining = limit - loop.time()
                if remaining <= 0:
                    break
                with contextlib.suppress(TimeoutError):  # look again at what is coming
                    batch.append(await asyncio.wait_for(self._queue.get(), min(remaining, 0.005)))
            live = [(item, future) for item, future in batch if not future.cancelled()]
            if live:
                self.batch_sizes.append(len(live))
                await self._run(live)

    async def _run(self, live: list[tuple[Item, asyncio.Future[Result]]]) -> None:
        """Run one batch; if it fails, run its items one by one, so one bad item fails alone."""
        loop = asyncio.get_running_loop()
        try:
            results = await loop.run_in_executor(self._thread, self.work, [i for i, _ in live])
        except Exception as error:
            if len(live) > 1:
                for one in live:
                    await self._run([one])
            elif not live[0][1].done():
                live[0][1].set_exception(error)
            return
        for (_, future), result in zip(live, results, strict=True):
            if not future.done():
                future.set_result(result)
