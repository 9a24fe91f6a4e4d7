"""Colour handling at decode: 16-bit rounding, CMYK and YCCK JPEGs, embedded ICC profiles."""

from __future__ import annotations

import logging
import struct
import zlib
from typing import Final

import numpy as np
import pytest
from PIL import Image, ImageCms

from darkroom_gpu.codecs import decode, probe, profile_description
from darkroom_gpu.codecs.color import from_sixteen_bit, to_eight_bit
from tests.images import (
    PNG_SIGNATURE,
    cmyk_jpeg,
    linear_grey_profile,
    png_chunk,
    png_from_samples,
    save,
    swapped_profile,
    ycck_jpeg,
)

MAX_PIXELS: Final = 1_000_000
SRGB_PROFILE: Final = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
# Largest difference, in 8-bit levels, for flat colours through a JPEG at quality 95: the DCT
# of a flat block is exact, but colour conversion and chroma rounding move a level or two.
JPEG_FLAT_TOLERANCE: Final = 3
CYAN: Final = (0, 255, 255)
MAGENTA: Final = (255, 0, 255)
BLUE: Final = (0, 0, 255)


def first_pixel(data: bytes) -> list[int]:
    pixels = decode(data, max_pixels=MAX_PIXELS).pixels
    values: list[int] = pixels[:, 0, 0].tolist()
    return values


def close_to(actual: list[int], expected: tuple[int, ...], tolerance: int) -> bool:
    return all(abs(a - e) <= tolerance for a, e in zip(actual, expected, strict=True))


# --- 16-bit samples ------------------------------------------------------------------------


def test_to_eight_bit_rounds() -> None:
    samples = np.array([0, 128, 129, 385, 386, 65406, 65407, 65535], dtype=np.uint16)

    result = to_eight_bit(samples)

    assert result.tolist() == [0, 0, 1, 1, 2, 254, 255, 255]


def test_to_eight_bit_matches_float_rounding() -> None:
    samples = np.arange(65536, dtype=np.uint16)

    result = to_eight_bit(samples)

    assert np.array_equal(result, np.round(samples / 257).astype(np.uint8))


def test_from_sixteen_bit_rgb_trns_alpha() -> None:
    samples = np.array([[[1000, 2000, 3000], [1000, 2000, 3001]]], dtype=np.uint16)

    image = from_sixteen_bit(samples, (1000, 2000, 3000))

    assert image.mode == "RGBA"
    assert np.asarray(image)[0, :, 3].tolist() == [0, 255]


def test_sixteen_bit_rgba_png_rounds() -> None:
    samples = np.array([[[257 * 10 + 128, 257 * 20 + 129, 65535, 32896]]], dtype=np.uint16)

    pixel = first_pixel(png_from_samples(samples))

    assert pixel == [10, 21, 255, 128]


def test_sixteen_bit_grey_alpha_png_rounds() -> None:
    samples = np.array([[[257 * 100 + 129, 257 * 7 + 127]]], dtype=np.uint16)

    pixel = first_pixel(png_from_samples(samples))

    assert pixel == [101, 101, 101, 7]


def test_sixteen_bit_rgb_trns_png() -> None:
    samples = np.array([[[5000, 6000, 7000], [5000, 6000, 7001]]], dtype=np.uint16)
    trns = png_chunk(b"tRNS", np.array([5000, 6000, 7000], dtype=">u2").tobytes())

    pixels = decode(png_from_samples(samples, trns), max_pixels=MAX_PIXELS).pixels

    assert pixels.shape == (4, 1, 2)
    assert pixels[3, 0].tolist() == [0, 255]


@pytest.mark.parametrize("bit_depth", [1, 2, 4])
def test_low_bit_grey_trns_marks_white(bit_depth: int) -> None:
    white = (1 << bit_depth) - 1
    # One row of two pixels, black then white, packed from the high bits; filter type 0.
    row = bytes([0, white << (8 - 2 * bit_depth)])
    header = struct.pack(">IIBBBBB", 2, 1, bit_depth, 0, 0, 0, 0)
    data = (
        PNG_SIGNATURE
        + png_chunk(b"IHDR", header)
        + png_chunk(b"tRNS", struct.pack(">H", white))
        + png_chunk(b"IDAT", zlib.compress(row))
        + png_chunk(b"IEND", b"")
    )

    pixels = decode(data, max_pixels=MAX_PIXELS).pixels

    assert pixels[:3, 0, 1].tolist() == [255, 255, 255]
    assert pixels[3, 0].tolist() == [255, 0]


