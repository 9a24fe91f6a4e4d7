"""Corrupt, truncated and crafted sources get 415 or 422 (or a correct image), never 500.

The source here keeps an object's identity when its bytes change, so a test can fix a broken
file under the same cache key and see whether an error was cached.
"""

from __future__ import annotations

import asyncio
import io
import struct
from collections.abc import Iterator
from typing import Final

import numpy as np
import pytest
from PIL import Image
from pytest_aiohttp import AiohttpClient

from darkroom_gpu.config import ConfigReader, SourceSettings
from darkroom_gpu.errors import NotFoundError
from darkroom_gpu.server import create_app
from darkroom_gpu.server.state import CACHE
from darkroom_gpu.sources import Source, SourceObject
from tests.conftest import DATA, Client, make_settings, open_image

LANDSCAPE: Final = (DATA / "exif-orientation" / "Landscape_1.jpg").read_bytes()
# Objects served by MemorySource, by path; each test starts with an empty store.
OBJECTS: dict[str, bytes] = {}
CLIENT_ERRORS: Final = (415, 422)


class MemorySource(Source):
    """Serves `OBJECTS` with an identity that ignores the bytes, like an origin without ETags."""

    @classmethod
    def read_options(cls, reader: ConfigReader) -> object:
        return object()

    async def fetch(self, path: str, *, max_bytes: int) -> SourceObject:
        if path not in OBJECTS:
            raise NotFoundError(f"no image at {path!r}")
        return SourceObject(data=OBJECTS[path], identity=f"memory:{path}")


@pytest.fixture(autouse=True)
def empty_store() -> Iterator[None]:
    OBJECTS.clear()
    yield
    OBJECTS.clear()


@pytest.fixture
async def client(aiohttp_client: AiohttpClient) -> Client:
    source = SourceSettings(
        name="memory",
        kind="tests.test_corrupt_input:MemorySource",
        prefix="",
        hosts=(),
        options=object(),
    )
    return await aiohttp_client(create_app(make_settings(source)))


def encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def photo() -> Image.Image:
    """A 64x48 picture with structure, so truncation leaves a visible gap."""
    gradient = np.linspace(0, 255, 64 * 48 * 3).reshape(48, 64, 3).astype(np.uint8)
    return Image.fromarray(gradient, "RGB")


def jpeg_with_exif(tiff: bytes) -> bytes:
    """A 60x40 JPEG whose APP1 block holds `tiff` as its EXIF data."""
    return encode(Image.new("RGB", (60, 40), (10, 200, 30)), "JPEG", exif=b"Exif\x00\x00" + tiff)


def bmp_with_palette(colours_used: int, keep_bytes: int | None = None) -> bytes:
    """An 8-bit BMP whose header claims `colours_used` palette entries, optionally cut."""
    data = bytearray(encode(Image.new("P", (40, 30), 5), "BMP"))
    struct.pack_into("<I", data, 46, colours_used)  # biClrUsed of BITMAPINFOHEADER
    return bytes(data[:keep_bytes]) if keep_bytes is not None else bytes(data)


async def assert_still_serving(client: Client) -> None:
    OBJECTS["good.jpg"] = LANDSCAPE
    response = await client.get("/good.jpg?w=90")
    assert response.status == 200
    assert open_image(await response.read()).size == (90, 60)


async def test_truncated_jpeg_never_cached(client: Client) -> None:
    OBJECTS["photo.jpg"] = LANDSCAPE[: len(LANDSCAPE) * 6 // 10]

    cut = await client.get("/photo.jpg?w=100")
    cut_body = await cut.json()
    cached_after_error = len(client.app[CACHE])
    OBJECTS["photo.jpg"] = LANDSCAPE
    fixed = await client.get("/photo.jpg?w=100")

    assert cut.status == 422
    assert cut_body["error"]["code"] == "unprocessable_image"
    assert cut.headers["Cache-Control"] == "no-store"
    assert "ETag" not in cut.headers
    assert cached_after_error == 0
    assert fixed.status == 200
    assert open_image(await fixed.read()).size == (100, 67)


async def test_truncated_jpeg_passthrough_sends_bytes(client: Client) -> None:
    # Without parameters the bytes pass through after sniffing only, undecoded.
    OBJECTS["photo.jpg"] = LANDSCAPE[: len(LANDSCAPE) * 6 // 10]

    response = await client.get("/photo.jpg")

    assert response.status == 200
    assert await response.read() == OBJECTS["photo.jpg"]


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"\xff\xd8" + LANDSCAPE, id="second SOI at start"),
        pytest.param(
            LANDSCAPE[: len(LANDSCAPE) // 2] + b"\xff\xd8" + LANDSCAPE[len(LANDSCAPE) // 2 :],
            id="second SOI in scan data",
        ),
        pytest.param(LANDSCAPE + LANDSCAPE, id="second image appended"),
    ],
)
async def test_jpeg_two_start_markers(client: Client, data: bytes) -> None:
    OBJECTS["two.jpg"] = data

    response = await client.get("/two.jpg?w=90")
    body = await response.read()

    assert response.status in (200, *CLIENT_ERRORS)
    if response.status == 200:
        assert open_image(body).size == (90, 60)
    await assert_still_serving(client)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(bmp_with_palette(100_000), id="palette larger than file"),
        pytest.param(bmp_with_palette(256, keep_bytes=14 + 40 + 100), id="palette cut short"),
        pytest.param(bmp_with_palette(0xFFFFFFFF), id="palette count overflows"),
        pytest.param(bmp_with_palette(2), id="indices past palette"),
    ],
)
async def test_bmp_broken_palette(client: Client, data: bytes) -> None:
    OBJECTS["broken.bmp"] = data

    response = await client.get("/broken.bmp?w=20")
    body = await response.read()

    assert response.status in (200, *CLIENT_ERRORS)
    if response.status == 200:
        assert open_image(body).size == (20, 15)
    await assert_still_serving(client)


