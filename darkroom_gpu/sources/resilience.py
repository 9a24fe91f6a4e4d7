"""Per-source resilience: timeouts, retries with backoff, a circuit breaker and request coalescing.

Every configured source is wrapped in a `ResilientSource`, which adds the circuit breaker and
coalescing whatever its kind. Timeouts and retries live inside the kinds that talk to a network
(``http``, ``s3``), because only they can tell a transient failure from a final response. They
share the option reader and the retry loop defined here.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Final, TypeVar

from darkroom_gpu.coalescing import Coalescer
from darkroom_gpu.config.reader import ConfigReader
from darkroom_gpu.config.settings import CircuitBreakerSettings
from darkroom_gpu.errors import ServiceError, SourceFailedError, SourceTimeoutError
from darkroom_gpu.sources.base import Source, SourceObject

__all__ = (
    "BACKOFF_BASE_SECONDS",
    "CircuitBreaker",
    "CircuitState",
    "ResilientSource",
    "Timeouts",
    "TransientError",
    "backoff_delay",
    "read_retries",
    "read_timeouts",
    "retry_transient",
)

logger = logging.getLogger(__name__)

T = TypeVar("T")

# The first retry waits about this long and each later one twice as long as the one before.
BACKOFF_BASE_SECONDS: Final = 0.1
MAX_RETRIES: Final = 10
MAX_TIMEOUT_SECONDS: Final = 3600.0
MIN_TIMEOUT_SECONDS: Final = 0.01


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Deadlines of one fetch from a network source, in seconds.

    Attributes:
        connect: time to open a connection to the origin.
        read: maximum wait for the next bytes (response headers or a body chunk).
        total: the whole fetch, redirects and retries included.
    """

    connect: float = 2.0
    read: float = 5.0
    total: float = 10.0


def read_timeouts(reader: ConfigReader) -> Timeouts:
    """Read the ``timeouts: {connect, read, total}`` mapping of a source entry."""
    child = reader.child("timeouts")
    base = Timeouts()
    timeouts = Timeouts(
        connect=child.number("connect", base.connect, MIN_TIMEOUT_SECONDS, MAX_TIMEOUT_SECONDS),
        read=child.number("read", base.read, MIN_TIMEOUT_SECONDS, MAX_TIMEOUT_SECONDS),
        total=child.number("total", base.total, MIN_TIMEOUT_SECONDS, MAX_TIMEOUT_SECONDS),
    )
    child.reject_unknown()
    return timeouts


def read_retries(reader: ConfigReader, default: int = 2) -> int:
    """Read ``retries``: how many times a transient failure is retried after the first try."""
    return reader.integer("retries", default, 0, MAX_RETRIES)


class TransientError(Exception):
    """A failed attempt that may succeed when tried again.

    Args:
        error: what the caller sees when no retry follows.
        reason: a short description for the retry log line, free of credentials.
    """

    def __init__(self, error: ServiceError, reason: str) -> None:
        super().__init__(reason)
        self.error = error
        self.reason = reason


async def retry_transient(
    attempt: Callable[[], Awaitable[T]], *, source: str, retries: int, deadline: float
) -> T:
    """Run `attempt`, retrying it with jittered exponential backoff while it fails transiently.

    Args:
        attempt: one try; raises `TransientError` for a failure worth retrying.
        source: the source name, for the log line written before each retry.
        retries: retries allowed after the first try.
        deadline: event-loop time (``loop.time()``) after which no retry starts.

    Returns:
        The result of the first successful try.

    Raises:
        ServiceError: the `TransientError.error` of the last try, when retries run out or the
            next wait would reach `deadline`. Any other exception of a try propagates as it is.
    """
    loop = asyncio.get_running_loop()
    tries = retries + 1
    for number in range(1, tries + 1):
        try:
            return await attempt()
        except TransientError as exc:
            failure = exc

        delay = backoff_delay(number)
        if number == tries or loop.time() + delay >= deadline:
            raise failure.error from failure.__cause__
        logger.warning(
            "source %s: attempt %d of %d failed (%s); retrying in %.2f s",
            source,
            number,
            tries,
            failure.reason,
            delay,
        )
        await asyncio.sleep(delay)
    raise AssertionError("unreachable: the last try returns or raises")


def backoff_delay(attempt: int) -> float:
    """Return the wait in seconds after failed try number `attempt` (1-based).

    The wait is drawn from the upper half of ``BACKOFF_BASE_SECONDS * 2 ** (attempt - 1)``, so
    that many clients retrying at once spread out instead of hitting the origin together.
    """
    ceiling = BACKOFF_BASE_SECONDS * 2.0 ** (attempt - 1)
    # Jitter only spreads load, so it needs no cryptographic randomness.
    return ceiling / 2 + random.uniform(0, ceiling / 2)  # noqa: S311


