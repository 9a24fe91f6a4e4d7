"""The shared result store, against a real S3-protocol server (moto) on 127.0.0.1."""

from __future__ import annotations

import socket
from dataclasses import replace
from pathlib import Path

import pytest
from aiobotocore.session import AioSession
from pytest_aiohttp import AiohttpClient

from darkroom_gpu.cache import CachedResult
from darkroom_gpu.config import CacheSettings, SharedStoreSettings
from darkroom_gpu.server import create_app
from darkroom_gpu.server.state import SHARED_STORE
from darkroom_gpu.shared_store import SharedResultStore
from tests.conftest import make_settings, source_settings
from tests.test_cache import CountingManipulator

BUCKET = "results"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
async def store_settings(moto_endpoint: str) -> SharedStoreSettings:
    """Create the bucket and return settings for a store with a per-test prefix."""
    settings = SharedStoreSettings(
        bucket=BUCKET,
        endpoint_url=moto_endpoint,
        access_key_id="testing",
        secret_access_key="testing",
        prefix=f"test-{free_port()}/",
    )
    async with AioSession().create_client(
        "s3",
        region_name=settings.region,
        endpoint_url=moto_endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    ) as client:
        try:
            await client.create_bucket(Bucket=BUCKET)
        except client.exceptions.BucketAlreadyOwnedByYou:
            pass
    return settings


async def test_store_round_trip(store_settings: SharedStoreSettings) -> None:
    store = SharedResultStore(store_settings)
    try:
        await store.put("abc", CachedResult(body=b"\xff\xd8 image", content_type="image/jpeg"))
        result = await store.get("abc")
    finally:
        await store.close()
    assert result is not None
    assert result.body == b"\xff\xd8 image"
    assert result.content_type == "image/jpeg"


async def test_store_missing_key_is_none(store_settings: SharedStoreSettings) -> None:
    store = SharedResultStore(store_settings)
    try:
        assert await store.get("never-written") is None
    finally:
        await store.close()


async def test_unreachable_store_is_a_miss() -> None:
    store = SharedResultStore(
        SharedStoreSettings(
            bucket=BUCKET,
            endpoint_url=f"http://127.0.0.1:{free_port()}",
            access_key_id="testing",
            secret_access_key="testing",
        )
    )
    try:
        assert await store.get("abc") is None
        await store.put("abc", CachedResult(body=b"x", content_type="image/png"))
    finally:
        await store.close()


async def test_replicas_share_results(
    aiohttp_client: AiohttpClient, image_root: Path, store_settings: SharedStoreSettings
) -> None:
    settings = replace(
        make_settings(source_settings(image_root)),
        cache=CacheSettings(max_bytes=64 * 1024 * 1024, shared=store_settings),
    )
    first_manipulator = CountingManipulator()
    second_manipulator = CountingManipulator()
    first = await aiohttp_client(create_app(settings, first_manipulator))
    second = await aiohttp_client(create_app(settings, second_manipulator))

    made = await first.get("/DSCN0010.jpg?w=64")
    store = first.app[SHARED_STORE]
    assert store is not None
    await store.flush()
    reused = await second.get("/DSCN0010.jpg?w=64")

    assert made.status == 200
    assert reused.status == 200
    assert await reused.read() == await made.read()
    assert first_manipulator.jobs == 1
    assert second_manipulator.jobs == 0
