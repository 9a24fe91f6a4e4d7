"""Overload: the admission limiter, 503 with Retry-After, fast probes, and draining on SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import replace
from pathlib import Path
from typing import Final

import aiohttp
import pytest
from aiohttp import web
from pytest_aiohttp import AiohttpClient, AiohttpServer

from darkroom_gpu.config import ServerSettings
from darkroom_gpu.errors import OverloadedError
from darkroom_gpu.server import create_app
from darkroom_gpu.server.limiter import RETRY_AFTER_SECONDS, ConcurrencyLimiter, create_limiter
from darkroom_gpu.server.state import LIMITER
from tests.conftest import SAMPLES, Client, make_settings, source_settings
from tests.stubs import GatedManipulator
from tests.test_cli import RunningServer, clean_environment, free_port, wait_until_ready

PHOTO = (SAMPLES / "DSCN0010.jpg").read_bytes()
# Generous bound for responses that must not wait for any image work, on a loaded machine.
FAST_SECONDS: Final = 1.0
WAIT_SECONDS: Final = 10.0
DRAIN_SECONDS: Final = 20.0


# --- the limiter on its own ----------------------------------------------------------------


async def test_limiter_admits_up_to_capacity() -> None:
    limiter = ConcurrencyLimiter(max_concurrency=2, max_queue=1)

    with limiter.admit(), limiter.admit(), limiter.admit():
        assert limiter.admitted == 3
        with pytest.raises(OverloadedError) as excinfo, limiter.admit():
            pass

    assert excinfo.value.retry_after == RETRY_AFTER_SECONDS
    assert excinfo.value.status == 503
    assert limiter.admitted == 0
    assert limiter.rejected == 1


async def test_limiter_frees_admission_on_error() -> None:
    limiter = ConcurrencyLimiter(max_concurrency=1, max_queue=0)

    with pytest.raises(RuntimeError), limiter.admit():
        raise RuntimeError("handler failed")

    with limiter.admit():
        assert limiter.admitted == 1


async def test_limiter_bounds_processing() -> None:
    limiter = ConcurrencyLimiter(max_concurrency=2, max_queue=10)
    running = 0
    max_running = 0

    async def work() -> None:
        nonlocal running, max_running
        with limiter.admit():
            async with limiter.processing():
                running += 1
                max_running = max(max_running, running)
                await asyncio.sleep(0.01)
                running -= 1

    await asyncio.gather(*(work() for _ in range(8)))

    assert max_running == 2
    assert limiter.admitted == 0


async def test_limiter_counts_rejections() -> None:
    rejections: list[int] = []
    limiter = ConcurrencyLimiter(1, 0, on_reject=lambda: rejections.append(1))

    with limiter.admit():
        for _ in range(3):
            with pytest.raises(OverloadedError), limiter.admit():
                pass

    assert len(rejections) == 3


@pytest.mark.parametrize(
    ("max_concurrency", "expected"),
    [(1, "1 image request admitted"), (2, "2 image requests admitted")],
)
async def test_limiter_warning_counts_requests(
    caplog: pytest.LogCaptureFixture, max_concurrency: int, expected: str
) -> None:
    limiter = ConcurrencyLimiter(max_concurrency, 0)

    with contextlib.ExitStack() as admissions, caplog.at_level(logging.WARNING):
        for _ in range(max_concurrency):
            admissions.enter_context(limiter.admit())
        with pytest.raises(OverloadedError), limiter.admit():
            pass

    assert f"overloaded: {expected} (max_concurrency" in caplog.text


@pytest.mark.parametrize(
    ("device", "max_concurrency", "expected"),
    [
        ("cpu", None, 3),
        ("cpu", 7, 7),
        ("cuda:0", None, 64),
        ("cuda:0", 7, 7),
    ],
)
def test_limiter_concurrency_default(
    image_root: Path, device: str, max_concurrency: int | None, expected: int
) -> None:
    settings = replace(
        make_settings(source_settings(image_root)),
        server=ServerSettings(workers=3, max_concurrency=max_concurrency),
    )

    limiter = create_limiter(settings, device)

    assert limiter.max_concurrency == expected
    assert limiter.max_queue == 192


def test_limiter_rejects_bad_bounds() -> None:
    with pytest.raises(ValueError, match=r"max_concurrency: expected at least 1, got 0"):
        ConcurrencyLimiter(0, 1)
    with pytest.raises(ValueError, match=r"max_queue: expected at least 0, got -1"):
        ConcurrencyLimiter(1, -1)


# --- through the server --------------------------------------------------------------------


async def saturated_client(
    aiohttp_client: AiohttpClient, image_root: Path, manipulator: GatedManipulator
) -> Client:
    """A server with one processing slot and one queue place, both about to be taken."""
    settings = replace(
        make_settings(source_settings(image_root)),
        server=ServerSettings(workers=1, max_concurrency=1, max_queue=1),
    )
    return await aiohttp_client(create_app(settings, manipulator=manipulator))


async def wait_for_admitted(client: Client, count: int) -> None:
    limiter = client.app[LIMITER]
    async with asyncio.timeout(WAIT_SECONDS):
        # The limiter offers no event to wait on, and a test may poll a counter.
        while limiter.admitted < count:  # noqa: ASYNC110
            await asyncio.sleep(0.01)


async def test_overload_is_503_with_retry_after(
    aiohttp_client: AiohttpClient, image_root: Path
) -> None:
    manipulator = GatedManipulator()
    client = await saturated_client(aiohttp_client, image_root, manipulator)
    blocked = [asyncio.create_task(client.get(f"/DSCN0010.jpg?w={width}")) for width in (10, 11)]
    await wait_for_admitted(client, 2)

    started = time.monotonic()
    rejected = await client.get("/DSCN0010.jpg?w=12")
    elapsed = time.monotonic() - started
    body = await rejected.json()
    manipulator.gate.set()
    statuses = [(await response).status for response in blocked]

    assert rejected.status == 503
    assert rejected.headers["Retry-After"] == str(RETRY_AFTER_SECONDS)
    assert rejected.headers["Cache-Control"] == "no-store"
    assert body["error"]["code"] == "overloaded"
    assert elapsed < FAST_SECONDS
    assert statuses == [200, 200]
    assert manipulator.started == 2


async def test_overload_does_not_process(aiohttp_client: AiohttpClient, image_root: Path) -> None:
    manipulator = GatedManipulator()
    client = await saturated_client(aiohttp_client, image_root, manipulator)
    blocked = [asyncio.create_task(client.get(f"/DSCN0010.jpg?w={width}")) for width in (10, 11)]
    await wait_for_admitted(client, 2)

    rejected = [await client.get(f"/DSCN0010.jpg?w={20 + index}") for index in range(5)]
    manipulator.gate.set()
    await asyncio.gather(*blocked)
    metrics = await (await client.get("/metrics")).text()

    assert [response.status for response in rejected] == [503] * 5
    assert manipulator.started == 2
    assert "darkroom_overload_rejections_total 5.0" in metrics


@pytest.mark.parametrize("path", ["/healthz", "/ping", "/readyz", "/metrics"])
async def test_probes_bypass_limiter(
    aiohttp_client: AiohttpClient, image_root: Path, path: str
) -> None:
    manipulator = GatedManipulator()
    client = await saturated_client(aiohttp_client, image_root, manipulator)
    blocked = [asyncio.create_task(client.get(f"/DSCN0010.jpg?w={width}")) for width in (10, 11)]
    await wait_for_admitted(client, 2)

    started = time.monotonic()
    response = await client.get(path)
    elapsed = time.monotonic() - started
    manipulator.gate.set()
    await asyncio.gather(*blocked)

    assert response.status == 200
    assert elapsed < FAST_SECONDS


async def test_queue_waits_for_slot(aiohttp_client: AiohttpClient, image_root: Path) -> None:
    # With one slot, the queued request starts processing only after the first one finished.
    manipulator = GatedManipulator()
    client = await saturated_client(aiohttp_client, image_root, manipulator)
    blocked = [asyncio.create_task(client.get(f"/DSCN0010.jpg?w={width}")) for width in (10, 11)]
    await wait_for_admitted(client, 2)
    await asyncio.sleep(0.05)

    started_while_full = manipulator.started
    manipulator.gate.set()
    await asyncio.gather(*blocked)

    assert started_while_full == 1
    assert manipulator.started == 2


async def test_admissions_released_after_requests(
    aiohttp_client: AiohttpClient, image_root: Path
) -> None:
    manipulator = GatedManipulator(open_gate=True)
    client = await saturated_client(aiohttp_client, image_root, manipulator)

    statuses = [(await client.get(path)).status for path in ("/DSCN0010.jpg?w=10", "/nope.jpg")]

    assert statuses == [200, 404]
    assert client.app[LIMITER].admitted == 0


# --- draining on SIGTERM, with the real command line ---------------------------------------


def slow_origin_app(arrived: asyncio.Event, release: asyncio.Event) -> web.Application:
    async def slow(request: web.Request) -> web.Response:
        arrived.set()
        # Bounded, so a broken test cannot hang the origin.
        await asyncio.wait_for(release.wait(), timeout=30)
        return web.Response(body=PHOTO, content_type="image/jpeg")

    app = web.Application()
    app.router.add_get("/images/{name}", slow)
    return app


def write_drain_config(folder: Path, base_url: str) -> Path:
    path = folder / "darkroom.yaml"
    path.write_text(
        textwrap.dedent(
            f"""\
            server:
              workers: 1
              shutdown_timeout: {DRAIN_SECONDS}
            device: cpu
            sources:
              - name: slow
                kind: http
                base_url: {base_url}
                allowed_networks: [127.0.0.1/32]
            """
        ),
        encoding="utf-8",
    )
    return path


async def fetch_status(session: aiohttp.ClientSession, url: str) -> int:
    async with session.get(url) as response:
        await response.read()
        return response.status


async def test_sigterm_drains_in_flight_request(
    aiohttp_server: AiohttpServer, tmp_path: Path
) -> None:
    arrived, release = asyncio.Event(), asyncio.Event()
    origin = await aiohttp_server(slow_origin_app(arrived, release), host="127.0.0.1")
    config = write_drain_config(tmp_path, str(origin.make_url("/images/")))
    port = free_port()
    log_path = tmp_path / "server.log"
    with log_path.open("wb") as log_file:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "darkroom_gpu",
            "serve",
            "--config",
            str(config),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            cwd=tmp_path,
            env=clean_environment(),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    server = RunningServer(process, f"http://127.0.0.1:{port}", log_path)
    try:
        async with aiohttp.ClientSession() as session:
            await wait_until_ready(server, session)
            slow = asyncio.create_task(fetch_status(session, server.base_url + "/p.jpg?w=64"))
            await asyncio.wait_for(arrived.wait(), WAIT_SECONDS)

            process.send_signal(signal.SIGTERM)
            await asyncio.sleep(0.5)
            async with aiohttp.ClientSession() as fresh:
                with pytest.raises(aiohttp.ClientConnectionError):
                    await fetch_status(fresh, server.base_url + "/healthz")
            running_after_sigterm = process.returncode is None
            release.set()
            slow_status = await asyncio.wait_for(slow, WAIT_SECONDS)
        return_code = await asyncio.wait_for(process.wait(), DRAIN_SECONDS)
    finally:
        release.set()
        if process.returncode is None:
            process.kill()
            await process.wait()

    assert running_after_sigterm, server.output()
    assert slow_status == 200, server.output()
    assert return_code == 0, server.output()
    assert "shutting down: no new connections; 1 image request in flight" in server.output()


async def test_sigterm_cancels_after_shutdown_timeout(
    aiohttp_server: AiohttpServer, tmp_path: Path
) -> None:
    arrived, release = asyncio.Event(), asyncio.Event()
    origin = await aiohttp_server(slow_origin_app(arrived, release), host="127.0.0.1")
    config = write_drain_config(tmp_path, str(origin.make_url("/images/")))
    config.write_text(
        config.read_text().replace(f"shutdown_timeout: {DRAIN_SECONDS}", "shutdown_timeout: 0.5")
    )
    port = free_port()
    log_path = tmp_path / "server.log"
    with log_path.open("wb") as log_file:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "darkroom_gpu",
            "serve",
            "--config",
            str(config),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            cwd=tmp_path,
            env=clean_environment(),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    server = RunningServer(process, f"http://127.0.0.1:{port}", log_path)
    try:
        async with aiohttp.ClientSession() as session:
            await wait_until_ready(server, session)
            slow = asyncio.create_task(fetch_status(session, server.base_url + "/p.jpg?w=64"))
            await asyncio.wait_for(arrived.wait(), WAIT_SECONDS)
            started = time.monotonic()
            process.send_signal(signal.SIGTERM)
            return_code = await asyncio.wait_for(process.wait(), DRAIN_SECONDS)
            stopped_after = time.monotonic() - started
            slow_outcome = await asyncio.gather(slow, return_exceptions=True)
    finally:
        release.set()
        if process.returncode is None:
            process.kill()
            await process.wait()

    assert return_code == 0, server.output()
    assert stopped_after < DRAIN_SECONDS / 2, server.output()
    # Cancelled at the deadline, the request gets no 200: the connection closes instead.
    assert slow_outcome[0] != 200
