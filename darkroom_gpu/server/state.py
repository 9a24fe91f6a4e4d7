"""Typed keys for the state an application shares between its handlers."""

from __future__ import annotations

import asyncio
from typing import Final

from aiohttp import web

from darkroom_gpu.cache import CachedResult, ResultCache
from darkroom_gpu.coalescing import Coalescer
from darkroom_gpu.manipulators import Manipulator
from darkroom_gpu.metrics import Metrics
from darkroom_gpu.server.limiter import ConcurrencyLimiter
from darkroom_gpu.server.runtime import RuntimeHolder
from darkroom_gpu.shared_store import SharedResultStore

__all__ = (
    "CACHE",
    "LIMITER",
    "MANIPULATOR",
    "METRICS",
    "READY",
    "RUNTIME",
    "SHARED_STORE",
    "TRANSFORMS",
)

RUNTIME: Final = web.AppKey("runtime", RuntimeHolder)
MANIPULATOR: Final = web.AppKey("manipulator", Manipulator)
METRICS: Final = web.AppKey("metrics", Metrics)
READY: Final = web.AppKey("ready", asyncio.Event)
CACHE: Final = web.AppKey("cache", ResultCache)
TRANSFORMS: Final = web.AppKey("transforms", Coalescer[CachedResult])
SHARED_STORE: Final = web.AppKey[SharedResultStore | None]("shared_store")
LIMITER: Final = web.AppKey("limiter", ConcurrencyLimiter)
