"""The micro-batcher: fast path, bounded collection, caps, overload, cancellation and close.

The batches here run a recording stand-in that can be held on a gate, so each test decides
exactly which jobs arrive while a batch runs. Nothing asserts a duration except generous upper
bounds that only catch a batcher waiting for the wrong thing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Final

import pytest
from pytest_aiohttp import AiohttpClient

from darkroom_gpu.config import BatchSettings, ServerSettings
from darkroom_gpu.errors import OverloadedError
from darkroom_gpu.geometry import Size
from darkroom_gpu.manipulators.base import ImageJob, ImageResult, Manipulator
from darkroom_gpu.manipulators.batcher import BatcherClosedError, MicroBatcher
from darkroom_gpu.metrics import Metrics
from darkroom_gpu.options import OutputFormat
from darkroom_gpu.server import create_app
from tests.conftest import make_settings, source_settings

# Far longer than any test runs, so a job that waited for it would hit the test timeout.
FOREVER_MS: Final = 600_000.0
# A generous bound for "at once", which only catches a batcher that waits for max_wait.
PROMPT_SECONDS: Final = 5.0


@dataclass(frozen=True)
class Job:
    name: str
    megapixels: float = 1.0


@dataclass
class Runner:
    """Records each batch and keeps it running until `gate` is set. Jobs named ``bad*`` fail."""

    batches: list[list[str]] = field(default_factory=list)
    gate: asyncio.Event = field(default_factory=asyncio.Event)
    fail_batch: bool = False

    async def __call__(self, jobs: list[Job]) -> list[str | Exception]:
        self.batches.append([job.name for job in jobs])
        await self.gate.wait()
        if self.fail_batch:
            raise RuntimeError("the whole batch failed")
        return [ValueError(job.name) if job.name.startswith("bad") else job.name for job in jobs]


def make_batcher(
    runner: Runner, metrics: Metrics | None = None, **bounds: float
) -> MicroBatcher[Job, str]:
    settings = BatchSettings(
        max_wait_ms=bounds.get("max_wait_ms", FOREVER_MS),
        max_images=int(bounds.get("max_images", 32)),
        max_megapixels=bounds.get("max_megapixels", 200.0),
        max_queue=int(bounds.get("max_queue", 256)),
    )
    return MicroBatcher(
        runner,
        settings=settings,
        metrics=metrics or Metrics(),
        megapixels=lambda job: job.megapixels,
    )


async def until(condition: Callable[[], bool]) -> None:
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("the condition was not reached within 500 polls")


async def start_busy(batcher: MicroBatcher[Job, str], runner: Runner) -> asyncio.Task[str]:
    """Dispatch job ``a`` and wait until its batch is running and held on the gate."""
    first = asyncio.create_task(batcher.submit(Job("a")))
    await until(lambda: batcher.running == 1)
    return first


def queue(batcher: MicroBatcher[Job, str], *jobs: Job) -> list[asyncio.Task[str]]:
    return [asyncio.create_task(batcher.submit(job)) for job in jobs]


async def test_lone_job_skips_wait() -> None:
    runner = Runner()
    runner.gate.set()
    batcher = make_batcher(runner)

    result = await asyncio.wait_for(batcher.submit(Job("a")), PROMPT_SECONDS)

    assert result == "a"
    assert runner.batches == [["a"]]
    await batcher.close()


async def test_idle_takes_all_queued() -> None:
    runner = Runner()
    runner.gate.set()
    batcher = make_batcher(runner)

    results = await asyncio.wait_for(batcher.submit_many([Job("a"), Job("b")]), PROMPT_SECONDS)

    assert results == ["a", "b"]
    assert runner.batches == [["a", "b"]]
    await batcher.close()


async def test_busy_arrivals_grouped() -> None:
    runner = Runner()
    batcher = make_batcher(runner, max_wait_ms=20)
    first = await start_busy(batcher, runner)
    later = queue(batcher, Job("b"), Job("c"), Job("d"))
    await until(lambda: batcher.queue_depth == 3)

    runner.gate.set()
    results = await asyncio.wait_for(asyncio.gather(first, *later), PROMPT_SECONDS)

    assert results == ["a", "b", "c", "d"]
    assert runner.batches == [["a"], ["b", "c", "d"]]
    await batcher.close()


async def test_wait_ends_at_max_wait() -> None:
    runner = Runner()
    batcher = make_batcher(runner, max_wait_ms=20, max_images=8)
    first = await start_busy(batcher, runner)
    (second,) = queue(batcher, Job("b"))
    await until(lambda: batcher.queue_depth == 1)

    runner.gate.set()
    # Seven more jobs would fill the batch, but none arrive, so max_wait closes it.
    results = await asyncio.wait_for(asyncio.gather(first, second), PROMPT_SECONDS)

    assert list(results) == ["a", "b"]
    assert runner.batches == [["a"], ["b"]]
    await batcher.close()


async def test_collect_window_takes_arrivals() -> None:
    runner = Runner()
    batcher = make_batcher(runner, max_images=2)
    first = await start_busy(batcher, runner)
    (second,) = queue(batcher, Job("b"))
    await until(lambda: batcher.queue_depth == 1)
    runner.gate.set()
    await first
    # The device is free, but the next batch waits for a batch-mate, since max_wait is endless.
    # Give the dispatcher time to (wrongly) run ``b`` alone before its batch-mate arrives.
    await asyncio.sleep(0.05)
    assert runner.batches == [["a"]]
    assert batcher.queue_depth == 1

    (third,) = queue(batcher, Job("c"))
    results = await asyncio.wait_for(asyncio.gather(second, third), PROMPT_SECONDS)

    assert list(results) == ["b", "c"]
    assert runner.batches == [["a"], ["b", "c"]]
    await batcher.close()


async def test_max_images_caps_batch() -> None:
    runner = Runner()
    batcher = make_batcher(runner, max_images=2)
    first = await start_busy(batcher, runner)
    later = queue(batcher, Job("b"), Job("c"), Job("d"), Job("e"))
    await until(lambda: batcher.queue_depth == 4)

    runner.gate.set()
    await asyncio.wait_for(asyncio.gather(first, *later), PROMPT_SECONDS)

    assert runner.batches == [["a"], ["b", "c"], ["d", "e"]]
    await batcher.close()


async def test_megapixel_cap_splits_batch() -> None:
    runner = Runner()
    batcher = make_batcher(runner, max_megapixels=10.0, max_wait_ms=20)
    first = await start_busy(batcher, runner)
    later = queue(batcher, Job("b", 6.0), Job("c", 6.0), Job("d", 3.0))
    await until(lambda: batcher.queue_depth == 3)

    runner.gate.set()
    await asyncio.wait_for(asyncio.gather(first, *later), PROMPT_SECONDS)

    assert runner.batches == [["a"], ["b"], ["c", "d"]]
    await batcher.close()


async def test_oversized_image_runs_alone() -> None:
    runner = Runner()
    batcher = make_batcher(runner, max_megapixels=10.0, max_wait_ms=20)
    first = await start_busy(batcher, runner)
    later = queue(batcher, Job("huge", 50.0), Job("b", 1.0))
    await until(lambda: batcher.queue_depth == 2)

    runner.gate.set()
    results = await asyncio.wait_for(asyncio.gather(first, *later), PROMPT_SECONDS)

    assert results == ["a", "huge", "b"]
    assert runner.batches == [["a"], ["huge"], ["b"]]
    await batcher.close()


async def test_full_queue_raises_overloaded() -> None:
    runner = Runner()
    batcher = make_batcher(runner, max_queue=2, max_wait_ms=20)
    first = await start_busy(batcher, runner)
    later = queue(batcher, Job("b"), Job("c"))
    await until(lambda: batcher.queue_depth == 2)

    with pytest.raises(OverloadedError, match="queue is full") as caught:
        await batcher.submit(Job("d"))
    with pytest.raises(OverloadedError, match="queue is full"):
        await batcher.submit_many([Job("e")])

    assert caught.value.status == 503
    assert caught.value.retry_after == 1
    runner.gate.set()
    await asyncio.wait_for(asyncio.gather(first, *later), PROMPT_SECONDS)
    await batcher.close()


async def test_large_group_enters_empty_queue() -> None:
    runner = Runner()
    runner.gate.set()
    batcher = make_batcher(runner, max_queue=1)

    results = await asyncio.wait_for(batcher.submit_many([Job("a"), Job("b")]), PROMPT_SECONDS)

    assert results == ["a", "b"]
    assert runner.batches == [["a", "b"]]
    await batcher.close()


async def test_failed_job_fails_alone() -> None:
    runner = Runner()
    batcher = make_batcher(runner, max_wait_ms=20)
    first = await start_busy(batcher, runner)
    good, bad = queue(batcher, Job("b"), Job("bad"))
    await until(lambda: batcher.queue_depth == 2)

    runner.gate.set()

    assert await first == "a"
    assert await good == "b"
    with pytest.raises(ValueError, match="bad"):
        await bad
    await batcher.close()


async def test_batch_error_spares_next_batch() -> None:
    runner = Runner(fail_batch=True)
    runner.gate.set()
    batcher = make_batcher(runner)

    outcomes = await batcher.submit_many([Job("a"), Job("b")])
    runner.fail_batch = False
    after = await batcher.submit(Job("c"))

    assert [type(outcome) for outcome in outcomes] == [RuntimeError, RuntimeError]
    assert after == "c"
    await batcher.close()


async def test_cancelled_queued_waiter_frees_slot() -> None:
    runner = Runner()
    batcher = make_batcher(runner, max_queue=2, max_wait_ms=20)
    first = await start_busy(batcher, runner)
    cancelled, kept = queue(batcher, Job("b"), Job("c"))
    await until(lambda: batcher.queue_depth == 2)

    cancelled.cancel()
    await until(lambda: batcher.queue_depth == 1)
    (refill,) = queue(batcher, Job("d"))
    await until(lambda: batcher.queue_depth == 2)
    runner.gate.set()
    results = await asyncio.wait_for(asyncio.gather(first, kept, refill), PROMPT_SECONDS)

    assert cancelled.cancelled()
    assert list(results) == ["a", "c", "d"]
    assert runner.batches == [["a"], ["c", "d"]]
    await batcher.close()


async def test_cancelled_running_waiter_spares_batch() -> None:
    runner = Runner()
    batcher = make_batcher(runner)
    cancelled, kept = queue(batcher, Job("a"), Job("b"))
    await until(lambda: batcher.running == 2)

    cancelled.cancel()
    runner.gate.set()
    result = await asyncio.wait_for(kept, PROMPT_SECONDS)
    after = await asyncio.wait_for(batcher.submit(Job("c")), PROMPT_SECONDS)

    assert cancelled.cancelled()
    assert result == "b"
    assert after == "c"
    assert runner.batches == [["a", "b"], ["c"]]
    await batcher.close()


async def test_close_fails_queued_waiters() -> None:
    runner = Runner()
    batcher = make_batcher(runner)
    first = await start_busy(batcher, runner)
    (waiting,) = queue(batcher, Job("b"))
    await until(lambda: batcher.queue_depth == 1)

    closing = asyncio.create_task(batcher.close())
    with pytest.raises(BatcherClosedError, match="shutting down") as caught:
        await waiting
    runner.gate.set()
    await asyncio.wait_for(closing, PROMPT_SECONDS)

    assert caught.value.status == 503
    assert await first == "a"
    assert runner.batches == [["a"]]
    with pytest.raises(BatcherClosedError, match="shutting down"):
        await batcher.submit(Job("c"))


async def test_close_when_never_used() -> None:
    batcher = make_batcher(Runner())
    await batcher.close()
    with pytest.raises(BatcherClosedError):
        await batcher.submit(Job("a"))


async def test_metrics_recorded() -> None:
    metrics = Metrics()
    runner = Runner()
    batcher = make_batcher(runner, metrics, max_wait_ms=20)
    first = await start_busy(batcher, runner)
    later = queue(batcher, Job("b"), Job("c"))
    await until(lambda: batcher.queue_depth == 2)
    depth_while_busy = metrics.registry.get_sample_value("darkroom_queue_depth")

    runner.gate.set()
    await asyncio.wait_for(asyncio.gather(first, *later), PROMPT_SECONDS)
    sample = metrics.registry.get_sample_value

    assert depth_while_busy == 2
    assert sample("darkroom_queue_depth") == 0
    assert sample("darkroom_batch_size_count") == 2
    assert sample("darkroom_batch_size_sum") == 3
    assert sample("darkroom_queue_wait_seconds_count") == 3
    await batcher.close()


class GatedManipulator(Manipulator):
    """Returns a fixed result for every job, one batch at a time, once `gate` is set."""

    device = "cpu"

    def __init__(self, settings: BatchSettings) -> None:
        self.gate = asyncio.Event()
        self.batcher: MicroBatcher[ImageJob, ImageResult] = MicroBatcher(
            self._run, settings=settings, metrics=Metrics(), megapixels=lambda job: 1.0
        )

    async def process(self, job: ImageJob) -> ImageResult:
        return await self.batcher.submit(job)

    async def close(self) -> None:
        self.gate.set()
        await self.batcher.close()

    async def _run(self, jobs: list[ImageJob]) -> list[ImageResult | Exception]:
        await self.gate.wait()
        result = ImageResult(b"done", OutputFormat.PNG, Size(width=1, height=1))
        return [result for _ in jobs]


async def test_full_queue_answers_503(aiohttp_client: AiohttpClient, image_root: Path) -> None:
    manipulator = GatedManipulator(BatchSettings(max_queue=1))
    # More processing slots than requests, so that the micro-batcher's queue, not the server's
    # admission limit, is what rejects the third request.
    settings = replace(
        make_settings(source_settings(image_root)),
        server=ServerSettings(workers=2, max_concurrency=8),
    )
    app = create_app(settings, manipulator=manipulator)
    client = await aiohttp_client(app)
    first = asyncio.create_task(client.get("/jolla.jpg?w=10"))
    await until(lambda: manipulator.batcher.running == 1)
    second = asyncio.create_task(client.get("/jolla.jpg?w=20"))
    await until(lambda: manipulator.batcher.queue_depth == 1)

    rejected = await client.get("/jolla.jpg?w=30")
    body = await rejected.json()
    manipulator.gate.set()
    served = await asyncio.wait_for(asyncio.gather(first, second), PROMPT_SECONDS)

    assert rejected.status == 503
    assert rejected.headers["Retry-After"] == "1"
    assert rejected.headers["Cache-Control"] == "no-store"
    assert body["error"]["code"] == "overloaded"
    assert [response.status for response in served] == [200, 200]
