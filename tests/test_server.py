"""End-to-end tests of the HTTP server on a real filesystem source and real photos."""

from __future__ import annotations

import asyncio
import io
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from PIL import Image

from darkroom_gpu.server import create_app
from darkroom_gpu.server.middleware import CLIENT_CLOSED_REQUEST, request_middleware
from darkroom_gpu.server.state import MANIPULATOR
from tests.conftest import (
    DATA,
    SAMPLES,
    Client,
    ClientFactory,
    make_settings,
    open_image,
    source_settings,
)

ORIENTATIONS = range(9)


def save(image: Image.Image, path: Path, **params: Any) -> Path:
    image.save(path, **params)
    return path


async def raw_get(client: Client, target: str) -> tuple[int, bytes]:
    """Send a request line exactly as written, bypassing URL normalisation in the client."""
    reader, writer = await asyncio.open_connection(client.host, client.port)
    try:
        request = f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        writer.write(request.encode())
        await writer.drain()
        response = await asyncio.wait_for(reader.read(), timeout=10)
    finally:
        writer.close()
        await writer.wait_closed()
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


async def test_ping_answers_pong(client: Client) -> None:
    response = await client.get("/ping")
    assert response.status == 200
    assert await response.text() == "pong"


async def test_healthz_is_ok(client: Client) -> None:
    response = await client.get("/healthz")
    assert response.status == 200
    assert await response.json() == {"status": "ok"}


async def test_healthz_fails_after_device_failure(client: Client) -> None:
    manipulator = client.app[MANIPULATOR]
    manipulator.failure = "CUDA error: an illegal memory access"

    response = await client.get("/healthz")

    assert response.status == 503
    assert response.headers["Cache-Control"] == "no-store"
    assert await response.json() == {
        "status": "device_failed",
        "device": "cpu",
        "error": "CUDA error: an illegal memory access",
    }


async def test_readyz_fails_after_device_failure(client: Client) -> None:
    client.app[MANIPULATOR].failure = "CUDA error: an illegal memory access"

    response = await client.get("/readyz")

    assert response.status == 503
    body = await response.json()
    assert body["status"] == "device_failed"
    assert body["error"] == "CUDA error: an illegal memory access"


async def test_readyz_reports_device_after_warm_up(client: Client) -> None:
    response = await client.get("/readyz")
    for _ in range(100):
        if response.status == 200:
            break
        await asyncio.sleep(0.05)
        response = await client.get("/readyz")
    assert response.status == 200
    assert await response.json() == {"status": "ready", "device": "cpu"}


async def test_metrics_count_requests_per_source(client: Client) -> None:
    await client.get("/jolla.jpg?w=50")
    response = await client.get("/metrics")
    text = await response.text()
    assert response.status == 200
    assert 'darkroom_requests_total{format="jpeg",source="test",status_class="2xx"} 1.0' in text


async def test_crop_gives_exact_size(client: Client) -> None:
    response = await client.get("/jolla.jpg?w=300&h=300&fit=crop")
    assert response.status == 200
    assert response.content_type == "image/jpeg"
    assert open_image(await response.read()).size == (300, 300)


async def test_success_headers(client: Client) -> None:
    response = await client.get("/DSCN0010.jpg?w=100")
    body = await response.read()
    assert response.headers["Content-Length"] == str(len(body))
    assert response.headers["Cache-Control"] == "public, max-age=31536000"
    assert response.headers["ETag"].startswith('"')
    assert "Last-Modified" in response.headers
    assert "X-Request-ID" in response.headers
    stages = [entry.split(";")[0] for entry in response.headers["Server-Timing"].split(", ")]
    assert stages == ["fetch", "queue", "decode", "process", "encode", "total"]


async def test_cache_ttl_comes_from_source(make_client: ClientFactory) -> None:
    client = await make_client(source_changes={"cache_ttl": 60})
    response = await client.get("/DSCN0010.jpg?w=100")
    assert response.headers["Cache-Control"] == "public, max-age=60"