def tiff_ifd(*entries: tuple[int, int, int, int]) -> bytes:
    """A little-endian TIFF header and one IFD at offset 8 with `entries` (tag, type, n, value)."""
    body = struct.pack("<H", len(entries))
    for tag, kind, count, value in entries:
        body += struct.pack("<HHII", tag, kind, count, value)
    return b"II*\x00" + struct.pack("<I", 8) + body + struct.pack("<I", 0)


@pytest.mark.parametrize(
    ("tiff", "size"),
    [
        pytest.param(b"II*\x00" + struct.pack("<I", 0x7FFFFF00), (60, 40), id="IFD past end"),
        pytest.param(
            tiff_ifd((0x010F, 2, 400, 0x7FFF0000), (0x0112, 3, 1, 6)),
            (40, 60),
            id="value past end, orientation kept",
        ),
        pytest.param(tiff_ifd((0x8769, 4, 1, 0x7FFF0000)), (60, 40), id="sub-IFD past end"),
        pytest.param(b"II*\x00" + struct.pack("<IH", 8, 0xFFFF), (60, 40), id="entry count"),
    ],
)
async def test_exif_offsets_past_end(client: Client, tiff: bytes, size: tuple[int, int]) -> None:
    OBJECTS["exif.jpg"] = jpeg_with_exif(tiff)

    response = await client.get("/exif.jpg?format=png")
    body = await response.read()

    assert response.status in (200, *CLIENT_ERRORS)
    if response.status == 200:
        result = open_image(body)
        assert result.size == size
        # The pixels are the source's colour; the damaged metadata changed nothing else.
        assert np.abs(np.asarray(result, dtype=int) - (10, 200, 30)).max() <= 8
    await assert_still_serving(client)


async def test_long_frame_delay_to_gif(client: Client) -> None:
    # WebP allows delays up to 2**24 - 1 ms, more than GIF's 16 bits of centiseconds hold.
    frames = [Image.new("RGB", (30, 20), (index * 80, 0, 0)) for index in range(2)]
    OBJECTS["slow.webp"] = encode(
        frames[0], "WEBP", save_all=True, append_images=frames[1:], duration=[16_000_000, 100]
    )

    response = await client.get("/slow.webp?format=gif&w=15")
    result = open_image(await response.read())

    assert response.status == 200
    assert result.format == "GIF"
    assert getattr(result, "n_frames", 1) == 2
    assert result.info["duration"] == 655_350


def truncated_and_damaged() -> list[tuple[str, bytes]]:
    picture = photo()
    cases = []
    for name, fmt in (("png", "PNG"), ("gif", "GIF"), ("webp", "WEBP"), ("tiff", "TIFF")):
        data = encode(picture, fmt)
        cases.append((f"{name} cut in half", data[: len(data) // 2]))
        cases.append((f"{name} header only", data[:40]))
    bmp = encode(picture, "BMP")
    cases.append(("bmp cut in half", bmp[: len(bmp) // 2]))
    png = bytearray(encode(picture, "PNG"))
    png[40] ^= 0xFF  # inside IHDR or IDAT, so a CRC no longer matches
    cases.append(("png bad crc", bytes(png)))
    cases.append(("jpeg scan zeroed", LANDSCAPE[:2000] + bytes(len(LANDSCAPE) - 2000)))
    cases.append(("jpeg magic only", b"\xff\xd8\xff"))
    cases.append(("riff without webp", b"RIFF\x10\x00\x00\x00WEBPVP8 " + bytes(8)))
    return cases


CASES: Final = truncated_and_damaged()


@pytest.mark.parametrize(("name", "data"), CASES, ids=[name for name, _ in CASES])
async def test_damaged_source_is_client_error(client: Client, name: str, data: bytes) -> None:
    OBJECTS["damaged"] = data

    response = await client.get("/damaged?w=32")
    body = await response.json() if response.status != 200 else None

    assert response.status in (200, *CLIENT_ERRORS), body
    if body is not None:
        assert body["error"]["status"] == response.status


async def test_corrupt_flood_keeps_workers(client: Client) -> None:
    # More corrupt requests at once than there are worker threads. Each gets a response, and
    # the pool still serves a good image afterwards.
    for index, (_, data) in enumerate(CASES):
        OBJECTS[f"damaged-{index}"] = data

    responses = await asyncio.gather(
        *(client.get(f"/damaged-{index}?w={16 + index}") for index in range(len(CASES)))
    )

    assert all(response.status in (200, *CLIENT_ERRORS) for response in responses)
    await assert_still_serving(client)