class CircuitState(enum.Enum):
    """Whether a circuit breaker lets requests through to the origin."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"


class CircuitBreaker:
    """A guard that stops calling an origin after consecutive failures, then tests it once.

    Closed, every call goes through and consecutive failures are counted. At
    ``settings.failures`` the circuit opens and calls fail fast with `SourceFailedError`. Once
    ``settings.reset_after`` seconds have passed, one trial call goes through (half-open): its
    success closes the circuit and its failure opens it for another ``reset_after``.

    Args:
        settings: the failure count and the reset delay.
        source: the source name, for errors and logs.
        clock: monotonic time in seconds; tests pass a fake one.
    """

    def __init__(
        self,
        settings: CircuitBreakerSettings,
        source: str,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.source = source
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        self._trial_running = False

    @property
    def state(self) -> CircuitState:
        """The current state, as the next call would find it."""
        if self._opened_at is None:
            return CircuitState.CLOSED
        if self._trial_running or self._clock() - self._opened_at < self.settings.reset_after:
            return CircuitState.OPEN
        return CircuitState.HALF_OPEN

    def acquire(self) -> bool:
        """Admit one call to the origin.

        Returns:
            Whether the call is the half-open trial; pass it on to `record`.

        Raises:
            SourceFailedError: the circuit is open, or another trial call is running.
        """
        state = self.state
        if state is CircuitState.CLOSED:
            return False
        if state is CircuitState.OPEN:
            raise SourceFailedError(f"source {self.source} is unavailable (circuit open)")
        self._trial_running = True
        logger.info("source %s: circuit half-open; sending one trial request", self.source)
        return True

    def record(self, *, failed: bool | None, trial: bool) -> None:
        """Record the outcome of an admitted call.

        Args:
            failed: ``True`` for an origin failure, ``False`` when the origin responded (even
                "not found"), ``None`` when the outcome is unknown (cancelled, or a bug).
            trial: what `acquire` returned for this call.
        """
        if trial:
            self._trial_running = False
        if failed is None:
            return
        if not failed:
            if self._opened_at is not None:
                logger.info("source %s: circuit closed; the origin responds again", self.source)
            self._failures = 0
            self._opened_at = None
            return

        self._failures += 1
        # A call admitted before the circuit opened may fail late, and must not extend the wait.
        reopen = trial or (self._opened_at is None and self._failures >= self.settings.failures)
        if reopen:
            self._opened_at = self._clock()
            logger.warning(
                "source %s: circuit open after %d consecutive failures; failing fast for %g s",
                self.source,
                self._failures,
                self.settings.reset_after,
            )


class ResilientSource(Source):
    """A wrapper that adds a circuit breaker and request coalescing to any source.

    Concurrent fetches of the same path and byte limit share one call to the wrapped source and
    its result or error. A caller that is cancelled stops waiting, but the shared call goes on
    for the others, until the last of them is cancelled too. The circuit breaker counts that
    shared call once: `SourceFailedError` and `SourceTimeoutError` are failures, while other
    `ServiceError`s (not found, forbidden, over a limit) prove that the origin responded.

    Args:
        inner: the source that really fetches.
        clock: monotonic time in seconds for the circuit breaker; tests pass a fake one.
    """

    def __init__(self, inner: Source, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(inner.settings)
        self.inner = inner
        self.breaker = CircuitBreaker(inner.settings.circuit_breaker, inner.name, clock)
        self._fetches: Coalescer[SourceObject] = Coalescer()

    @classmethod
    def read_options(cls, reader: ConfigReader) -> object:
        """Raise, because this wrapper is not a kind that a configuration can name.

        Raises:
            TypeError: always.
        """
        raise TypeError("ResilientSource wraps a configured source; it has no options")

    async def fetch(self, path: str, *, max_bytes: int) -> SourceObject:
        """Fetch `path` through the wrapped source, sharing any identical fetch in flight.

        Raises:
            SourceFailedError: the circuit is open, or the wrapped source failed.
        """
        result, _ = await self._fetches.run((path, max_bytes), partial(self._call, path, max_bytes))
        return result

    async def close(self) -> None:
        """Cancel fetches still in flight, then close the wrapped source."""
        await self._fetches.cancel_all()
        await self.inner.close()

    async def _call(self, path: str, max_bytes: int) -> SourceObject:
        trial = self.breaker.acquire()
        failed: bool | None = None
        try:
            result = await self.inner.fetch(path, max_bytes=max_bytes)
            failed = False
            return result
        except (SourceFailedError, SourceTimeoutError):
            failed = True
            raise
        except ServiceError:
            failed = False
            raise
        finally:
            self.breaker.record(failed=failed, trial=trial)
