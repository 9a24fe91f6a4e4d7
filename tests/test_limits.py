"""Source limits (pixels from the header, frames included) and the per-request deadline."""

from __future__ import annotations

import asyncio
import io
import resource
import struct
import textwrap
import time
import zlib
from dataclasses import replace
from pathlib import Path

import pytest
from PIL import Image
from pytest_aiohttp import AiohttpClient

from darkroom_gpu import codecs
from darkroom_gpu.config import (
    ConfigError,
    ConfigReader,
    Limits,
    ServerSettings,
    SourceSettings,
    load_settings,
)
from darkroom_gpu.errors import ProcessingTimeoutError, UnprocessableImageError
from darkroom_gpu.geometry import Size
from darkroom_gpu.manipulators import CpuManipulator, ImageJob
from darkroom_gpu.manipulators.base import check_source_pixels
from darkroom_gpu.options import ProcessingOptions
from darkroom_gpu.server import create_app
from darkroom_gpu.server.state import CACHE
from darkroom_gpu.sources import Source, SourceObject
from tests.conftest import ClientFactory, make_settings, open_image, source_settings
from tests.stubs import GatedManipulator, tiny_jpeg

NO_ENVIRONMENT: dict[str, str] = {}
# Generous bound for "fast" on a loaded 2-core test machine; the work avoided would take far
# longer (decoding 10^10 pixels) or exhaust memory.
FAST_SECONDS = 5.0
# Bound on how much the test process's peak memory may grow while rejecting a bomb.
MAX_GROWTH_BYTES = 200 * 1024 * 1024


