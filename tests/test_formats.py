"""Formats and colour through the server: every input format, colour handling, outputs.

Each test requests an image the way a client does and checks the decoded response.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image, ImageCms, ImageSequence

from darkroom_gpu.config import Limits
from tests.conftest import SAMPLES, Client, ClientFactory, open_image, source_settings
from tests.images import GifFrame, cmyk_jpeg, gif_bytes, png_from_samples, save, swapped_profile

CYAN: Final = np.array([0, 255, 255])
# Largest difference, in 8-bit levels, for flat colours encoded lossily (JPEG, WebP at the
# default quality): flat blocks survive the transform, colour conversion moves a few levels.
FLAT_LOSSY_TOLERANCE: Final = 6
# 16-bit samples must come out as round(v / 257); two levels allow for the resampling-free
# path through float ops, which rounds half to even.
SIXTEEN_BIT_TOLERANCE: Final = 2
GREY_JPEG_TOLERANCE: Final = 3
SRGB_PROFILE: Final = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def rgb_array(data: bytes) -> npt.NDArray[np.int16]:
    return np.asarray(open_image(data).convert("RGB"), dtype=np.int16)


def rgba_array(data: bytes) -> npt.NDArray[np.int16]:
    return np.asarray(open_image(data).convert("RGBA"), dtype=np.int16)


async def folder_client(make_client: ClientFactory, folder: Path) -> Client:
    return await make_client(source_settings(folder))


# --- colour --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "content_type"),
    [("jpeg", "image/jpeg"), ("png", "image/png"), ("webp", "image/webp")],
)
async def test_cmyk_cyan_stays_cyan(
    make_client: ClientFactory, tmp_path: Path, fmt: str, content_type: str
) -> None:
    (tmp_path / "cyan.jpg").write_bytes(cmyk_jpeg((32, 32), (255, 0, 0, 0)))
    client = await folder_client(make_client, tmp_path)

    response = await client.get(f"/cyan.jpg?format={fmt}")
    pixels = rgb_array(await response.read())

    assert response.status == 200
    assert response.content_type == content_type
    assert np.abs(pixels - CYAN).max() <= FLAT_LOSSY_TOLERANCE


async def test_grey_jpeg_stays_grey_jpeg(make_client: ClientFactory, tmp_path: Path) -> None:
    save_to = tmp_path / "grey.jpg"
    save_to.write_bytes(save(Image.new("L", (16, 16), 128), "JPEG", quality=90))
    client = await folder_client(make_client, tmp_path)

    response = await client.get("/grey.jpg?w=16&q=90")
    image = open_image(await response.read())

    assert response.content_type == "image/jpeg"
    assert image.mode == "L"
    assert np.abs(np.asarray(image, dtype=np.int16) - 128).max() <= GREY_JPEG_TOLERANCE


async def test_palette_transparency_survives_mono(
    make_client: ClientFactory, tmp_path: Path
) -> None:
    image = Image.new("P", (120, 90), 0)
    image.putpalette([200, 30, 40, 0, 0, 0])
    image.paste(1, (0, 45, 120, 90))
    (tmp_path / "half.png").write_bytes(save(image, "PNG", transparency=1))
    client = await folder_client(make_client, tmp_path)

    response = await client.get("/half.png?mono=000000&w=60")
    result = rgba_array(await response.read())

    assert result.shape == (45, 60, 4)
    # Output row 22 straddles the edge, and from row 25 on the filter covers only transparent
    # source rows.
    assert (result[25:, :, 3] == 0).all()
    assert (result[:20, :, 3] == 255).all()
    assert np.ptp(result[:20, :, :3], axis=-1).max() == 0


@pytest.fixture
def gradient_sixteen_bit() -> npt.NDArray[np.uint16]:
    """A 64x64 16-bit RGBA gradient whose top-right quadrant is transparent."""
    y, x = np.mgrid[0:64, 0:64].astype(np.uint32)
    samples = np.zeros((64, 64, 4), dtype=np.uint16)
    samples[..., 0] = x * 1040 + 127
    samples[..., 1] = y * 1040 + 129
    samples[..., 2] = 40000
    samples[..., 3] = 65535
    samples[:32, 32:, 3] = 0
    return samples


async def test_sixteen_bit_png_rounds(
    make_client: ClientFactory, tmp_path: Path, gradient_sixteen_bit: npt.NDArray[np.uint16]
) -> None:
    (tmp_path / "deep.png").write_bytes(png_from_samples(gradient_sixteen_bit))
    client = await folder_client(make_client, tmp_path)

    response = await client.get("/deep.png?format=png")
    result = rgba_array(await response.read())

    expected = np.round(gradient_sixteen_bit / 257).astype(np.int16)
    opaque = expected[..., 3] == 255
    assert np.abs(result[opaque] - expected[opaque]).max() <= SIXTEEN_BIT_TOLERANCE
    assert (result[~opaque][:, 3] == 0).all()


async def test_sixteen_bit_png_as_jpeg_flattens_white(
    make_client: ClientFactory, tmp_path: Path, gradient_sixteen_bit: npt.NDArray[np.uint16]
) -> None:
    (tmp_path / "deep.png").write_bytes(png_from_samples(gradient_sixteen_bit))
    client = await folder_client(make_client, tmp_path)

    response = await client.get("/deep.png?format=jpeg&q=95")
    result = rgb_array(await response.read())

    assert response.content_type == "image/jpeg"
    # The quadrant's inner 16x16 block is away from the edge, so only rounding remains.
    assert np.abs(result[8:24, 40:56] - 255).max() <= FLAT_LOSSY_TOLERANCE


async def test_resize_has_no_dark_fringe(make_client: ClientFactory, tmp_path: Path) -> None:
    image = Image.new("RGBA", (90, 30), (255, 255, 255, 255))
    image.paste((0, 0, 0, 0), (45, 0, 90, 30))  # transparent black right half
    (tmp_path / "edge.png").write_bytes(save(image, "PNG"))
    client = await folder_client(make_client, tmp_path)

    response = await client.get("/edge.png?w=37")
    result = rgba_array(await response.read())

    visible = result[..., 3] > 0
    assert (result[..., 3] < 255).any()
    # Straight-alpha resizing would pull black into the edge pixels; premultiplied keeps white.
    assert result[visible][:, :3].min() >= 254


@pytest.mark.parametrize(("query", "expected"), [("w=16", 128), ("w=16&linear=1", 188)])
async def test_linear_resize_keeps_brightness(
    make_client: ClientFactory, tmp_path: Path, query: str, expected: int
) -> None:
    stripes = np.zeros((64, 64), dtype=np.uint8)
    stripes[:, ::2] = 255
    (tmp_path / "stripes.png").write_bytes(save(Image.fromarray(stripes), "PNG"))
    client = await folder_client(make_client, tmp_path)

    response = await client.get(f"/stripes.png?{query}&format=png")
    result = rgb_array(await response.read())

    # 1-pixel stripes average to half the light: sRGB level 188, or level 128 when the
    # encoded values are averaged. The border columns see one stripe more or less.
    assert np.abs(result[:, 2:-2] - expected).max() <= 1


async def test_embedded_profile_applied(make_client: ClientFactory, tmp_path: Path) -> None:
    image = Image.new("RGB", (16, 16), (255, 0, 0))
    (tmp_path / "tagged.png").write_bytes(save(image, "PNG", icc_profile=swapped_profile()))
    client = await folder_client(make_client, tmp_path)

    response = await client.get("/tagged.png?w=8")
    result = open_image(await response.read())

    assert result.getpixel((4, 4)) == (0, 0, 255)
    assert "icc_profile" not in result.info


# --- inputs --------------------------------------------------------------------------------


def still_sources() -> dict[str, bytes]:
    """One 48x32 gradient per input format and variant, by file name."""
    y, x = np.mgrid[0:32, 0:48]
    rgb = np.stack([x * 5, y * 7, np.full_like(x, 90)], axis=-1).astype(np.uint8)
    image = Image.fromarray(rgb)
    rgba = image.copy()
    rgba.putalpha(200)
    return {
        "baseline.jpg": save(image, "JPEG", quality=95),
        "progressive.jpg": save(image, "JPEG", quality=95, progressive=True),
        "grey.jpg": save(image.convert("L"), "JPEG", quality=95),
        "lossy.webp": save(image, "WEBP", quality=95),
        "lossless.webp": save(image, "WEBP", lossless=True),
        "alpha.webp": save(rgba, "WEBP", lossless=True),
        "still.avif": save(image, "AVIF", quality=95),
        "still.heic": save(image, "HEIF", quality=95),
        "alpha.heic": save(rgba, "HEIF", quality=95),
        "plain.tiff": save(image, "TIFF"),
        "deflate.tiff": save(rgba, "TIFF", compression="tiff_adobe_deflate"),
        "plain.bmp": save(image, "BMP"),
        "palette.gif": save(image.quantize(256), "GIF"),
    }


# Mean difference, in 8-bit levels, from the gradient; GIF loses most to its 256 colours.
INPUT_MEAN_TOLERANCE: Final = {"gif": 6.0, "heic": 4.0, "avif": 4.0}
DEFAULT_MEAN_TOLERANCE: Final = 3.0


@pytest.mark.parametrize("name", sorted(still_sources()))
async def test_every_input_format_decodes(
    make_client: ClientFactory, tmp_path: Path, name: str
) -> None:
    (tmp_path / name).write_bytes(still_sources()[name])
    reference = still_sources()["lossless.webp"]
    (tmp_path / "reference.webp").write_bytes(reference)
    client = await folder_client(make_client, tmp_path)

    response = await client.get(f"/{name}?format=png")
    result = rgb_array(await response.read())
    expected = rgb_array(await (await client.get("/reference.webp?format=png")).read())

    assert response.status == 200
    assert result.shape == (32, 48, 3)
    if name.startswith("grey"):
        luma = np.round(expected @ np.array([0.299, 0.587, 0.114]))
        expected = np.repeat(luma[..., np.newaxis], 3, axis=-1).astype(np.int16)
    tolerance = INPUT_MEAN_TOLERANCE.get(name.rsplit(".", 1)[1], DEFAULT_MEAN_TOLERANCE)
    assert np.abs(result - expected).mean() <= tolerance


@pytest.mark.parametrize(
    ("name", "content_type"),
    [("still.heic", "image/jpeg"), ("alpha.heic", "image/png"), ("plain.tiff", "image/jpeg")],
)
async def test_unwritable_source_format_default_output(
    make_client: ClientFactory, tmp_path: Path, name: str, content_type: str
) -> None:
    (tmp_path / name).write_bytes(still_sources()[name])
    client = await folder_client(make_client, tmp_path)

    response = await client.get(f"/{name}?w=24")

    assert response.status == 200
    assert response.content_type == content_type
    assert open_image(await response.read()).size == (24, 16)


async def test_heic_passthrough(make_client: ClientFactory, tmp_path: Path) -> None:
    data = still_sources()["still.heic"]
    (tmp_path / "still.heic").write_bytes(data)
    client = await folder_client(make_client, tmp_path)

    response = await client.get("/still.heic")

    assert response.content_type == "image/heif"
    assert await response.read() == data


# --- outputs -------------------------------------------------------------------------------


@pytest.mark.parametrize(("query", "progressive"), [("w=64", False), ("w=64&progressive=1", True)])
async def test_progressive_jpeg_parameter(client: Client, query: str, progressive: bool) -> None:
    response = await client.get(f"/DSCN0010.jpg?{query}")
    image = open_image(await response.read())

    assert bool(image.info.get("progressive")) is progressive


async def test_progressive_from_source_defaults(make_client: ClientFactory) -> None:
    client = await make_client(source_changes={"defaults": {"progressive": "1"}})

    response = await client.get("/DSCN0010.jpg?w=64")

    assert open_image(await response.read()).info.get("progressive")


@pytest.mark.parametrize(
    "query",
    [
        "format=jpeg",
        "format=png",
        "format=webp",
        "format=avif",
        "format=jpeg&auto=compress",
        "format=webp&auto=compress",
    ],
)
async def test_metadata_never_copied(
    make_client: ClientFactory, tmp_path: Path, query: str
) -> None:
    exif = Image.Exif()
    exif[0x010F] = "Test Camera"  # Make
    exif[0x0112] = 6
    image = Image.new("RGB", (40, 30), (10, 120, 200))
    (tmp_path / "tagged.jpg").write_bytes(
        save(image, "JPEG", exif=exif.tobytes(), icc_profile=SRGB_PROFILE)
    )
    client = await folder_client(make_client, tmp_path)

    response = await client.get(f"/tagged.jpg?{query}")
    result = open_image(await response.read())

    assert result.size == (30, 40)
    assert "icc_profile" not in result.info
    assert "exif" not in result.info
    assert not result.getexif()


@pytest.mark.parametrize("fmt", ["webp", "avif"])
async def test_photo_converted_is_not_larger(
    make_client: ClientFactory, tmp_path: Path, fmt: str
) -> None:
    photo = Image.open(SAMPLES / "DSCN0010.jpg").convert("RGB")
    left, top = (photo.width - 512) // 2, (photo.height - 512) // 2
    crop = photo.crop((left, top, left + 512, top + 512))
    # Quality 75, Pillow's default, is the hardest measured case for the default qualities.
    source = save(crop, "JPEG", quality=75)
    (tmp_path / "crop.jpg").write_bytes(source)
    client = await folder_client(make_client, tmp_path)

    response = await client.get(f"/crop.jpg?format={fmt}")
    body = await response.read()

    assert response.content_type == f"image/{fmt}"
    assert len(body) <= len(source)


async def test_blur_over_limit_is_400(client: Client) -> None:
    response = await client.get("/DSCN0010.jpg?blur=1000")
    body = await response.json()

    assert response.status == 400
    assert body["error"]["message"] == (
        "blur: expected a decimal number greater than 0 and at most 250, got '1000'"
    )


async def test_max_blur_on_large_image_finishes(make_client: ClientFactory, tmp_path: Path) -> None:
    photo = Image.open(SAMPLES / "jolla.jpg").convert("RGB").crop((0, 0, 1920, 1920))
    (tmp_path / "big.jpg").write_bytes(save(photo, "JPEG"))
    client = await folder_client(make_client, tmp_path)

    response = await client.get("/big.jpg?blur=250")

    assert response.status == 200
    assert open_image(await response.read()).size == (1920, 1920)


# --- animation -----------------------------------------------------------------------------

PALETTE: Final = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)]


@pytest.fixture
def animated_gif(tmp_path: Path) -> Path:
    """A 40x20 GIF of three frames, the second one covering only the left half."""
    frames = [
        GifFrame(np.full((20, 40), 0, np.uint8), delay=10),
        GifFrame(np.full((20, 20), 1, np.uint8), delay=20),
        GifFrame(np.full((20, 40), 2, np.uint8), delay=30),
    ]
    path = tmp_path / "anim.gif"
    path.write_bytes(gif_bytes((40, 20), PALETTE, frames, repeats=0))
    return tmp_path


def frame_list(data: bytes) -> list[Image.Image]:
    image = Image.open(io.BytesIO(data))
    frames = []
    for frame in ImageSequence.Iterator(image):
        frame.load()
        copy = frame.convert("RGBA")
        copy.info["duration"] = frame.info.get("duration")
        frames.append(copy)
    return frames


@pytest.mark.parametrize(("fmt", "content_type"), [("gif", "image/gif"), ("webp", "image/webp")])
async def test_animation_keeps_frames(
    make_client: ClientFactory, animated_gif: Path, fmt: str, content_type: str
) -> None:
    client = await folder_client(make_client, animated_gif)

    response = await client.get(f"/anim.gif?w=20&format={fmt}")
    frames = frame_list(await response.read())

    assert response.content_type == content_type
    assert [frame.size for frame in frames] == [(20, 10)] * 3
    assert [frame.info["duration"] for frame in frames] == [100, 200, 300]
    # The second frame covered the left half only; the right half still shows the first.
    second = np.asarray(frames[1], dtype=np.int16)
    assert np.abs(second[5, 3, :3] - (0, 255, 0)).max() <= FLAT_LOSSY_TOLERANCE
    assert np.abs(second[5, 16, :3] - (255, 0, 0)).max() <= FLAT_LOSSY_TOLERANCE


async def test_animation_default_output_is_gif(
    make_client: ClientFactory, animated_gif: Path
) -> None:
    client = await folder_client(make_client, animated_gif)

    response = await client.get("/anim.gif?w=20")

    assert response.content_type == "image/gif"
    assert len(frame_list(await response.read())) == 3


async def test_animation_negotiates_webp(make_client: ClientFactory, animated_gif: Path) -> None:
    client = await folder_client(make_client, animated_gif)

    response = await client.get("/anim.gif?w=20&auto=format", headers={"Accept": "image/webp"})

    assert response.content_type == "image/webp"
    assert len(frame_list(await response.read())) == 3


@pytest.mark.parametrize("fmt", ["jpeg", "png"])
async def test_still_output_takes_first_frame(
    make_client: ClientFactory, animated_gif: Path, fmt: str
) -> None:
    client = await folder_client(make_client, animated_gif)

    response = await client.get(f"/anim.gif?w=20&format={fmt}")
    frames = frame_list(await response.read())

    assert len(frames) == 1
    first = np.asarray(frames[0], dtype=np.int16)
    assert np.abs(first[5, 10, :3] - (255, 0, 0)).max() <= FLAT_LOSSY_TOLERANCE


async def test_animation_steps_run_on_every_frame(
    make_client: ClientFactory, animated_gif: Path
) -> None:
    client = await folder_client(make_client, animated_gif)

    response = await client.get("/anim.gif?w=20&rot=90&flip=h&mono=000000&format=webp")
    frames = frame_list(await response.read())

    assert [frame.size for frame in frames] == [(10, 20)] * 3
    for frame in frames:
        colours = np.asarray(frame, dtype=np.int16)[..., :3]
        assert np.ptp(colours, axis=-1).max() <= FLAT_LOSSY_TOLERANCE


async def test_animation_frames_count_toward_pixel_limit(
    make_client: ClientFactory, animated_gif: Path
) -> None:
    # Three 40x20 frames are 2400 pixels; one frame alone would fit.
    limits = Limits(max_source_pixels=2000)
    client = await make_client(source_settings(animated_gif, limits=limits))

    response = await client.get("/anim.gif?w=20")

    assert response.status == 422
    assert "x 3 frames" in (await response.json())["error"]["message"]