async def test_if_none_match_gives_304(client: Client) -> None:
    first = await client.get("/DSCN0010.jpg?w=120")
    etag = first.headers["ETag"]
    second = await client.get("/DSCN0010.jpg?w=120", headers={"If-None-Match": etag})
    assert second.status == 304
    assert await second.read() == b""
    assert second.headers["ETag"] == etag


async def test_if_none_match_any_gives_304(client: Client) -> None:
    response = await client.get("/DSCN0010.jpg?w=120", headers={"If-None-Match": "*"})
    assert response.status == 304
    assert "ETag" in response.headers


@pytest.mark.parametrize(
    ("name", "content", "query", "status"),
    [
        pytest.param("notes.jpg", b"plain text, not an image", "", 415, id="passthrough"),
        pytest.param("notes.jpg", b"plain text, not an image", "?w=10", 415, id="transform"),
        pytest.param("DSCN0010.jpg", None, "?w=8192&h=8192&fit=scale", 422, id="too large"),
    ],
)
async def test_if_none_match_any_keeps_errors(
    make_client: ClientFactory,
    tmp_path: Path,
    name: str,
    content: bytes | None,
    query: str,
    status: int,
) -> None:
    data = content if content is not None else (SAMPLES / name).read_bytes()
    (tmp_path / name).write_bytes(data)
    client = await make_client(source_settings(tmp_path))

    response = await client.get(f"/{name}{query}", headers={"If-None-Match": "*"})

    assert response.status == status
    assert response.headers["Cache-Control"] == "no-store"
    assert "ETag" not in response.headers


async def test_etag_ignores_unknown_parameters(client: Client) -> None:
    plain = await client.get("/DSCN0010.jpg?w=120")
    busted = await client.get("/DSCN0010.jpg?w=120&v=7")
    assert plain.headers["ETag"] == busted.headers["ETag"]


async def test_etag_differs_per_options(client: Client) -> None:
    small = await client.get("/DSCN0010.jpg?w=120")
    large = await client.get("/DSCN0010.jpg?w=121")
    assert small.headers["ETag"] != large.headers["ETag"]


async def test_etag_changes_with_file(client: Client, image_root: Path) -> None:
    before = await client.get("/DSCN0010.jpg?w=120")
    photo = image_root / "DSCN0010.jpg"
    Image.open(photo).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(photo)
    os.utime(photo, ns=(1, 1))
    after = await client.get("/DSCN0010.jpg?w=120")
    assert before.headers["ETag"] != after.headers["ETag"]


@pytest.mark.parametrize("orientation", ORIENTATIONS)
@pytest.mark.parametrize("shape", ["Landscape", "Portrait"])
async def test_exif_orientation_comes_out_upright(
    make_client: ClientFactory, shape: str, orientation: int
) -> None:
    client = await make_client(source_settings(DATA / "exif-orientation"))
    reference = open_image(await (await client.get(f"/{shape}_1.jpg?w=300&format=png")).read())

    response = await client.get(f"/{shape}_{orientation}.jpg?w=300&format=png")
    result = open_image(await response.read())

    assert response.status == 200
    assert result.size == reference.size
    difference = np.abs(np.asarray(result, np.int16) - np.asarray(reference, np.int16))
    # The nine files are separate JPEG encodes of one picture, so pixels differ by a few levels;
    # a wrong orientation differs by tens of levels.
    assert difference.mean() < 4.0


async def test_orientation_applies_before_resize(
    make_client: ClientFactory, tmp_path: Path
) -> None:
    upright = Image.new("RGB", (20, 40), (255, 0, 0))
    upright.paste((0, 0, 255), (0, 20, 20, 40))  # top half red, bottom half blue
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # 40x20, displayed with orientation 6
    exif = Image.Exif()
    exif[0x0112] = 6
    save(stored, tmp_path / "rotated.jpg", exif=exif.tobytes(), quality=95)
    client = await make_client(source_settings(tmp_path))

    response = await client.get("/rotated.jpg?w=10&format=png")
    result = np.asarray(open_image(await response.read()))

    assert result.shape == (20, 10, 3)
    assert result[2, 5, 0] > 200
    assert result[2, 5, 2] < 60
    assert result[17, 5, 2] > 200
    assert result[17, 5, 0] < 60
    assert not open_image(await response.read()).getexif()


