"""The metadata route ``/_meta/<source route>/<path>``: header fields and the planned output."""

from __future__ import annotations

from pathlib import Path
from typing import Final

import numpy as np
import pytest
from PIL import Image
from pytest_aiohttp import AiohttpClient

from darkroom_gpu.config import Limits
from darkroom_gpu.manipulators import ImageJob, ImageResult, Manipulator
from darkroom_gpu.server import create_app
from darkroom_gpu.signing import sign
from tests.conftest import DATA, SAMPLES, Client, ClientFactory, make_settings, source_settings
from tests.images import GifFrame, gif_bytes, save, swapped_profile

KEY: Final = "0123456789abcdef0123"


async def meta(client: Client, target: str, **headers: str) -> tuple[int, dict[str, object]]:
    response = await client.get(f"/_meta{target}", headers=headers)
    body: dict[str, object] = await response.json()
    return response.status, body


async def test_source_and_output_fields(client: Client) -> None:
    status, body = await meta(client, "/jolla.jpg?w=300")

    assert status == 200
    assert body == {
        "source": {
            "format": "jpeg",
            "width": 3264,
            "height": 2448,
            "orientation": 1,
            "alpha": False,
            "profile": None,
            "frames": 1,
            "bytes": (SAMPLES / "jolla.jpg").stat().st_size,
        },
        "output": {"format": "jpeg", "width": 300, "height": 225},
    }


async def test_size_as_stored_output_upright(make_client: ClientFactory) -> None:
    client = await make_client(source_settings(DATA / "exif-orientation"))

    status, body = await meta(client, "/Landscape_6.jpg?w=300&format=webp")

    assert status == 200
    assert body["source"] == {
        "format": "jpeg",
        "width": 1200,
        "height": 1800,
        "orientation": 6,
        "alpha": False,
        "profile": None,
        "frames": 1,
        "bytes": (DATA / "exif-orientation" / "Landscape_6.jpg").stat().st_size,
    }
    assert body["output"] == {"format": "webp", "width": 300, "height": 200}


async def test_output_after_rotation(client: Client) -> None:
    _, body = await meta(client, "/DSCN0010.jpg?w=320&rot=90")

    assert body["output"] == {"format": "jpeg", "width": 240, "height": 320}


async def test_no_parameters_describes_original(client: Client) -> None:
    _, body = await meta(client, "/DSCN0010.jpg")

    assert body["output"] == {"format": "jpeg", "width": 640, "height": 480}


async def test_profile_alpha_and_frames(make_client: ClientFactory, tmp_path: Path) -> None:
    image = Image.new("RGBA", (8, 6), (1, 2, 3, 4))
    (tmp_path / "tagged.png").write_bytes(save(image, "PNG", icc_profile=swapped_profile()))
    frames = [GifFrame(np.zeros((6, 8), np.uint8)), GifFrame(np.ones((6, 8), np.uint8))]
    (tmp_path / "anim.gif").write_bytes(gif_bytes((8, 6), [(0, 0, 0), (9, 9, 9)], frames))
    client = await make_client(source_settings(tmp_path))

    _, png = await meta(client, "/tagged.png?w=4")
    _, gif = await meta(client, "/anim.gif?format=webp")

    assert png["source"]["profile"] == "swapped red and blue"  # type: ignore[index]
    assert png["source"]["alpha"] is True  # type: ignore[index]
    assert png["output"] == {"format": "png", "width": 4, "height": 3}
    assert gif["source"]["frames"] == 2  # type: ignore[index]
    assert gif["output"] == {"format": "webp", "width": 8, "height": 6}


async def test_auto_format_uses_accept(client: Client) -> None:
    response = await client.get(
        "/_meta/DSCN0010.jpg?w=64&auto=format", headers={"Accept": "image/avif"}
    )
    body = await response.json()

    assert body["output"]["format"] == "avif"
    assert response.headers["Vary"] == "Accept"


async def test_cache_control_like_images(make_client: ClientFactory) -> None:
    client = await make_client(source_changes={"cache_ttl": 600})

    response = await client.get("/_meta/DSCN0010.jpg?w=64")

    assert response.headers["Cache-Control"] == "public, max-age=600"
    assert response.content_type == "application/json"


class RecordingManipulator(Manipulator):
    """Records every job it is given and fails it."""

    device = "cpu"

    def __init__(self) -> None:
        self.jobs: list[ImageJob] = []

    async def process(self, job: ImageJob) -> ImageResult:
        self.jobs.append(job)
        raise AssertionError("the metadata route must not transform")


async def test_decodes_no_pixels(aiohttp_client: AiohttpClient, image_root: Path) -> None:
    manipulator = RecordingManipulator()
    app = create_app(make_settings(source_settings(image_root)), manipulator=manipulator)
    client = await aiohttp_client(app)

    response = await client.get("/_meta/jolla.jpg?w=300")

    assert response.status == 200
    assert manipulator.jobs == []


@pytest.mark.parametrize(
    ("target", "status", "code"),
    [
        pytest.param("/missing.jpg", 404, "not_found", id="missing object"),
        pytest.param("/DSCN0010.jpg?w=abc", 400, "invalid_parameter", id="bad parameter"),
        pytest.param("/notes.txt?w=10", 415, "unsupported_media_type", id="not an image"),
        pytest.param("/DSCN0010.jpg?h=8192", 422, "unprocessable_image", id="result too large"),
    ],
)
async def test_errors_use_json_shape(
    client: Client, image_root: Path, target: str, status: int, code: str
) -> None:
    (image_root / "notes.txt").write_text("plain text")

    response = await client.get(f"/_meta{target}")
    body = await response.json()

    assert response.status == status
    assert body["error"]["status"] == status
    assert body["error"]["code"] == code
    assert response.headers["Cache-Control"] == "no-store"


async def test_source_pixel_limit_applies(make_client: ClientFactory) -> None:
    client = await make_client(source_changes={"limits": Limits(max_source_pixels=100_000)})

    status, body = await meta(client, "/DSCN0010.jpg?w=64")

    assert status == 422
    assert "over this source's limit" in body["error"]["message"]  # type: ignore[index]


async def test_signature_covers_image_path(make_client: ClientFactory, image_root: Path) -> None:
    client = await make_client(source_settings(image_root, prefix="/team", signing_keys=(KEY,)))
    signature = sign(KEY, "/team/DSCN0010.jpg", [("w", "64")])

    signed = await client.get(f"/_meta/team/DSCN0010.jpg?w=64&s={signature}")
    unsigned = await client.get("/_meta/team/DSCN0010.jpg?w=64")
    image = await client.get(f"/team/DSCN0010.jpg?w=64&s={signature}")

    assert signed.status == 200
    assert unsigned.status == 403
    assert image.status == 200


async def test_signature_of_meta_path_rejected(
    make_client: ClientFactory, image_root: Path
) -> None:
    client = await make_client(source_settings(image_root, prefix="/team", signing_keys=(KEY,)))
    signature = sign(KEY, "/_meta/team/DSCN0010.jpg", [("w", "64")])

    response = await client.get(f"/_meta/team/DSCN0010.jpg?w=64&s={signature}")

    assert response.status == 403


async def test_other_reserved_paths_still_404(client: Client) -> None:
    response = await client.get("/_other/DSCN0010.jpg")

    assert response.status == 404
