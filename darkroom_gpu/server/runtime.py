"""The swappable part of a running server: settings and the sources routed from them.

A configuration reload builds a new `Runtime` and makes it current. Requests hold the runtime
they started with until they finish, and a retired runtime closes its sources only once its
last request is done, so in-flight requests finish on the configuration they started with.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator

from darkroom_gpu.config import Settings
from darkroom_gpu.server.router import SourceRouter

__all__ = ("Runtime", "RuntimeHolder")

logger = logging.getLogger(__name__)


class Runtime:
    """One configuration generation: its settings and its router of open sources."""

    def __init__(self, settings: Settings, generation: int) -> None:
        self.settings = settings
        self.generation = generation
        self.router = SourceRouter(settings.sources)
        self.requests = 0
        self.retired = False
        self._closing: asyncio.Task[None] | None = None

    def retire(self) -> None:
        """Stop taking requests; close the sources once the last request has finished."""
        self.retired = True
        self._close_if_idle()

    def release(self) -> None:
        """Mark one request as finished."""
        self.requests -= 1
        self._close_if_idle()

    async def wait_closed(self) -> None:
        """Wait until a retired runtime has closed its sources."""
        if self._closing is not None:
            await self._closing

    def _close_if_idle(self) -> None:
        if self.retired and self.requests == 0 and self._closing is None:
            self._closing = asyncio.ensure_future(self.router.close())


class RuntimeHolder:
    """Holds the current runtime and hands it to requests."""

    def __init__(self, settings: Settings) -> None:
        self.current = Runtime(settings, generation=1)

    @contextlib.contextmanager
    def acquire(self) -> Iterator[Runtime]:
        """Pin the current runtime for the length of one request."""
        runtime = self.current
        runtime.requests += 1
        try:
            yield runtime
        finally:
            runtime.release()

    def replace(self, settings: Settings) -> Runtime:
        """Make a runtime for `settings` current and retire the previous one."""
        previous = self.current
        self.current = Runtime(settings, generation=previous.generation + 1)
        previous.retire()
        return self.current

    async def close(self) -> None:
        """Retire the current runtime and wait for its sources to close."""
        self.current.retire()
        await self.current.wait_closed()
