"""Admission control for image requests: a bound on processing at once plus a bounded queue.

An image request is admitted before its source is fetched. At most ``max_concurrency``
admitted requests process an image at a time, and up to ``max_queue`` more may be admitted to
fetch their source or wait for a processing slot. A request beyond both gets 503 with
``Retry-After`` at once, without fetching or processing anything, so the memory and latency of
an overloaded server stop growing.

The server's own routes (``/healthz``, ``/readyz``, ``/ping``, ``/metrics``) never pass through
the limiter, so probes stay fast under any load.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Final

from darkroom_gpu.config import Settings
from darkroom_gpu.errors import OverloadedError

__all__ = ("RETRY_AFTER_SECONDS", "ConcurrencyLimiter", "create_limiter")

logger = logging.getLogger(__name__)

# Seconds a rejected client is asked to wait. An admission frees up whenever an admitted
# request finishes, which under load happens many times a second, so the shortest delay HTTP
# can express is used.
RETRY_AFTER_SECONDS: Final = 1
# Overload warnings are logged at most once per this many seconds; every rejection is still
# counted in darkroom_overload_rejections_total and logged as a 503 access line.
_WARNING_INTERVAL_SECONDS: Final = 10.0


def create_limiter(
    settings: Settings, device: str, on_reject: Callable[[], object] | None = None
) -> ConcurrencyLimiter:
    """Build the limiter for `settings` and the manipulator's `device`.

    Without ``server.max_concurrency`` a CPU manipulator processes ``server.workers`` images at
    once. A GPU manipulator gets at least two batches' worth (``2 * batching.max_images``), so
    that the micro-batcher can fill the next batch while one runs.
    """
    server = settings.server
    concurrency = server.concurrency_limit
    if server.max_concurrency is None and device != "cpu":
        concurrency = max(concurrency, 2 * settings.batching.max_images)
    return ConcurrencyLimiter(concurrency, server.queue_limit, on_reject=on_reject)


class ConcurrencyLimiter:
    """Bounds the image requests in flight and the ones processing at once.

    Args:
        max_concurrency: requests allowed to process an image at the same time, at least 1.
        max_queue: requests admitted beyond `max_concurrency`, at least 0.
        on_reject: called once for every rejected request, to count it in a metric.

    Raises:
        ValueError: a bound is out of range.
    """

    def __init__(
        self,
        max_concurrency: int,
        max_queue: int,
        on_reject: Callable[[], object] | None = None,
    ) -> None:
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency: expected at least 1, got {max_concurrency}")
        if max_queue < 0:
            raise ValueError(f"max_queue: expected at least 0, got {max_queue}")
        self.max_concurrency = max_concurrency
        self.max_queue = max_queue
        self.admitted = 0
        self.rejected = 0
        self._on_reject = on_reject
        self._processing = asyncio.Semaphore(max_concurrency)
        self._last_warning: float | None = None

    @property
    def capacity(self) -> int:
        """The maximum number of requests admitted at once."""
        return self.max_concurrency + self.max_queue

    @contextlib.contextmanager
    def admit(self) -> Iterator[None]:
        """Hold one admission for the length of a request.

        Raises:
            OverloadedError: `capacity` requests are already admitted.
        """
        if self.admitted >= self.capacity:
            self.rejected += 1
            if self._on_reject is not None:
                self._on_reject()
            self._warn_overloaded()
            raise OverloadedError(
                "the server is overloaded; retry later", retry_after=RETRY_AFTER_SECONDS
            )
        self.admitted += 1
        try:
            yield
        finally:
            self.admitted -= 1

    @contextlib.asynccontextmanager
    async def processing(self) -> AsyncIterator[None]:
        """Wait for a processing slot and hold it while the body runs.

        Callers hold an admission from `admit` first, so the number of waiters is bounded.
        """
        async with self._processing:
            yield

    def _warn_overloaded(self) -> None:
        now = asyncio.get_running_loop().time()
        if self._last_warning is not None and now - self._last_warning < _WARNING_INTERVAL_SECONDS:
            return
        self._last_warning = now
        logger.warning(
            "overloaded: %d image %s admitted (max_concurrency %d + max_queue %d); "
            "answering 503 (%d rejected so far)",
            self.admitted,
            "request" if self.admitted == 1 else "requests",
            self.max_concurrency,
            self.max_queue,
            self.rejected,
        )
