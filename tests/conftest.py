"""Shared fixtures: an image folder, an application over it and a test client factory."""

from __future__ import annotations

import io
import shutil
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import replace
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from hypothesis import settings
from PIL import Image
from pytest_aiohttp import AiohttpClient

from darkroom_gpu.config import Limits, ServerSettings, Settings, SourceSettings
from darkroom_gpu.server import create_app
from darkroom_gpu.sources.filesystem import FilesystemOptions

# `--hypothesis-profile fuzz` gives property tests without their own example count many more
# examples; `python -m benchmarks.fuzz` runs them so.
settings.register_profile("fuzz", max_examples=5000, deadline=None)

SAMPLES = Path(__file__).parent.parent / "darkroom_gpu" / "samples"
DATA = Path(__file__).parent / "data"

Client = TestClient[web.Request, web.Application]
ClientFactory = Callable[..., Awaitable[Client]]


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """Start one moto S3 server on 127.0.0.1 for the session and return its URL."""
    # Imported here so that the CUDA tests also run where moto is not installed (a GPU machine
    # given only the server's packages).
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def image_root(tmp_path: Path) -> Path:
    """Return a folder holding copies of the sample photos."""
    root = tmp_path / "images"
    root.mkdir()
    for photo in SAMPLES.glob("*.jpg"):
        shutil.copy(photo, root / photo.name)
    return root


def source_settings(root: Path, **changes: object) -> SourceSettings:
    """Build a filesystem source over `root` with an empty prefix, changed by `changes`."""
    source = SourceSettings(
        name="test", kind="filesystem", prefix="", hosts=(), options=FilesystemOptions(root)
    )
    return replace(source, **changes)  # type: ignore[arg-type]


def make_settings(*sources: SourceSettings, limits: Limits | None = None) -> Settings:
    """Build settings for the CPU with two workers over `sources`."""
    return Settings(
        server=ServerSettings(workers=2),
        device="cpu",
        limits=limits or Limits(),
        sources=sources,
    )


@pytest.fixture
def make_client(aiohttp_client: AiohttpClient, image_root: Path) -> ClientFactory:
    """Return a factory for test clients; by default one source over `image_root`."""

    async def factory(
        *sources: SourceSettings, source_changes: Mapping[str, object] | None = None
    ) -> Client:
        if not sources:
            sources = (source_settings(image_root, **(source_changes or {})),)
        return await aiohttp_client(create_app(make_settings(*sources)))

    return factory


@pytest.fixture
async def client(make_client: ClientFactory) -> Client:
    """Return a client for one filesystem source over `image_root`."""
    return await make_client()


def open_image(data: bytes) -> Image.Image:
    """Decode response bytes with Pillow, fully loaded."""
    image = Image.open(io.BytesIO(data))
    image.load()
    return image
