"""An asyncio micro-batcher that groups concurrent jobs into batches for one device.

Policy:
    - A job that arrives while the device is idle is dispatched at once, together with whatever
      else is queued by then, so a lone request does not wait for batch-mates.
    - Jobs that arrive while a batch runs are collected into the next batch. When the device
      becomes free, that batch closes once `max_wait_ms` has passed since its first job was
      queued, or earlier when it reaches `max_images` or `max_megapixels`.
    - A batch contains at most `max_images` jobs and at most `max_megapixels` source megapixels,
      except that a single job over the megapixel cap still runs, alone.
    - Jobs are taken in arrival order, and one batch runs at a time.
    - At `max_queue` waiting jobs, `submit` raises `OverloadedError` (503 with ``Retry-After``).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar, Final, Generic, TypeVar

from darkroom_gpu.config import BatchSettings
from darkroom_gpu.errors import OverloadedError
from darkroom_gpu.metrics import Metrics

__all__ = ("BatcherClosedError", "MicroBatcher")

_CLOSED_MESSAGE: Final = "the server is shutting down; retry the request"

JobT = TypeVar("JobT")
ResultT = TypeVar("ResultT")


class BatcherClosedError(OverloadedError):
    """The batcher was closed (the server is shutting down) before the job could run."""

    code: ClassVar[str] = "shutting_down"

    def __init__(self, public_message: str = _CLOSED_MESSAGE) -> None:
        super().__init__(public_message, retry_after=1)


@dataclass(eq=False, slots=True)
class _Pending(Generic[JobT, ResultT]):
    job: JobT
    megapixels: float
    future: asyncio.Future[ResultT]
    queued_at: float
    # Whether a batch was running when the job was queued; decides the idle fast path.
    arrived_busy: bool


class MicroBatcher(Generic[JobT, ResultT]):
    """Collects jobs from concurrent callers and runs them in batches, one batch at a time.

    Args:
        run_batch: runs one batch and returns one outcome per job, in order: the result, or the
            exception that job alone failed with. An exception raised by `run_batch` itself
            fails every job of the batch.
        settings: the batch bounds and the queue limit.
        metrics: where batch size, queue depth and queue wait are recorded.
        megapixels: the cost of a job in source megapixels (stored width x height / 1e6).
    """

    def __init__(
        self,
        run_batch: Callable[[list[JobT]], Awaitable[Sequence[ResultT | Exception]]],
        *,
        settings: BatchSettings,
        metrics: Metrics,
        megapixels: Callable[[JobT], float],
    ) -> None:
        self._run_batch = run_batch
        self._settings = settings
        self._metrics = metrics
        self._megapixels = megapixels
        self._max_wait = settings.max_wait_ms / 1000
        self._queue: deque[_Pending[JobT, ResultT]] = deque()
        self._arrival = asyncio.Event()
        self._running: list[_Pending[JobT, ResultT]] = []
        self._dispatcher: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def queue_depth(self) -> int:
        """Number of jobs waiting for a batch."""
        return len(self._queue)

    @property
    def closed(self) -> bool:
        """Whether `close` was called; a closed batcher takes no more jobs."""
        return self._closed

    @property
    def running(self) -> int:
        """Number of jobs in the batch running now; 0 while the device is idle."""
        return len(self._running)

    async def submit(self, job: JobT) -> ResultT:
        """Queue one job and wait for its result.

        Raises:
            OverloadedError: the queue contains `max_queue` jobs already.
            BatcherClosedError: the batcher is closed or closes before the job runs.
            Exception: whatever the job failed with in its batch.
        """
        (pending,) = self._enqueue([job])
        try:
            return await pending.future
        except asyncio.CancelledError:
            self._forget([pending])
            raise

    async def submit_many(self, jobs: Sequence[JobT]) -> list[ResultT | Exception]:
        """Queue several jobs at once, so that an idle device takes them as one batch.

        The batch bounds still apply: jobs past `max_images` or `max_megapixels` go into the
        following batches. More than `max_queue` jobs are accepted only into an empty queue,
        so that a group such as a warm-up pass can always run.

        Returns:
            One outcome per job, in order: its result or the exception it failed with.

        Raises:
            OverloadedError: the queue has no room for all of `jobs`, so none is queued.
            BatcherClosedError: the batcher is closed.
        """
        if not jobs:
            return []
        pending = self._enqueue(jobs)
        try:
            outcomes = await asyncio.gather(
                *(item.future for item in pending), return_exceptions=True
            )
        except asyncio.CancelledError:
            self._forget(pending)
            raise
        return [_as_outcome(outcome) for outcome in outcomes]

    async def close(self) -> None:
        """Fail the waiting jobs with `BatcherClosedError` and let the running batch finish."""
        if self._closed:
            return
        self._closed = True
        self._fail_queued(BatcherClosedError())
        self._arrival.set()
        if self._dispatcher is not None:
            await self._dispatcher

    def _enqueue(self, jobs: Sequence[JobT]) -> list[_Pending[JobT, ResultT]]:
        if self._closed:
            raise BatcherClosedError()
        max_queue = self._settings.max_queue
        if self._queue and len(self._queue) + len(jobs) > max_queue:
            raise OverloadedError(
                f"the image queue is full ({len(self._queue)} images waiting, at most "
                f"{max_queue}); retry shortly",
                retry_after=1,
            )

        loop = asyncio.get_running_loop()
        if self._dispatcher is None:
            self._dispatcher = loop.create_task(self._dispatch_loop(), name="micro-batcher")
        now = time.perf_counter()
        busy = bool(self._running)
        pending = [
            _Pending(job, self._megapixels(job), loop.create_future(), now, busy) for job in jobs
        ]
        self._queue.extend(pending)
        self._metrics.queue_depth.set(len(self._queue))
        self._arrival.set()
        return pending

    def _forget(self, pending: Sequence[_Pending[JobT, ResultT]]) -> None:
        # A cancelled caller gives its queue slot back at once. A job already in the running
        # batch stays there, and its result is dropped because its future is cancelled.
        for item in pending:
            if item in self._queue:
                self._queue.remove(item)
            if not item.future.done():
                item.future.cancel()
        self._metrics.queue_depth.set(len(self._queue))

    async def _dispatch_loop(self) -> None:
        try:
            while not self._closed:
                if not self._queue:
                    self._arrival.clear()
                    await self._arrival.wait()
                    continue
                if self._queue[0].arrived_busy:
                    await self._collect()
                batch = self._take_batch()
                if batch:
                    await self._run(batch)
        finally:
            # Reached on close, and also when this task is cancelled or fails, so that no queued
            # caller waits forever.
            self._closed = True
            self._fail_queued(BatcherClosedError())

    async def _collect(self) -> None:
        deadline = self._queue[0].queued_at + self._max_wait
        while not self._closed and not self._batch_full():
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                return
            self._arrival.clear()
            try:
                async with asyncio.timeout(remaining):
                    await self._arrival.wait()
            except TimeoutError:
                return

    def _batch_full(self) -> bool:
        count = 0
        megapixels = 0.0
        for item in self._queue:
            if count == self._settings.max_images:
                return True
            if count > 0 and megapixels + item.megapixels > self._settings.max_megapixels:
                return True
            count += 1
            megapixels += item.megapixels
        return count == self._settings.max_images

    def _take_batch(self) -> list[_Pending[JobT, ResultT]]:
        batch: list[_Pending[JobT, ResultT]] = []
        megapixels = 0.0
        while self._queue and len(batch) < self._settings.max_images:
            item = self._queue[0]
            if batch and megapixels + item.megapixels > self._settings.max_megapixels:
                break
            self._queue.popleft()
            if item.future.done():
                continue
            batch.append(item)
            megapixels += item.megapixels
        self._metrics.queue_depth.set(len(self._queue))
        return batch

    async def _run(self, batch: list[_Pending[JobT, ResultT]]) -> None:
        started = time.perf_counter()
        self._metrics.batch_size.observe(len(batch))
        for item in batch:
            self._metrics.queue_wait.observe(started - item.queued_at)

        self._running = batch
        try:
            outcomes = list(await self._run_batch([item.job for item in batch]))
        except Exception as exc:  # noqa: BLE001 - each caller re-raises it; the middleware logs it
            outcomes = [exc] * len(batch)
        except asyncio.CancelledError:
            error = BatcherClosedError()
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(error)
            raise
        finally:
            self._running = []
        if len(outcomes) != len(batch):
            mismatch = RuntimeError(
                f"run_batch returned {len(outcomes)} outcomes for a batch of {len(batch)} jobs"
            )
            outcomes = [mismatch] * len(batch)

        for item, outcome in zip(batch, outcomes, strict=True):
            if item.future.done():
                continue
            if isinstance(outcome, Exception):
                item.future.set_exception(outcome)
            else:
                item.future.set_result(outcome)

    def _fail_queued(self, error: Exception) -> None:
        while self._queue:
            item = self._queue.popleft()
            if not item.future.done():
                item.future.set_exception(error)
        self._metrics.queue_depth.set(0)


def _as_outcome(outcome: ResultT | BaseException) -> ResultT | Exception:
    if isinstance(outcome, BaseException) and not isinstance(outcome, Exception):
        # gather() returns a CancelledError for a future cancelled elsewhere, so re-raise it.
        raise outcome
    return outcome
