"""Build the aiohttp application from validated settings."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Mapping
from functools import partial
from pathlib import Path
from typing import Any

from aiohttp import web

from darkroom_gpu.cache import CachedResult, ResultCache
from darkroom_gpu.coalescing import Coalescer
from darkroom_gpu.config import Settings
from darkroom_gpu.manipulators import Manipulator, create_manipulator
from darkroom_gpu.metrics import Metrics
from darkroom_gpu.server.image import handle_image
from darkroom_gpu.server.limiter import create_limiter
from darkroom_gpu.server.meta import META_PREFIX, handle_meta
from darkroom_gpu.server.metrics_site import metrics_site_context
from darkroom_gpu.server.middleware import ProtocolErrorFilter, request_middleware
from darkroom_gpu.server.reload import ConfigReloader, reload_context
from darkroom_gpu.server.routes import (
    handle_healthz,
    handle_metrics,
    handle_metrics_moved,
    handle_ping,
    handle_readyz,
    handle_reserved,
)
from darkroom_gpu.server.runtime import RuntimeHolder
from darkroom_gpu.server.state import (
    CACHE,
    LIMITER,
    MANIPULATOR,
    METRICS,
    READY,
    RUNTIME,
    SHARED_STORE,
    TRANSFORMS,
)
from darkroom_gpu.shared_store import SharedResultStore

__all__ = ("create_app",)

logger = logging.getLogger(__name__)


def create_app(
    settings: Settings,
    manipulator: Manipulator | None = None,
    *,
    reloader: tuple[Path | None, Mapping[str, Any]] | None = None,
) -> web.Application:
    """Create the application.

    With ``server.metrics_port`` set, the application also serves ``/metrics`` on that port
    while it runs, and answers ``/metrics`` on its own port with 404.

    Args:
        settings: the validated configuration.
        manipulator: the manipulator to use; by default one for ``settings.device``.
        reloader: the configuration file and command-line overrides to reload on SIGHUP (and
            on file changes when ``server.watch_config`` is on); ``None`` disables reloading.

    Raises:
        UnsupportedDeviceError: the configured device cannot be used.
    """
    _install_log_filter()
    app = web.Application(middlewares=[request_middleware])
    app[RUNTIME] = RuntimeHolder(settings)
    app[METRICS] = Metrics()
    app[MANIPULATOR] = manipulator or create_manipulator(
        settings.device,
        workers=settings.server.workers,
        batching=settings.batching,
        metrics=app[METRICS],
    )
    app[LIMITER] = create_limiter(
        settings, app[MANIPULATOR].device, on_reject=app[METRICS].overload_rejections.inc
    )
    app[READY] = asyncio.Event()
    app[CACHE] = ResultCache(settings.cache.max_bytes)
    app[TRANSFORMS] = Coalescer[CachedResult]()
    shared = settings.cache.shared
    app[SHARED_STORE] = SharedResultStore(shared) if shared is not None else None
    server = settings.server
    if server.metrics_port is not None:
        # First, so that a metrics port that is taken stops the start before the warm-up, and
        # so that scrapes keep working until everything else has stopped.
        app.cleanup_ctx.append(
            partial(
                metrics_site_context,
                host=server.metrics_host or server.host,
                port=server.metrics_port,
            )
        )
    app.cleanup_ctx.append(_lifecycle)
    app.on_shutdown.append(_log_shutdown)
    if reloader is not None:
        path, overrides = reloader
        config_reloader = ConfigReloader(app[RUNTIME], path, overrides)
        app.cleanup_ctx.append(
            partial(reload_context, reloader=config_reloader, watch=settings.server.watch_config)
        )

    _add_routes(app, metrics_moved=server.metrics_port is not None)
    return app


def _add_routes(app: web.Application, *, metrics_moved: bool) -> None:
    # The server's own routes are registered first so that they win over any source.
    app.router.add_get("/ping", handle_ping)
    app.router.add_get("/healthz", handle_healthz)
    app.router.add_get("/readyz", handle_readyz)
    if metrics_moved:
        app.router.add_route("*", "/metrics", handle_metrics_moved)
    else:
        app.router.add_get("/metrics", handle_metrics)
    app.router.add_get(META_PREFIX + "/{path:.*}", handle_meta)
    app.router.add_route("*", "/_{path:.*}", handle_reserved)
    app.router.add_get("/{path:.*}", handle_image)


def _install_log_filter() -> None:
    server_logger = logging.getLogger("aiohttp.server")
    if not any(isinstance(existing, ProtocolErrorFilter) for existing in server_logger.filters):
        server_logger.addFilter(ProtocolErrorFilter())


async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    warm_up = asyncio.create_task(_warm_up(app))
    yield
    warm_up.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await warm_up
    await app[MANIPULATOR].close()
    await app[RUNTIME].close()
    store = app[SHARED_STORE]
    if store is not None:
        await store.close()


async def _log_shutdown(app: web.Application) -> None:
    # aiohttp calls this once the listening sockets are closed, before it waits for requests
    # in flight (up to server.shutdown_timeout, see cli.py).
    admitted = app[LIMITER].admitted
    logger.info(
        "shutting down: no new connections; %d image %s in flight",
        admitted,
        "request" if admitted == 1 else "requests",
    )


async def _warm_up(app: web.Application) -> None:
    manipulator = app[MANIPULATOR]
    try:
        await manipulator.warm_up()
    except Exception:
        # /readyz keeps returning 503, so an orchestrator never routes traffic here.
        logger.exception("warm-up of the %s manipulator failed; not ready", manipulator.device)
        return
    app[READY].set()
    logger.info("ready: %s manipulator warmed up", manipulator.device)
