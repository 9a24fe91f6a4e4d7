"""One deployment serving a folder, an HTTP origin and an S3 bucket, each under its own route."""

from __future__ import annotations

import asyncio
import uuid
from ipaddress import ip_network
from pathlib import Path

import pytest
from aiobotocore.session import AioSession
from aiohttp import web
from pytest_aiohttp import AiohttpClient, AiohttpServer

from darkroom_gpu.config import SourceSettings
from darkroom_gpu.server import create_app
from darkroom_gpu.sources.filesystem import FilesystemOptions
from darkroom_gpu.sources.http import HttpOptions
from darkroom_gpu.sources.s3 import S3Options
from tests.conftest import SAMPLES, Client, make_settings, open_image

PHOTO = (SAMPLES / "DSCN0010.jpg").read_bytes()
CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


@pytest.fixture
async def origin(aiohttp_server: AiohttpServer) -> str:
    """Serve the sample photo under /images/ on 127.0.0.1 and return the base URL."""

    async def photo(request: web.Request) -> web.Response:
        return web.Response(body=PHOTO, content_type="image/jpeg")

    app = web.Application()
    app.router.add_get("/images/team/photo.jpg", photo)
    server = await aiohttp_server(app)
    return str(server.make_url("/images/"))


@pytest.fixture
async def bucket(moto_endpoint: str) -> str:
    """Create a bucket holding the sample photo under ``press/photo.jpg``."""
    name = f"press-{uuid.uuid4().hex[:12]}"
    async with AioSession().create_client(
        "s3", region_name="us-east-1", endpoint_url=moto_endpoint, **CREDENTIALS
    ) as client:
        await client.create_bucket(Bucket=name)
        await client.put_object(Bucket=name, Key="press/photo.jpg", Body=PHOTO)
    return name


@pytest.fixture
async def three_teams(
    aiohttp_client: AiohttpClient,
    image_root: Path,
    origin: str,
    bucket: str,
    moto_endpoint: str,
) -> Client:
    s3 = S3Options(
        bucket=bucket,
        endpoint_url=moto_endpoint,
        access_key_id="testing",
        secret_access_key="testing",
    )
    sources = (
        SourceSettings("catalogue", "filesystem", "/catalogue", (), FilesystemOptions(image_root)),
        SourceSettings(
            "avatars",
            "http",
            "/avatars",
            (),
            # The origin runs on this machine, which a source may reach only when allowed.
            HttpOptions(base_url=origin, allowed_networks=(ip_network("127.0.0.1/32"),)),
        ),
        SourceSettings("press", "s3", None, ("press.example.com",), s3),
    )
    return await aiohttp_client(create_app(make_settings(*sources)))


async def test_three_kinds_serve_under_routes(three_teams: Client) -> None:
    responses = await asyncio.gather(
        three_teams.get("/catalogue/DSCN0010.jpg?w=64"),
        three_teams.get("/avatars/team/photo.jpg?w=64"),
        three_teams.get("/press/photo.jpg?w=64", headers={"Host": "press.example.com"}),
    )
    for response in responses:
        assert response.status == 200
        assert open_image(await response.read()).size == (64, 48)


async def test_routes_do_not_leak_between_sources(three_teams: Client) -> None:
    assert (await three_teams.get("/avatars/DSCN0010.jpg")).status == 404
    assert (await three_teams.get("/press/photo.jpg")).status == 404


async def test_metrics_count_per_source(three_teams: Client) -> None:
    await three_teams.get("/catalogue/DSCN0010.jpg?w=32")
    await three_teams.get("/avatars/team/photo.jpg?w=32")
    await three_teams.get("/avatars/team/missing.jpg")
    await three_teams.get("/press/photo.jpg?w=32", headers={"Host": "press.example.com"})
    text = await (await three_teams.get("/metrics")).text()

    for source in ("catalogue", "avatars", "press"):
        line = f'darkroom_requests_total{{format="jpeg",source="{source}",status_class="2xx"}} 1.0'
        assert line in text
    assert 'darkroom_requests_total{format="none",source="avatars",status_class="4xx"} 1.0' in text
    assert 'darkroom_request_duration_seconds_count{source="press"} 1.0' in text
