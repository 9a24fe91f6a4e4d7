"""Tests for ``server.metrics_port``: /metrics on a port of its own, in-process on 127.0.0.0/8."""

from __future__ import annotations

import socket
from dataclasses import replace
from pathlib import Path
from typing import Final

import aiohttp
import pytest
from aiohttp import web
from PIL import Image
from pytest_aiohttp import AiohttpClient

from darkroom_gpu.config import Settings
from darkroom_gpu.server import create_app
from darkroom_gpu.server.metrics_site import MetricsListenError, listen_url
from darkroom_gpu.server.state import READY
from tests.conftest import Client, make_settings, source_settings

METRICS_CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port on `host` that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe_socket:
        probe_socket.bind((host, 0))
        port: int = probe_socket.getsockname()[1]
    return port


def metrics_settings(image_root: Path, port: int, host: str | None = None) -> Settings:
    settings = make_settings(source_settings(image_root))
    server = replace(settings.server, metrics_port=port, metrics_host=host)
    return replace(settings, server=server)


async def get(url: str, method: str = "GET") -> tuple[int, str, str]:
    """Send one request with a fresh session, and return its status, content type and body."""
    async with aiohttp.ClientSession() as session, session.request(method, url) as response:
        return response.status, response.headers.get("Content-Type", ""), await response.text()


async def test_metrics_served_on_own_port(aiohttp_client: AiohttpClient, image_root: Path) -> None:
    port = free_port()
    client: Client = await aiohttp_client(create_app(metrics_settings(image_root, port)))
    image = await client.get("/jolla.jpg?w=32")

    status, content_type, body = await get(f"http://127.0.0.1:{port}/metrics")

    assert image.status == 200
    assert status == 200
    assert content_type == METRICS_CONTENT_TYPE
    assert 'darkroom_requests_total{format="jpeg",source="test",status_class="2xx"} 1.0' in body


async def test_main_port_answers_metrics_404(
    aiohttp_client: AiohttpClient, image_root: Path
) -> None:
    # A file named like the route must not be served in its place.
    Image.new("RGB", (4, 4)).save(image_root / "metrics", format="PNG")
    client: Client = await aiohttp_client(create_app(metrics_settings(image_root, free_port())))

    for method in ("GET", "HEAD", "POST"):
        response = await client.request(method, "/metrics")
        assert response.status == 404, method
        assert response.headers["Cache-Control"] == "no-store"

    response = await client.get("/metrics")
    body = await response.json()
    assert body["error"]["code"] == "not_found"
    assert body["error"]["message"] == "/metrics is served on the metrics port, not on this one"


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("127.0.0.1", "http://127.0.0.1:3202/metrics"),
        ("localhost", "http://localhost:3202/metrics"),
        ("::1", "http://[::1]:3202/metrics"),
        ("::", "http://[::]:3202/metrics"),
    ],
)
def test_listen_url_brackets_ipv6(host: str, expected: str) -> None:
    assert listen_url(host, 3202, "/metrics") == expected


async def test_metrics_port_serves_nothing_else(
    aiohttp_client: AiohttpClient, image_root: Path
) -> None:
    port = free_port()
    await aiohttp_client(create_app(metrics_settings(image_root, port)))

    for path in ("/jolla.jpg", "/healthz", "/", "/metrics/extra"):
        status, content_type, body = await get(f"http://127.0.0.1:{port}{path}")
        assert status == 404, path
        assert content_type == "application/json", path
        assert "only /metrics is served on the metrics port" in body, path


async def test_metrics_host_binds_given_address(
    aiohttp_client: AiohttpClient, image_root: Path
) -> None:
    port = free_port("127.0.0.2")
    await aiohttp_client(create_app(metrics_settings(image_root, port, host="127.0.0.2")))

    status, _, _ = await get(f"http://127.0.0.2:{port}/metrics")
    with pytest.raises(aiohttp.ClientConnectionError):
        await get(f"http://127.0.0.1:{port}/metrics")

    assert status == 200


async def test_metrics_port_closes_with_app(
    aiohttp_client: AiohttpClient, image_root: Path
) -> None:
    port = free_port()
    client: Client = await aiohttp_client(create_app(metrics_settings(image_root, port)))
    status, _, _ = await get(f"http://127.0.0.1:{port}/metrics")

    await client.close()

    assert status == 200
    with pytest.raises(aiohttp.ClientConnectionError):
        await get(f"http://127.0.0.1:{port}/metrics")


async def test_taken_metrics_port_stops_start(image_root: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        app = create_app(metrics_settings(image_root, port))
        # web.run_app sets up a runner like this before it listens on the main port.
        runner = web.AppRunner(app)
        try:
            with pytest.raises(MetricsListenError) as excinfo:
                await runner.setup()
        finally:
            await runner.cleanup()

    assert excinfo.value.address == f"http://127.0.0.1:{port}/metrics"
    assert str(excinfo.value).startswith(f"cannot listen on http://127.0.0.1:{port}/metrics: ")
    assert not app[READY].is_set()


async def test_metrics_stay_on_main_port_by_default(client: Client) -> None:
    response = await client.get("/metrics")

    assert response.status == 200
    assert response.headers["Content-Type"] == METRICS_CONTENT_TYPE
