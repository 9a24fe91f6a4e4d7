"""Typed keys for the state an application shares between its handlers."""

from __future__ import annotations

import asyncio
from typing import Final

from aiohttp import web

from darkroom_gpu.config import Settings
from darkroom_gpu.manipulators import Manipulator
from darkroom_gpu.metrics import Metrics
from darkroom_gpu.server.router import SourceRouter

__all__ = ("MANIPULATOR", "METRICS", "READY", "ROUTER", "SETTINGS")

SETTINGS: Final = web.AppKey("settings", Settings)
ROUTER: Final = web.AppKey("router", SourceRouter)
MANIPULATOR: Final = web.AppKey("manipulator", Manipulator)
METRICS: Final = web.AppKey("metrics", Metrics)
READY: Final = web.AppKey("ready", asyncio.Event)