# --- CMYK ----------------------------------------------------------------------------------


@pytest.mark.parametrize("make", [cmyk_jpeg, ycck_jpeg], ids=["CMYK", "YCCK"])
@pytest.mark.parametrize(
    ("ink", "expected"),
    [
        pytest.param((255, 0, 0, 0), CYAN, id="cyan"),
        pytest.param((0, 255, 0, 0), MAGENTA, id="magenta"),
        pytest.param((0, 0, 0, 0), (255, 255, 255), id="paper"),
    ],
)
def test_adobe_cmyk_jpeg_colours(
    make: object, ink: tuple[int, int, int, int], expected: tuple[int, int, int]
) -> None:
    assert callable(make)
    data = make((32, 32), ink)

    pixel = first_pixel(data)

    assert close_to(pixel, expected, JPEG_FLAT_TOLERANCE), pixel


# --- ICC profiles --------------------------------------------------------------------------


def test_rgb_profile_converted_to_srgb() -> None:
    data = save(Image.new("RGB", (4, 4), (255, 0, 0)), "PNG", icc_profile=swapped_profile())

    assert first_pixel(data) == list(BLUE)


def test_rgba_profile_keeps_alpha() -> None:
    image = Image.new("RGBA", (4, 4), (255, 0, 0, 100))
    data = save(image, "PNG", icc_profile=swapped_profile())

    assert first_pixel(data) == [*BLUE, 100]


def test_jpeg_profile_converted_to_srgb() -> None:
    image = Image.new("RGB", (16, 16), (255, 0, 0))
    data = save(image, "JPEG", quality=95, icc_profile=swapped_profile())

    assert close_to(first_pixel(data), BLUE, JPEG_FLAT_TOLERANCE)


def test_webp_profile_converted_to_srgb() -> None:
    image = Image.new("RGB", (16, 16), (255, 0, 0))
    data = save(image, "WEBP", lossless=True, icc_profile=swapped_profile())

    assert first_pixel(data) == list(BLUE)


def test_grey_profile_converted_to_srgb() -> None:
    data = save(Image.new("L", (4, 4), 128), "PNG", icc_profile=linear_grey_profile())

    assert first_pixel(data) == [188, 188, 188]


def test_srgb_profile_keeps_values() -> None:
    data = save(Image.new("RGB", (4, 4), (200, 100, 50)), "PNG", icc_profile=SRGB_PROFILE)

    assert first_pixel(data) == [200, 100, 50]


def test_profile_of_other_colour_space_ignored(caplog: pytest.LogCaptureFixture) -> None:
    # The grey profile cannot describe RGB pixels; this profile's bytes appear in no other
    # test, so the per-profile cache has not seen it.
    profile = linear_grey_profile() + b"\x00" * 4
    data = save(Image.new("RGB", (4, 4), (200, 100, 50)), "PNG", icc_profile=profile)

    with caplog.at_level(logging.WARNING, logger="darkroom_gpu.codecs.color"):
        pixel = first_pixel(data)

    assert pixel == [200, 100, 50]
    assert "colour space GRAY on RGB pixels" in caplog.text


def test_unreadable_profile_ignored(caplog: pytest.LogCaptureFixture) -> None:
    data = save(Image.new("RGB", (4, 4), (200, 100, 50)), "PNG", icc_profile=b"not a profile")

    with caplog.at_level(logging.WARNING, logger="darkroom_gpu.codecs.color"):
        pixel = first_pixel(data)

    assert pixel == [200, 100, 50]
    assert "cannot be parsed" in caplog.text


def test_probe_reads_profile() -> None:
    profile = swapped_profile()
    data = save(Image.new("RGB", (4, 4)), "PNG", icc_profile=profile)

    info = probe(data)

    assert info.icc_profile == profile
    assert profile_description(profile) == "swapped red and blue"


def test_profile_description_of_garbage_is_none() -> None:
    assert profile_description(b"garbage") is None
