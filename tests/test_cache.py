"""The result cache, transform coalescing and what the server does with them."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from PIL import Image
from pytest_aiohttp import AiohttpClient

from darkroom_gpu.cache import CachedResult, ResultCache, result_key
from darkroom_gpu.coalescing import Coalescer
from darkroom_gpu.manipulators import CpuManipulator, ImageJob, ImageResult
from darkroom_gpu.server import create_app
from tests.conftest import Client, make_settings, source_settings


class CountingManipulator(CpuManipulator):
    """The CPU manipulator, counting jobs and optionally holding them until released."""

    def __init__(self) -> None:
        super().__init__(workers=2)
        self.jobs = 0
        self.release = asyncio.Event()
        self.release.set()

    async def warm_up(self) -> None:
        # The warm-up pass would count as a job; the CPU manipulator needs none to work.
        return None

    async def process(self, job: ImageJob) -> ImageResult:
        self.jobs += 1
        await self.release.wait()
        return await super().process(job)


@pytest.fixture
def manipulator() -> CountingManipulator:
    return CountingManipulator()


@pytest.fixture
async def counted_client(
    aiohttp_client: AiohttpClient, image_root: Path, manipulator: CountingManipulator
) -> Client:
    app = create_app(make_settings(source_settings(image_root)), manipulator)
    return await aiohttp_client(app)


def entry(size: int) -> CachedResult:
    return CachedResult(body=b"x" * size, content_type="image/jpeg")


def test_cache_returns_stored_result() -> None:
    cache = ResultCache(max_bytes=1000)
    cache.put("a", entry(10))
    assert cache.get("a") == entry(10)
    assert cache.get("b") is None


def test_cache_evicts_least_recently_used() -> None:
    cache = ResultCache(max_bytes=800)
    cache.put("a", entry(100))
    cache.put("b", entry(100))
    cache.get("a")
    for name in "cdefghi":
        cache.put(name, entry(100))
    assert cache.get("a") is not None
    assert cache.get("b") is None
    assert cache.size <= 800


def test_cache_skips_oversized_result() -> None:
    cache = ResultCache(max_bytes=800)
    cache.put("big", entry(101))
    assert cache.get("big") is None
    assert cache.size == 0


def test_cache_replacing_key_keeps_size() -> None:
    cache = ResultCache(max_bytes=800)
    cache.put("a", entry(50))
    cache.put("a", entry(70))
    assert cache.size == 70
    assert len(cache) == 1


def test_cache_disabled_with_zero_bytes() -> None:
    cache = ResultCache(max_bytes=0)
    cache.put("a", entry(1))
    assert cache.get("a") is None


def test_result_key_depends_on_every_part() -> None:
    keys = {
        result_key("file:a:1", "w=10", ""),
        result_key("file:a:2", "w=10", ""),
        result_key("file:a:1", "w=11", ""),
        result_key("file:a:1", "w=10", "webp"),
    }
    assert len(keys) == 4


async def test_coalescer_runs_once_per_key() -> None:
    coalescer: Coalescer[int] = Coalescer()
    calls = 0
    gate = asyncio.Event()

    async def work() -> int:
        nonlocal calls
        calls += 1
        await gate.wait()
        return 7

    waiters = [asyncio.ensure_future(coalescer.run("k", work)) for _ in range(5)]
    await asyncio.sleep(0)
    gate.set()
    outcomes = await asyncio.gather(*waiters)
    assert calls == 1
    assert [value for value, _ in outcomes] == [7] * 5
    assert [shared for _, shared in outcomes].count(False) == 1
    assert coalescer.in_flight == 0


async def test_coalescer_shares_errors() -> None:
    coalescer: Coalescer[int] = Coalescer()

    async def fail() -> int:
        await asyncio.sleep(0.01)
        raise ValueError("broken source")

    results = await asyncio.gather(
        coalescer.run("k", fail), coalescer.run("k", fail), return_exceptions=True
    )
    assert all(isinstance(result, ValueError) for result in results)


async def test_coalescer_survives_cancelled_waiter() -> None:
    coalescer: Coalescer[int] = Coalescer()
    gate = asyncio.Event()

    async def work() -> int:
        await gate.wait()
        return 3

    first = asyncio.ensure_future(coalescer.run("k", work))
    second = asyncio.ensure_future(coalescer.run("k", work))
    await asyncio.sleep(0)
    first.cancel()
    gate.set()
    assert await second == (3, True)


async def test_repeat_request_is_cache_hit(
    counted_client: TestClient[web.Request, web.Application], manipulator: CountingManipulator
) -> None:
    first = await counted_client.get("/DSCN0010.jpg?w=90")
    second = await counted_client.get("/DSCN0010.jpg?w=90")
    metrics = await (await counted_client.get("/metrics")).text()
    assert await first.read() == await second.read()
    assert manipulator.jobs == 1
    assert 'darkroom_cache_requests_total{result="hit"} 1.0' in metrics


async def test_equivalent_urls_share_entry(
    counted_client: Client, manipulator: CountingManipulator
) -> None:
    await counted_client.get("/DSCN0010.jpg?w=90&fm=jpg&v=1")
    await counted_client.get("/DSCN0010.jpg?format=jpeg&w=90&v=2")
    assert manipulator.jobs == 1


async def test_concurrent_identical_requests_coalesce(
    counted_client: Client, manipulator: CountingManipulator
) -> None:
    manipulator.release.clear()
    requests = [asyncio.ensure_future(counted_client.get("/DSCN0010.jpg?w=77")) for _ in range(6)]
    for _ in range(200):
        if manipulator.jobs:
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)
    manipulator.release.set()
    responses = await asyncio.gather(*requests)
    assert [response.status for response in responses] == [200] * 6
    assert manipulator.jobs == 1


async def test_changed_file_is_processed_again(
    counted_client: Client, manipulator: CountingManipulator, image_root: Path
) -> None:
    await counted_client.get("/DSCN0010.jpg?w=90")
    photo = image_root / "DSCN0010.jpg"
    Image.open(photo).transpose(Image.Transpose.FLIP_TOP_BOTTOM).save(photo)
    response = await counted_client.get("/DSCN0010.jpg?w=90")
    assert response.status == 200
    assert manipulator.jobs == 2


async def test_failure_is_not_cached(
    counted_client: Client, manipulator: CountingManipulator, image_root: Path
) -> None:
    (image_root / "later.jpg").write_bytes(b"not yet an image")
    failed = await counted_client.get("/later.jpg?w=50")
    (image_root / "later.jpg").write_bytes((image_root / "DSCN0010.jpg").read_bytes())
    served = await counted_client.get("/later.jpg?w=50")
    assert failed.status == 415
    assert failed.headers["Cache-Control"] == "no-store"
    assert served.status == 200


async def test_cache_off_processes_every_time(
    aiohttp_client: AiohttpClient, image_root: Path, manipulator: CountingManipulator
) -> None:
    from dataclasses import replace

    from darkroom_gpu.config import CacheSettings

    settings = replace(make_settings(source_settings(image_root)), cache=CacheSettings(max_bytes=0))
    client = await aiohttp_client(create_app(settings, manipulator))
    await client.get("/DSCN0010.jpg?w=90")
    await client.get("/DSCN0010.jpg?w=90")
    assert manipulator.jobs == 2


async def test_coalescer_cancels_call_without_waiters() -> None:
    coalescer: Coalescer[int] = Coalescer()
    started = asyncio.Event()
    finished = False

    async def work() -> int:
        nonlocal finished
        started.set()
        await asyncio.sleep(10)
        finished = True
        return 1

    first = asyncio.ensure_future(coalescer.run("k", work))
    second = asyncio.ensure_future(coalescer.run("k", work))
    await started.wait()
    first.cancel()
    second.cancel()
    await asyncio.gather(first, second, return_exceptions=True)
    await asyncio.sleep(0)
    assert coalescer.in_flight == 0
    assert not finished