def png_declaring(width: int, height: int, padding: int = 900) -> bytes:
    """Build a small, valid-looking RGB PNG whose header declares `width` x `height`."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"tEXt", b"Comment\x00" + b"x" * padding)
        + chunk(b"IDAT", zlib.compress(bytes(64)))
        + chunk(b"IEND", b"")
    )


def animated_gif(frames: int, width: int = 100, height: int = 100) -> bytes:
    images = [Image.new("RGB", (width, height), (index * 20, 0, 0)) for index in range(frames)]
    buffer = io.BytesIO()
    images[0].save(buffer, "GIF", save_all=True, append_images=images[1:], duration=50)
    return buffer.getvalue()


def peak_rss_bytes() -> int:
    # ru_maxrss is in kilobytes on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


# --- configuration -------------------------------------------------------------------------


def write_config(folder: Path, text: str) -> Path:
    path = folder / "darkroom.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def test_limits_defaults() -> None:
    limits = Limits()

    assert limits.max_request_seconds == 30.0


def test_server_overload_defaults() -> None:
    server = ServerSettings(workers=3)

    assert server.max_concurrency is None
    assert server.concurrency_limit == 3
    assert server.queue_limit == 192
    assert server.shutdown_timeout == 30.0


def test_server_zero_queue_kept() -> None:
    assert ServerSettings(workers=3, max_queue=0).queue_limit == 0


def test_limits_and_server_keys_read(tmp_path: Path) -> None:
    (tmp_path / "photos").mkdir()
    path = write_config(
        tmp_path,
        """\
        server:
          workers: 2
          max_concurrency: 6
          max_queue: 10
          shutdown_timeout: 5
        limits:
          max_request_seconds: 12.5
        sources:
          - name: photos
            kind: filesystem
            root: ./photos
            limits: {max_request_seconds: 2}
        """,
    )

    settings = load_settings(path, environ=NO_ENVIRONMENT)

    assert settings.server.concurrency_limit == 6
    assert settings.server.queue_limit == 10
    assert settings.server.shutdown_timeout == 5.0
    assert settings.limits.max_request_seconds == 12.5
    assert settings.sources[0].limits.max_request_seconds == 2.0


def test_limits_and_server_errors_together(tmp_path: Path) -> None:
    (tmp_path / "photos").mkdir()
    path = write_config(
        tmp_path,
        """\
        server:
          max_concurrency: 0
          max_queue: -1
          shutdown_timeout: forever
        limits:
          max_request_seconds: 0
        sources:
          - name: photos
            kind: filesystem
            root: ./photos
        """,
    )

    with pytest.raises(ConfigError) as excinfo:
        load_settings(path, environ=NO_ENVIRONMENT)
    errors = excinfo.value.errors

    def reported(prefix: str) -> bool:
        return any(error.startswith(prefix) for error in errors)

    assert reported("server.max_concurrency: expected an integer from 1")
    assert reported("server.max_queue: expected an integer from 0")
    assert reported("server.shutdown_timeout: expected a number")
    assert reported("limits.max_request_seconds: expected a number from 0.01")


def test_environment_sets_request_deadline(tmp_path: Path) -> None:
    (tmp_path / "photos").mkdir()
    path = write_config(
        tmp_path,
        """\
        sources:
          - name: photos
            kind: filesystem
            root: ./photos
        """,
    )

    settings = load_settings(path, environ={"DARKROOM_LIMITS__MAX_REQUEST_SECONDS": "7"})

    assert settings.sources[0].limits.max_request_seconds == 7.0


# --- source pixels -------------------------------------------------------------------------


def job_for(data: bytes, max_pixels: int) -> ImageJob:
    return ImageJob(
        data=data,
        options=ProcessingOptions(width=4),
        negotiated_format=None,
        allow_enlarge=True,
        max_pixels=max_pixels,
    )


def test_check_pixels_counts_frames() -> None:
    data = animated_gif(10)
    info = codecs.probe(data)

    assert info.frames == 10
    check_source_pixels(job_for(data, 100_000), info)
    with pytest.raises(UnprocessableImageError, match=r"100x100 x 10 frames = 100000 pixels"):
        check_source_pixels(job_for(data, 99_999), info)


def test_check_pixels_still_message() -> None:
    data = png_declaring(300, 200)
    info = codecs.probe(data)

    with pytest.raises(UnprocessableImageError, match=r"image is 300x200 = 60000 pixels, over"):
        check_source_pixels(job_for(data, 59_999), info)


async def test_cpu_rejects_frames_over_limit() -> None:
    manipulator = CpuManipulator(workers=1)
    try:
        with pytest.raises(UnprocessableImageError, match=r"x 4 frames"):
            await manipulator.process(job_for(animated_gif(4, 50, 50), 4 * 50 * 50 - 1))
    finally:
        await manipulator.close()


async def test_declared_huge_png_rejected_fast(make_client: ClientFactory, tmp_path: Path) -> None:
    bomb = png_declaring(100_000, 100_000)
    assert len(bomb) < 1100
    (tmp_path / "bomb.png").write_bytes(bomb)
    client = await make_client(source_settings(tmp_path))
    peak_before = peak_rss_bytes()
    started = time.monotonic()

    response = await client.get("/bomb.png?w=100")
    body = await response.json()

    assert response.status == 422
    assert body["error"]["code"] == "unprocessable_image"
    assert "100000x100000 = 10000000000 pixels" in body["error"]["message"]
    assert time.monotonic() - started < FAST_SECONDS
    assert peak_rss_bytes() - peak_before < MAX_GROWTH_BYTES


async def test_animation_over_limit_is_422(make_client: ClientFactory, tmp_path: Path) -> None:
    (tmp_path / "anim.gif").write_bytes(animated_gif(10))
    client = await make_client(
        source_settings(tmp_path, limits=Limits(max_source_pixels=99_999)),
        source_settings(tmp_path, name="roomy", prefix="/roomy"),
    )

    rejected = await client.get("/anim.gif?w=50")
    served = await client.get("/roomy/anim.gif?w=50")

    assert rejected.status == 422
    assert "x 10 frames" in (await rejected.json())["error"]["message"]
    assert served.status == 200


async def test_pixel_check_precedes_output_check(
    make_client: ClientFactory, tmp_path: Path
) -> None:
    # Without w the result would be over the output limits too; the source limit is reported.
    (tmp_path / "bomb.png").write_bytes(png_declaring(100_000, 100_000))
    client = await make_client(source_settings(tmp_path))

    response = await client.get("/bomb.png?rot=10")

    assert response.status == 422
    assert "over this source's limit" in (await response.json())["error"]["message"]


# --- request deadline ----------------------------------------------------------------------


class FixedSource(Source):
    """Serves one small JPEG at every path, after an optional delay."""

    delay = 0.0

    @classmethod
    def read_options(cls, reader: ConfigReader) -> object:
        return object()

    async def fetch(self, path: str, *, max_bytes: int) -> SourceObject:
        await asyncio.sleep(self.delay)
        return SourceObject(data=tiny_jpeg(), identity=f"fixed:{path}")


class SlowSource(FixedSource):
    delay = 30.0


def fixed_source(kind: str, seconds: float) -> SourceSettings:
    return SourceSettings(
        name="fixed",
        kind=kind,
        prefix="",
        hosts=(),
        options=object(),
        limits=Limits(max_request_seconds=seconds),
    )


async def test_slow_processing_is_504(aiohttp_client: AiohttpClient) -> None:
    manipulator = GatedManipulator()
    app = create_app(
        make_settings(fixed_source("tests.test_limits:FixedSource", 0.3)),
        manipulator=manipulator,
    )
    client = await aiohttp_client(app)
    started = time.monotonic()

    response = await client.get("/a.jpg?w=4")
    body = await response.json()

    assert response.status == 504
    assert body["error"] == {
        "status": 504,
        "code": "timeout",
        "message": "the request did not finish within this source's deadline of 0.3 s",
    }
    assert response.headers["Cache-Control"] == "no-store"
    assert time.monotonic() - started < FAST_SECONDS
    assert manipulator.finished == 0
    assert len(app[CACHE]) == 0


async def test_timed_out_result_not_cached(aiohttp_client: AiohttpClient) -> None:
    manipulator = GatedManipulator()
    app = create_app(
        make_settings(fixed_source("tests.test_limits:FixedSource", 0.3)),
        manipulator=manipulator,
    )
    client = await aiohttp_client(app)

    timed_out = await client.get("/a.jpg?w=4")
    manipulator.gate.set()
    served = await client.get("/a.jpg?w=4")

    assert timed_out.status == 504
    assert served.status == 200
    assert manipulator.started == 2
    assert len(app[CACHE]) == 1


async def test_job_carries_deadline(aiohttp_client: AiohttpClient) -> None:
    manipulator = GatedManipulator(open_gate=True)
    app = create_app(
        make_settings(fixed_source("tests.test_limits:FixedSource", 20)),
        manipulator=manipulator,
    )
    client = await aiohttp_client(app)
    before = time.monotonic()

    response = await client.get("/a.jpg?w=4")

    assert response.status == 200
    deadline = manipulator.jobs[0].deadline
    assert deadline is not None
    assert before + 19 < deadline < time.monotonic() + 20


async def test_slow_fetch_is_504(aiohttp_client: AiohttpClient) -> None:
    app = create_app(
        make_settings(fixed_source("tests.test_limits:SlowSource", 0.3)),
        manipulator=GatedManipulator(open_gate=True),
    )
    client = await aiohttp_client(app)
    started = time.monotonic()

    response = await client.get("/a.jpg?w=4")

    assert response.status == 504
    assert time.monotonic() - started < FAST_SECONDS


async def test_passthrough_within_deadline(make_client: ClientFactory, image_root: Path) -> None:
    client = await make_client(source_settings(image_root, limits=Limits(max_request_seconds=5)))

    response = await client.get("/DSCN0010.jpg")

    assert response.status == 200


async def test_cpu_stops_after_deadline() -> None:
    manipulator = CpuManipulator(workers=1)
    job = replace(job_for(tiny_jpeg(), 1_000_000), deadline=time.monotonic() - 1)
    try:
        with pytest.raises(ProcessingTimeoutError):
            await manipulator.process(job)
        result = await manipulator.process(replace(job, deadline=time.monotonic() + 60))
    finally:
        await manipulator.close()

    assert result.size == Size(4, 4)
    assert open_image(result.data).size == (4, 4)
