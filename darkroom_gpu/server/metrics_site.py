"""The listener of its own for ``/metrics``, when ``server.metrics_port`` is set.

It serves a second, small application on its own aiohttp runner, which shares the main
application's metrics. A cleanup context of the main application starts it before the main port
listens, so it follows the server's lifecycle whichever way the server is run. The same context
stops it after the requests in flight on the main port have finished, so Prometheus can scrape
a server that is draining.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Final

from aiohttp import web

from darkroom_gpu.errors import NotFoundError
from darkroom_gpu.metrics import Metrics
from darkroom_gpu.server.middleware import request_middleware
from darkroom_gpu.server.routes import handle_metrics
from darkroom_gpu.server.state import METRICS

__all__ = ("MetricsListenError", "create_metrics_app", "listen_url", "metrics_site_context")

logger = logging.getLogger(__name__)

# Seconds a scrape in progress gets to finish when the server stops. Rendering takes
# milliseconds, so this only bounds a slow client.
_SHUTDOWN_TIMEOUT: Final = 5.0


class MetricsListenError(Exception):
    """The metrics port cannot be listened on, for example because it is taken.

    Args:
        address: the URL that was to be served.
        reason: the operating system's reason.
    """

    def __init__(self, address: str, reason: str) -> None:
        super().__init__(f"cannot listen on {address}: {reason}")
        self.address = address
        self.reason = reason


def listen_url(host: str, port: int, path: str = "") -> str:
    """Return the ``http://`` URL of `host`:`port`, with an IPv6 address in brackets (RFC 3986)."""
    # Host names never contain ':', so any host with one is an IPv6 address.
    authority = f"[{host}]" if ":" in host else host
    return f"http://{authority}:{port}{path}"


def create_metrics_app(metrics: Metrics) -> web.Application:
    """Create the application of the metrics port: ``/metrics`` only, other paths 404.

    Requests get the same request ids, JSON errors and access lines as on the main port.
    """
    app = web.Application(middlewares=[request_middleware])
    app[METRICS] = metrics
    app.router.add_get("/metrics", handle_metrics)
    app.router.add_route("*", "/{path:.*}", _handle_other_path)
    return app


async def _handle_other_path(request: web.Request) -> web.Response:
    raise NotFoundError("only /metrics is served on the metrics port")


async def metrics_site_context(
    app: web.Application, *, host: str, port: int
) -> AsyncIterator[None]:
    """Serve the metrics of `app` on `host`:`port` while `app` runs; for ``cleanup_ctx``.

    Raises:
        MetricsListenError: the address cannot be listened on. The main application then does
            not start.
    """
    runner = web.AppRunner(
        create_metrics_app(app[METRICS]), access_log=None, shutdown_timeout=_SHUTDOWN_TIMEOUT
    )
    await runner.setup()
    address = listen_url(host, port, "/metrics")
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError as exc:
        await runner.cleanup()
        raise MetricsListenError(address, exc.strerror or str(exc)) from exc
    logger.info("serving metrics on %s", address)

    try:
        yield
    finally:
        await runner.cleanup()
        logger.info("stopped serving metrics on %s", address)