async def test_output_drops_exif_orientation(make_client: ClientFactory) -> None:
    client = await make_client(source_settings(DATA / "exif-orientation"))
    response = await client.get("/Landscape_6.jpg?w=200")
    assert 0x0112 not in open_image(await response.read()).getexif()


@pytest.mark.parametrize(
    ("size", "fmt", "query", "expected"),
    [
        pytest.param((1000, 4), "JPEG", "w=50", (50, 1), id="1000x4 jpeg w=50"),
        pytest.param((1, 10000), "PNG", "h=100", (1, 100), id="1x10000 png h=100"),
        pytest.param((200, 50), "PNG", "w=0&h=100", (400, 100), id="w=0 keeps aspect from h"),
    ],
)
async def test_extreme_aspect(
    make_client: ClientFactory,
    tmp_path: Path,
    size: tuple[int, int],
    fmt: str,
    query: str,
    expected: tuple[int, int],
) -> None:
    save(Image.new("RGB", size, (10, 200, 30)), tmp_path / f"strip.{fmt.lower()}", format=fmt)
    client = await make_client(source_settings(tmp_path))
    response = await client.get(f"/strip.{fmt.lower()}?{query}")
    assert response.status == 200
    assert open_image(await response.read()).size == expected


@pytest.mark.parametrize(
    ("query", "parameter"),
    [
        ("w=abc", "w"),
        ("w=-5", "w"),
        ("w=1.5", "w"),
        ("w=100000", "w"),
        ("q=0", "q"),
        ("q=101", "q"),
        ("rot=abc", "rot"),
        ("flip=x", "flip"),
        ("format=bmp", "format"),
        ("crop=middle", "crop"),
        ("mono=zz", "mono"),
        ("w=10&w=20", "w"),
    ],
)
async def test_invalid_parameter_is_400(client: Client, query: str, parameter: str) -> None:
    response = await client.get(f"/DSCN0010.jpg?{query}")
    body = await response.json()
    assert response.status == 400
    assert response.headers["Cache-Control"] == "no-store"
    assert body["error"]["status"] == 400
    assert body["error"]["code"] == "invalid_parameter"
    assert body["error"]["message"].startswith(f"{parameter}: ")


async def test_cache_buster_alone_is_passthrough(client: Client, image_root: Path) -> None:
    response = await client.get("/DSCN0010.jpg?v=3")
    assert response.status == 200
    assert response.content_type == "image/jpeg"
    assert await response.read() == (image_root / "DSCN0010.jpg").read_bytes()


async def test_no_parameters_is_passthrough(client: Client, image_root: Path) -> None:
    response = await client.get("/canon_hdr_NO.jpg")
    assert await response.read() == (image_root / "canon_hdr_NO.jpg").read_bytes()


async def test_source_defaults_disable_passthrough(make_client: ClientFactory) -> None:
    client = await make_client(source_changes={"defaults": {"w": "64"}})
    response = await client.get("/DSCN0010.jpg")
    assert open_image(await response.read()).size == (64, 48)


def half_transparent_png(path: Path) -> Path:
    image = Image.new("RGBA", (64, 16), (0, 0, 255, 255))
    image.paste((0, 0, 0, 0), (32, 0, 64, 16))  # right half fully transparent black
    return save(image, path)


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        pytest.param("format=jpg", (255, 255, 255), id="white by default"),
        pytest.param("format=jpg&bg=ff0000", (255, 0, 0), id="explicit bg"),
    ],
)
async def test_alpha_flattens_for_jpeg(
    make_client: ClientFactory, tmp_path: Path, query: str, expected: tuple[int, int, int]
) -> None:
    half_transparent_png(tmp_path / "half.png")
    client = await make_client(source_settings(tmp_path))
    response = await client.get(f"/half.png?{query}")
    result = np.asarray(open_image(await response.read()), dtype=np.int16)

    assert response.content_type == "image/jpeg"
    # The halves are 16x16 JPEG blocks apart from the edge, so only quantisation noise remains.
    assert np.abs(result[:, 48:] - np.array(expected)).max() <= 8
    assert np.abs(result[:, :16] - np.array((0, 0, 255))).max() <= 8


