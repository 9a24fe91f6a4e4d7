"""Request coalescing: concurrent identical calls share one run and its outcome."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

__all__ = ("Coalescer",)

_T = TypeVar("_T")


class Coalescer(Generic[_T]):
    """Runs one call per key at a time; concurrent callers with the same key share its outcome.

    The shared call runs as its own task, so a caller that is cancelled (a client that went
    away) cancels neither the work nor the other callers' wait for it. When the last caller
    waiting for a call is cancelled, the call is cancelled too, so work without waiters does
    not hold a worker.
    """

    def __init__(self) -> None:
        self._running: dict[Hashable, asyncio.Task[_T]] = {}
        self._waiters: dict[Hashable, int] = {}

    @property
    def in_flight(self) -> int:
        """Number of keys with a call running."""
        return len(self._running)

    async def run(self, key: Hashable, call: Callable[[], Awaitable[_T]]) -> tuple[_T, bool]:
        """Run `call` for `key`, or join the call already running for it.

        Returns:
            The outcome, and whether it was shared from another caller's call.

        Raises:
            Exception: whatever the shared call raised, to every caller.
        """
        task = self._running.get(key)
        shared = task is not None
        if task is None:
            task = asyncio.ensure_future(call())
            self._running[key] = task
            self._waiters[key] = 0
            task.add_done_callback(lambda done: self._forget(key, done))

        self._waiters[key] += 1
        try:
            return await asyncio.shield(task), shared
        except asyncio.CancelledError:
            if not task.done() and self._waiters.get(key) == 1:
                task.cancel()
            raise
        finally:
            if self._running.get(key) is task:
                self._waiters[key] -= 1

    async def cancel_all(self) -> None:
        """Cancel every call in flight and wait for them to end."""
        tasks = list(self._running.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _forget(self, key: Hashable, task: asyncio.Task[_T]) -> None:
        if self._running.get(key) is task:
            del self._running[key]
            del self._waiters[key]
        # Every caller may have gone away. Retrieving the exception here keeps asyncio from
        # logging it as never retrieved, because the callers that did wait already raised it.
        if not task.cancelled():
            task.exception()
