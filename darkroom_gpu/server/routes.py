"""The server's own routes: liveness, readiness and metrics."""

from __future__ import annotations

from aiohttp import web

from darkroom_gpu.errors import NotFoundError
from darkroom_gpu.metrics import CONTENT_TYPE
from darkroom_gpu.server.middleware import json_dumps
from darkroom_gpu.server.state import MANIPULATOR, METRICS, READY

__all__ = (
    "handle_healthz",
    "handle_metrics",
    "handle_metrics_moved",
    "handle_ping",
    "handle_readyz",
    "handle_reserved",
)


async def handle_ping(request: web.Request) -> web.Response:
    """Return ``pong``, as Darkroom does, for load balancers that expect it."""
    return web.Response(text="pong", headers={"Cache-Control": "no-store"})


async def handle_healthz(request: web.Request) -> web.Response:
    """Report whether the process is alive and its device usable; fast under any load.

    A GPU whose CUDA context broke cannot be used again by this process. The images then run
    on the CPU, and the 503 makes an orchestrator's liveness probe restart the process.
    """
    manipulator = request.app[MANIPULATOR]
    if manipulator.failure is not None:
        return _device_failed(manipulator.device, manipulator.failure)
    return web.json_response(
        {"status": "ok"}, headers={"Cache-Control": "no-store"}, dumps=json_dumps
    )


async def handle_readyz(request: web.Request) -> web.Response:
    """Report ready with the device once the manipulator's warm-up pass has finished.

    After the device has failed, the process returns 503 here too, so that traffic moves to
    other replicas while it serves on the CPU until its restart.
    """
    manipulator = request.app[MANIPULATOR]
    device = manipulator.device
    if manipulator.failure is not None:
        return _device_failed(device, manipulator.failure)
    if not request.app[READY].is_set():
        return web.json_response(
            {"status": "warming_up", "device": device},
            status=503,
            headers={"Cache-Control": "no-store"},
            dumps=json_dumps,
        )
    return web.json_response(
        {"status": "ready", "device": device},
        headers={"Cache-Control": "no-store"},
        dumps=json_dumps,
    )


def _device_failed(device: str, error: str) -> web.Response:
    return web.json_response(
        {"status": "device_failed", "device": device, "error": error},
        status=503,
        headers={"Cache-Control": "no-store"},
        dumps=json_dumps,
    )


async def handle_metrics(request: web.Request) -> web.Response:
    """Expose the Prometheus metrics in the text format."""
    body = request.app[METRICS].render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


async def handle_metrics_moved(request: web.Request) -> web.Response:
    """Raise 404 for ``/metrics`` on the main port when ``server.metrics_port`` moved it.

    The route takes every method, so that any request gets the same 404 and the path never
    reaches a source, which could serve a file named ``metrics``. The message does not give the
    metrics port's number, which clients have no need of.
    """
    raise NotFoundError("/metrics is served on the metrics port, not on this one")


async def handle_reserved(request: web.Request) -> web.Response:
    """Raise 404 for the reserved ``/_`` paths that no route of the server uses."""
    raise NotFoundError("paths starting with /_ are reserved for the server's own routes")