async def test_png_keeps_transparency(make_client: ClientFactory, tmp_path: Path) -> None:
    half_transparent_png(tmp_path / "half.png")
    client = await make_client(source_settings(tmp_path))
    response = await client.get("/half.png?w=32")
    result = open_image(await response.read())
    assert result.mode == "RGBA"
    assert result.getpixel((28, 5))[3] == 0  # type: ignore[index]
    assert result.getpixel((4, 5)) == (0, 0, 255, 255)


@pytest.mark.parametrize(
    ("name", "content"),
    [
        pytest.param("empty.jpg", b"", id="empty file"),
        pytest.param("x.jpg", b"<!doctype html><html><body>Not found</body></html>", id="html"),
    ],
)
@pytest.mark.parametrize("query", ["", "?w=100"])
async def test_not_an_image_is_415(
    make_client: ClientFactory, tmp_path: Path, name: str, content: bytes, query: str
) -> None:
    (tmp_path / name).write_bytes(content)
    client = await make_client(source_settings(tmp_path))
    response = await client.get(f"/{name}{query}")
    body = await response.read()
    assert response.status == 415
    assert response.content_type == "application/json"
    assert b"<html>" not in body
    assert response.headers["Cache-Control"] == "no-store"


async def test_truncated_jpeg_is_422(make_client: ClientFactory, tmp_path: Path) -> None:
    data = (DATA / "exif-orientation" / "Landscape_1.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    client = await make_client(source_settings(tmp_path))
    response = await client.get("/cut.jpg?w=100")
    body = await response.json()
    assert response.status == 422
    assert body["error"]["code"] == "unprocessable_image"


@pytest.fixture
def outside_secret(tmp_path: Path, image_root: Path) -> Path:
    """Put a real image outside the root, and a symlink to it inside the root."""
    secret = save(Image.new("RGB", (8, 8), (1, 2, 3)), tmp_path / "secret.png")
    (image_root / "link.png").symlink_to(secret)
    (image_root / "sub").mkdir()
    return secret


@pytest.mark.parametrize(
    "target",
    [
        "/../secret.png",
        "/sub/../../secret.png",
        "/%2e%2e%2fsecret.png",
        "/%2E%2E/secret.png",
        "/..%2fsecret.png",
        "/sub/..%2f..%2fsecret.png",
        "/link.png",
        "/link.png?w=4",
        "//etc/passwd",
        "/%2fetc%2fpasswd",
    ],
)
async def test_paths_never_leave_root(client: Client, outside_secret: Path, target: str) -> None:
    status, body = await raw_get(client, target)
    assert status in (400, 404)
    assert b'"error"' in body


async def test_absolute_path_in_request_is_not_served(client: Client, outside_secret: Path) -> None:
    status, _ = await raw_get(client, f"/{outside_secret}")
    assert status == 404


async def test_symlink_inside_root_is_served(client: Client, image_root: Path) -> None:
    (image_root / "alias.jpg").symlink_to(image_root / "DSCN0010.jpg")
    response = await client.get("/alias.jpg?w=32")
    assert response.status == 200


@pytest.mark.parametrize("target", ["/%zz.jpg", "/%e9.jpg", "/abc%"])
async def test_invalid_percent_escape_is_400(client: Client, target: str) -> None:
    status, body = await raw_get(client, target)
    assert status == 400
    assert b"invalid_path" in body


async def test_unknown_prefix_is_404(make_client: ClientFactory, image_root: Path) -> None:
    client = await make_client(source_settings(image_root, prefix="/samples"))
    assert (await client.get("/samples/DSCN0010.jpg?w=10")).status == 200
    response = await client.get("/other/DSCN0010.jpg")
    assert response.status == 404
    assert (await response.json())["error"]["code"] == "not_found"


async def test_method_not_allowed_is_json(client: Client) -> None:
    response = await client.post("/DSCN0010.jpg")
    assert response.status == 405
    assert (await response.json())["error"]["status"] == 405


async def test_reserved_route_wins_over_file(client: Client, image_root: Path) -> None:
    save(Image.new("RGB", (4, 4)), image_root / "ping", format="PNG")
    response = await client.get("/ping")
    assert await response.text() == "pong"


async def test_bug_gives_500_without_traceback(
    aiohttp_client: object, image_root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    class BrokenManipulator:
        device = "cpu"

        async def process(self, job: object) -> object:
            raise RuntimeError("secret internal detail")

        async def warm_up(self) -> None:
            return None

        async def close(self) -> None:
            return None

    app = create_app(make_settings(source_settings(image_root)), BrokenManipulator())  # type: ignore[arg-type]
    client = await aiohttp_client(app)  # type: ignore[operator]
    response = await client.get("/DSCN0010.jpg?w=10")
    body = await response.text()
    assert response.status == 500
    assert "secret internal detail" not in body
    assert "Traceback" not in body
    assert response.headers["X-Request-ID"] in body
    assert any(record.exc_info for record in caplog.records)


async def test_access_log_line_per_request(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="darkroom_gpu.access")
    response = await client.get("/DSCN0010.jpg?w=10", headers={"X-Request-ID": "abc-123"})
    lines = [r.getMessage() for r in caplog.records if r.name == "darkroom_gpu.access"]
    assert response.headers["X-Request-ID"] == "abc-123"
    assert len(lines) == 1
    assert "request_id=abc-123" in lines[0]
    assert "status=200" in lines[0]
    assert "source=test" in lines[0]


async def test_concurrent_requests_all_succeed(client: Client) -> None:
    queries = [f"/DSCN0010.jpg?w={width}" for width in range(40, 56)]
    responses = await asyncio.gather(*(client.get(query) for query in queries))
    sizes = [open_image(await response.read()).width for response in responses]
    assert sizes == list(range(40, 56))


async def test_auto_format_negotiates_webp(client: Client) -> None:
    response = await client.get(
        "/DSCN0010.jpg?w=64&auto=format", headers={"Accept": "image/webp,*/*;q=0.8"}
    )
    assert response.content_type == "image/webp"
    assert response.headers["Vary"] == "Accept"
    assert open_image(await response.read()).format == "WEBP"


async def test_auto_format_prefers_avif(client: Client) -> None:
    response = await client.get(
        "/DSCN0010.jpg?w=64&auto=format", headers={"Accept": "image/avif,image/webp,*/*"}
    )
    assert response.content_type == "image/avif"


@pytest.mark.parametrize("accept", ["*/*", "image/*", "image/webp;q=0", "text/html", ""])
async def test_auto_format_keeps_source_format(client: Client, accept: str) -> None:
    response = await client.get("/DSCN0010.jpg?w=64&auto=format", headers={"Accept": accept})
    assert response.content_type == "image/jpeg"
    assert response.headers["Vary"] == "Accept"


async def test_auto_format_etag_depends_on_accept(client: Client) -> None:
    webp = await client.get("/DSCN0010.jpg?w=64&auto=format", headers={"Accept": "image/webp"})
    jpeg = await client.get("/DSCN0010.jpg?w=64&auto=format", headers={"Accept": "*/*"})
    assert webp.headers["ETag"] != jpeg.headers["ETag"]


async def test_explicit_format_wins_over_auto(client: Client) -> None:
    response = await client.get(
        "/DSCN0010.jpg?w=64&auto=format&format=png", headers={"Accept": "image/avif"}
    )
    assert response.content_type == "image/png"
    assert "Vary" not in response.headers


async def test_auto_compress_is_smaller(client: Client) -> None:
    plain = await (await client.get("/jolla.jpg?w=600")).read()
    compressed = await (await client.get("/jolla.jpg?w=600&auto=compress")).read()
    assert len(compressed) < len(plain)


async def test_pixel_limit_is_422(make_client: ClientFactory, image_root: Path) -> None:
    from darkroom_gpu.config import Limits

    client = await make_client(
        source_settings(image_root, limits=Limits(max_source_pixels=1_000_000))
    )
    response = await client.get("/jolla.jpg?w=100")
    assert response.status == 422
    assert "pixels" in (await response.json())["error"]["message"]


async def test_byte_limit_is_422(make_client: ClientFactory, image_root: Path) -> None:
    from darkroom_gpu.config import Limits

    client = await make_client(source_settings(image_root, limits=Limits(max_source_bytes=1000)))
    response = await client.get("/jolla.jpg")
    assert response.status == 422


async def test_gif_source_keeps_gif(make_client: ClientFactory, tmp_path: Path) -> None:
    save(Image.new("P", (30, 20), 3), tmp_path / "still.gif")
    client = await make_client(source_settings(tmp_path))
    response = await client.get("/still.gif?w=15")
    assert response.content_type == "image/gif"
    assert open_image(await response.read()).size == (15, 10)


async def test_bmp_source_becomes_jpeg(make_client: ClientFactory, tmp_path: Path) -> None:
    save(Image.new("RGB", (30, 20), (5, 6, 7)), tmp_path / "plain.bmp")
    client = await make_client(source_settings(tmp_path))
    response = await client.get("/plain.bmp?w=15")
    assert response.content_type == "image/jpeg"


async def test_bytes_with_jpeg_name_are_sniffed(make_client: ClientFactory, tmp_path: Path) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (30, 20), (5, 6, 7)).save(buffer, "PNG")
    (tmp_path / "misnamed.jpg").write_bytes(buffer.getvalue())
    client = await make_client(source_settings(tmp_path))
    response = await client.get("/misnamed.jpg")
    assert response.content_type == "image/png"


@pytest.fixture
def strips(tmp_path: Path) -> Path:
    """A folder with a 1x20000 PNG strip and a 200x100 PNG."""
    save(Image.new("RGB", (1, 20000), (30, 60, 90)), tmp_path / "tall.png")
    save(Image.new("RGB", (200, 100), (200, 100, 50)), tmp_path / "wide.png")
    return tmp_path


async def test_crop_of_strip_resizes_only_box(make_client: ClientFactory, strips: Path) -> None:
    client = await make_client(source_settings(strips))
    response = await client.get("/tall.png?w=300&h=300&fit=crop")
    result = np.asarray(open_image(await response.read()))
    assert response.status == 200
    assert result.shape == (300, 300, 3)
    assert np.abs(result.astype(int) - (30, 60, 90)).max() <= 1


@pytest.mark.parametrize(
    ("name", "query"),
    [
        pytest.param("tall.png", "w=100", id="one side set makes the other huge"),
        pytest.param("tall.png", "w=100&rot=45", id="rotation canvas"),
        pytest.param("wide.png", "h=8192", id="free side over the maximum"),
        pytest.param("wide.png", "w=8000&h=8000&fit=scale", id="area over the maximum"),
    ],
)
async def test_oversized_result_is_422(
    make_client: ClientFactory, strips: Path, name: str, query: str
) -> None:
    client = await make_client(source_settings(strips))
    response = await client.get(f"/{name}?{query}")
    body = await response.json()
    assert response.status == 422
    assert "the result would be" in body["error"]["message"]


@pytest.mark.parametrize("rot", ["0.0001", "359.9999", "-0.0001", "90.0004"])
async def test_near_right_angle_turns_exactly(
    make_client: ClientFactory, strips: Path, rot: str
) -> None:
    client = await make_client(source_settings(strips))
    response = await client.get(f"/wide.png?rot={rot}")
    result = open_image(await response.read())
    expected_size = (100, 200) if rot.startswith("90") else (200, 100)
    assert result.size == expected_size
    assert result.mode == "RGB"


async def test_crop_first_matches_whole_resize(client: Client) -> None:
    # 640x480 filled into 1500x50 scales to 1500x1125 first, so only the band is resized.
    response = await client.get("/DSCN0010.jpg?w=1500&h=50&fit=crop&format=png")
    with Image.open(SAMPLES / "DSCN0010.jpg") as photo:
        whole = photo.convert("RGB").resize((1500, 1125), Image.Resampling.BICUBIC)
    expected = np.asarray(whole.crop((0, 537, 1500, 587)), dtype=np.int16)
    result = np.asarray(open_image(await response.read()), dtype=np.int16)
    assert result.shape == expected.shape
    # The band lands within half a scaled pixel of the whole-image position.
    assert np.abs(result - expected).mean() < 2.0


async def test_corrupt_tiff_directory_is_422(make_client: ClientFactory) -> None:
    client = await make_client(source_settings(DATA / "corrupt"))
    response = await client.get("/tiff-bad-directory.tiff?w=5")
    assert response.status == 422


@pytest.mark.parametrize(
    "target", ["/DSCN0010.jpg/", "/./DSCN0010.jpg", "/sub/../DSCN0010.jpg", "//DSCN0010.jpg"]
)
async def test_path_aliases_are_404(client: Client, image_root: Path, target: str) -> None:
    (image_root / "sub").mkdir()
    status, _ = await raw_get(client, target)
    assert status == 404


async def test_underscore_paths_are_reserved(client: Client, image_root: Path) -> None:
    (image_root / "_x.jpg").write_bytes((image_root / "DSCN0010.jpg").read_bytes())
    response = await client.get("/_x.jpg")
    assert response.status == 404
    assert (await response.json())["error"]["code"] == "not_found"


async def test_invalid_http_logs_one_warning(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    status, _ = await raw_get(client, "/caf\u00e9.jpg")
    records = [record for record in caplog.records if record.name == "aiohttp.server"]
    assert status == 400
    assert records
    assert all(record.exc_info is None for record in records)
    assert all(record.levelname == "WARNING" for record in records)


async def test_not_modified_counts_no_format(client: Client) -> None:
    first = await client.get("/DSCN0010.jpg?w=30")
    await client.get("/DSCN0010.jpg?w=30", headers={"If-None-Match": first.headers["ETag"]})
    text = await (await client.get("/metrics")).text()
    assert 'darkroom_requests_total{format="none",source="test",status_class="3xx"} 1.0' in text


@pytest.mark.parametrize(
    ("target", "reason"),
    [
        pytest.param(
            "/DSCN0010.jpg?w=40&s=SIGNATURE-VALUE&v=" + "a" * 9000,
            "Got more than 8190 bytes when reading",
            id="too long",
        ),
        pytest.param("/DSCN0010.jpg?w=40&s=SIGNATURE-VALUE&x=a b", "", id="space in query"),
    ],
)
async def test_parser_errors_log_no_request_bytes(
    client: Client, caplog: pytest.LogCaptureFixture, target: str, reason: str
) -> None:
    status, _ = await raw_get(client, target)

    records = [r for r in caplog.records if "rejected by the parser" in r.getMessage()]
    assert status == 400
    assert len(records) == 1
    assert reason in records[0].getMessage()
    assert "SIGNATURE-VALUE" not in caplog.text
    assert "\n" not in records[0].getMessage()
    assert records[0].exc_info is None


async def test_cancelled_request_logs_access_line(caplog: pytest.LogCaptureFixture) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        raise asyncio.CancelledError

    request = make_mocked_request("GET", "/photo.jpg?w=10&s=SIGNATURE-VALUE")
    with (
        caplog.at_level(logging.INFO, logger="darkroom_gpu.access"),
        pytest.raises(asyncio.CancelledError),
    ):
        await request_middleware(request, handler)

    records = [r for r in caplog.records if r.name == "darkroom_gpu.access"]
    assert len(records) == 1
    assert records[0].__dict__["status"] == CLIENT_CLOSED_REQUEST
    assert records[0].__dict__["path"] == "/photo.jpg"
    assert "SIGNATURE-VALUE" not in caplog.text
