"""Every URL parameter on real photos, compared with the same transform done in Pillow.

Results are requested as PNG where the format is not under test, so the comparison measures the
tensor ops rather than JPEG noise. Each case names its bound in `TOLERANCES`: the maximum mean
absolute difference, in 8-bit levels averaged over every channel of every pixel.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Final

import numpy as np
import pytest
from PIL import Image, ImageFilter, ImageOps

from tests.conftest import SAMPLES, Client, open_image

Reference = Callable[[Image.Image], Image.Image]

BICUBIC: Final = Image.Resampling.BICUBIC

# Maximum mean absolute difference per kind of comparison, in 8-bit levels.
TOLERANCES: Final = {
    # Antialiased bicubic in torch and Pillow agree to within rounding.
    "exact_resize": 0.5,
    # Pillow's GaussianBlur approximates the Gaussian with three box blurs.
    "blur": 1.5,
    # Bilinear sampling positions differ slightly at the rotated edges.
    "rotate": 2.0,
    # The reference goes through the same lossy encoder at the same quality, which amplifies the
    # small resize differences a little.
    "lossy": 1.5,
    # WebP and AVIF encoders choose different coding modes for inputs that differ by under one
    # level: adding +-1 noise (mean 0.66) to the input changed their outputs by about 3.4 levels.
    "lossy_modes": 4.0,
    # GIF quantises to a 256-colour palette with dithering.
    "palette": 12.0,
    # Decoding at a reduced DCT scale (shrink-on-load) averages differently from a full decode
    # followed by an antialiased resize.
    "shrink_on_load": 2.0,
}


def resized(width: int, height: int) -> Reference:
    return lambda image: image.resize((width, height), BICUBIC)


def then(first: Reference, second: Reference) -> Reference:
    return lambda image: second(first(image))


def cropped(left: int, top: int, width: int, height: int) -> Reference:
    return lambda image: image.crop((left, top, left + width, top + height))


def padded(width: int, height: int, left: int, top: int, fill: tuple[int, ...]) -> Reference:
    def pad(image: Image.Image) -> Image.Image:
        canvas = Image.new("RGBA", (width, height), fill)
        canvas.paste(image.convert("RGBA"), (left, top))
        return canvas

    return pad


def grayscale(image: Image.Image) -> Image.Image:
    return image.convert("L").convert("RGB")


def tinted(color: tuple[int, int, int]) -> Reference:
    return lambda image: ImageOps.colorize(image.convert("L"), black=(0, 0, 0), white=color)


def blurred(sigma: float) -> Reference:
    return lambda image: image.filter(ImageFilter.GaussianBlur(sigma))


def rotated(degrees: float) -> Reference:
    # Pillow rotates counter-clockwise; the URL API's rot is clockwise.
    def rotate(image: Image.Image) -> Image.Image:
        return image.convert("RGBA").rotate(
            -degrees, resample=Image.Resampling.BILINEAR, expand=True
        )

    return rotate


def transposed(*methods: Image.Transpose) -> Reference:
    def transpose(image: Image.Image) -> Image.Image:
        for method in methods:
            image = image.transpose(method)
        return image

    return transpose


def encoded(fmt: str, quality: int) -> Reference:
    def encode(image: Image.Image) -> Image.Image:
        buffer = io.BytesIO()
        image.save(buffer, fmt, quality=quality)
        return open_image(buffer.getvalue())

    return encode


# DSCN0010.jpg is 640x480; a 320 px wide result is 320x240.
HALF: Final = resized(320, 240)

CASES: Final = [
    pytest.param("w=320&format=png", HALF, "exact_resize", id="w"),
    pytest.param("h=120&format=png", resized(160, 120), "shrink_on_load", id="h"),
    pytest.param("w=200&h=200&format=png", resized(200, 150), "exact_resize", id="w h inside"),
    pytest.param(
        "w=200&h=200&fit=crop&format=png",
        then(resized(267, 200), cropped(33, 0, 200, 200)),
        "exact_resize",
        id="fit=crop centre",
    ),
    pytest.param(
        "w=200&h=200&fit=crop&crop=left&format=png",
        then(resized(267, 200), cropped(0, 0, 200, 200)),
        "exact_resize",
        id="crop=left",
    ),
    pytest.param(
        "w=200&h=200&fit=crop&crop=right&format=png",
        then(resized(267, 200), cropped(67, 0, 200, 200)),
        "exact_resize",
        id="crop=right",
    ),
    pytest.param(
        "w=200&h=100&fit=crop&crop=top&format=png",
        then(resized(200, 150), cropped(0, 0, 200, 100)),
        "exact_resize",
        id="crop=top",
    ),
    pytest.param(
        "w=200&h=100&fit=crop&crop=bottom,right&format=png",
        then(resized(200, 150), cropped(0, 50, 200, 100)),
        "exact_resize",
        id="crop=bottom,right",
    ),
    pytest.param(
        "w=200&h=200&fit=scale&format=png", resized(200, 200), "exact_resize", id="fit=scale"
    ),
    pytest.param(
        "w=200&h=200&fit=pad&format=png",
        then(resized(200, 150), padded(200, 200, 0, 25, (0, 0, 0, 0))),
        "exact_resize",
        id="fit=pad transparent",
    ),
    pytest.param(
        "w=200&h=200&fit=pad&bg=00ff00&format=png",
        then(resized(200, 150), padded(200, 200, 0, 25, (0, 255, 0, 255))),
        "exact_resize",
        id="fit=pad bg",
    ),
    pytest.param(
        "w=320&mono=000000&format=png", then(HALF, grayscale), "exact_resize", id="mono gray"
    ),
    pytest.param(
        "w=320&mono=ff8000&format=png",
        then(HALF, tinted((255, 128, 0))),
        "exact_resize",
        id="mono tint",
    ),
    pytest.param("w=320&blur=5&format=png", then(HALF, blurred(5)), "blur", id="blur 5"),
    pytest.param("w=320&blur=30&format=png", then(HALF, blurred(30)), "blur", id="blur 30"),
    pytest.param(
        "w=320&rot=90&format=png",
        then(HALF, transposed(Image.Transpose.ROTATE_270)),
        "exact_resize",
        id="rot=90",
    ),
    pytest.param(
        "w=320&rot=180&format=png",
        then(HALF, transposed(Image.Transpose.ROTATE_180)),
        "exact_resize",
        id="rot=180",
    ),
    pytest.param("w=320&rot=30&format=png", then(HALF, rotated(30)), "rotate", id="rot=30"),
    pytest.param(
        "w=320&flip=h&format=png",
        then(HALF, transposed(Image.Transpose.FLIP_LEFT_RIGHT)),
        "exact_resize",
        id="flip=h",
    ),
    pytest.param(
        "w=320&flip=v&format=png",
        then(HALF, transposed(Image.Transpose.FLIP_TOP_BOTTOM)),
        "exact_resize",
        id="flip=v",
    ),
    pytest.param(
        "w=320&flip=hv&format=png",
        then(HALF, transposed(Image.Transpose.ROTATE_180)),
        "exact_resize",
        id="flip=hv",
    ),
    pytest.param("w=160&dpr=2&format=png", HALF, "exact_resize", id="dpr"),
    pytest.param("w=320&q=50", then(HALF, encoded("JPEG", 50)), "lossy", id="q jpeg"),
    pytest.param("w=320&fm=webp", then(HALF, encoded("WEBP", 75)), "lossy_modes", id="fm=webp"),
    pytest.param(
        "w=320&format=avif&q=70", then(HALF, encoded("AVIF", 70)), "lossy_modes", id="format=avif"
    ),
    pytest.param("w=320&format=gif", HALF, "palette", id="format=gif"),
    pytest.param(
        "w=320&auto=compress", then(HALF, encoded("JPEG", 60)), "lossy", id="auto=compress"
    ),
]


@pytest.fixture(scope="module")
def dscn() -> Image.Image:
    with Image.open(SAMPLES / "DSCN0010.jpg") as image:
        return image.convert("RGB")


def mean_abs_diff(result: Image.Image, reference: Image.Image) -> float:
    mode = "RGBA" if "A" in result.mode or "A" in reference.mode else "RGB"
    actual = np.asarray(result.convert(mode), dtype=np.float64)
    expected = np.asarray(reference.convert(mode), dtype=np.float64)
    if mode == "RGBA":
        # Colour under full transparency is invisible and encoders may store anything there.
        actual[..., :3] *= actual[..., 3:] / 255
        expected[..., :3] *= expected[..., 3:] / 255
    return float(np.abs(actual - expected).mean())


@pytest.mark.parametrize(("query", "reference", "tolerance"), CASES)
async def test_parameter_matches_pillow(
    client: Client, dscn: Image.Image, query: str, reference: Reference, tolerance: str
) -> None:
    response = await client.get(f"/DSCN0010.jpg?{query}")
    result = open_image(await response.read())
    expected = reference(dscn)

    assert response.status == 200
    assert result.size == expected.size
    assert mean_abs_diff(result, expected) <= TOLERANCES[tolerance]


async def test_mono_gray_is_gray(client: Client) -> None:
    response = await client.get("/DSCN0010.jpg?w=100&mono=000000&format=png")
    pixels = np.asarray(open_image(await response.read()).convert("RGB"), dtype=np.int16)
    assert np.abs(pixels[..., 0] - pixels[..., 1]).max() == 0
    assert np.abs(pixels[..., 1] - pixels[..., 2]).max() == 0


async def test_rotation_fills_jpeg_corners_white(client: Client) -> None:
    response = await client.get("/DSCN0010.jpg?w=320&rot=45")
    result = np.asarray(open_image(await response.read()), dtype=np.int16)
    assert result.shape[:2] == (396, 396)
    assert np.abs(result[:8, :8] - 255).max() <= 4


async def test_rotation_fills_bg_colour(client: Client) -> None:
    response = await client.get("/DSCN0010.jpg?w=320&rot=45&bg=0000ff&format=png")
    result = open_image(await response.read()).convert("RGBA")
    assert result.getpixel((2, 2)) == (0, 0, 255, 255)


async def test_rotation_after_resize_uses_upright_size(client: Client, tmp_path: Path) -> None:
    # The URL API sizes the upright image before rot: 70x46 with w=35&rot=90 gives 23x35.
    response = await client.get("/DSCN0010.jpg?w=35&rot=90")
    assert open_image(await response.read()).size == (26, 35)


async def test_quality_changes_size(client: Client) -> None:
    low = await (await client.get("/DSCN0010.jpg?w=320&q=20")).read()
    high = await (await client.get("/DSCN0010.jpg?w=320&q=95")).read()
    assert len(low) < len(high) / 2


async def test_shrink_on_load_matches_full_decode(client: Client) -> None:
    response = await client.get("/jolla.jpg?w=300&format=png")
    with Image.open(SAMPLES / "jolla.jpg") as image:
        expected = image.convert("RGB").resize((300, 225), BICUBIC)
    result = open_image(await response.read())
    assert result.size == (300, 225)
    assert mean_abs_diff(result, expected) <= TOLERANCES["shrink_on_load"]


async def test_orientation_matches_exif_transpose(client: Client) -> None:
    response = await client.get("/canon_hdr_NO.jpg?w=300&format=png")
    with Image.open(SAMPLES / "canon_hdr_NO.jpg") as image:
        upright = ImageOps.exif_transpose(image).convert("RGB")
    expected = upright.resize((300, 400), BICUBIC)
    result = open_image(await response.read())
    assert result.size == (300, 400)
    assert mean_abs_diff(result, expected) <= TOLERANCES["shrink_on_load"]
