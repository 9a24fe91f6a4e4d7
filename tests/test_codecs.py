"""Tests for sniffing, probing, decoding and encoding images with Pillow."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import pytest
import torch
from PIL import Image, PngImagePlugin

import darkroom_gpu
from darkroom_gpu.codecs import (
    MEDIA_TYPES,
    ImageFormat,
    decode,
    default_quality,
    encodable_formats,
    encode,
    probe,
    sniff,
)
from darkroom_gpu.errors import UnprocessableImageError, UnsupportedMediaTypeError
from darkroom_gpu.geometry import Size
from darkroom_gpu.options import OutputFormat

SAMPLES: Final = Path(darkroom_gpu.__file__).parent / "samples"
EXIF_ORIENTATION_DIR: Final = Path(__file__).parent / "data" / "exif-orientation"
PNG_SIGNATURE: Final = b"\x89PNG\r\n\x1a\n"
MAX_PIXELS: Final = 50_000_000

# Largest mean absolute difference, in 8-bit levels per channel, between the pixels given to
# encode() and the pixels Pillow decodes back at quality 90. GIF loses the most because it
# quantises the 3072-colour test gradient to a 256-colour palette. Measured with Pillow 13.0:
# JPEG 0.7, WebP 1.5, AVIF 1.0 and GIF 3.9, so each bound is at least twice the measured value.
ROUND_TRIP_MEAN_TOLERANCE: Final = {
    OutputFormat.PNG: 0.0,
    OutputFormat.JPEG: 3.0,
    OutputFormat.WEBP: 4.0,
    OutputFormat.AVIF: 4.0,
    OutputFormat.GIF: 8.0,
}
# Mode Pillow opens each encoded format in, for RGB and for RGBA input.
REOPENED_MODES: Final = {
    OutputFormat.PNG: ("RGB", "RGBA"),
    OutputFormat.JPEG: ("RGB", None),
    OutputFormat.WEBP: ("RGB", "RGBA"),
    OutputFormat.AVIF: ("RGB", "RGBA"),
    OutputFormat.GIF: ("P", "P"),
}


def save_with_pillow(image: Image.Image, pillow_format: str, **params: Any) -> bytes:
    """Encode `image` with Pillow directly, independent of the code under test."""
    buffer = io.BytesIO()
    image.save(buffer, pillow_format, **params)
    return buffer.getvalue()


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    """Build one PNG chunk: length, type, payload and the CRC-32 of type and payload."""
    crc = zlib.crc32(kind + payload)
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def iso_ftyp(major: bytes, *compatible: bytes) -> bytes:
    """Build an ISO-BMFF ``ftyp`` box as HEIF and AVIF files start with."""
    payload = major + b"\x00\x00\x00\x00" + b"".join(compatible)
    return struct.pack(">I", 8 + len(payload)) + b"ftyp" + payload


def gradient(width: int, height: int) -> npt.NDArray[np.uint8]:
    """Return an (H, W, 3) uint8 image: red rises left to right, green top to bottom."""
    y, x = np.mgrid[0:height, 0:width]
    red = x * 255 // max(width - 1, 1)
    green = y * 255 // max(height - 1, 1)
    blue = np.full_like(x, 128)
    return np.stack([red, green, blue], axis=-1).astype(np.uint8)


def half_transparent(width: int, height: int) -> npt.NDArray[np.uint8]:
    """Return an (H, W, 4) uint8 gradient, opaque in the left half and transparent in the right."""
    alpha = np.where(np.arange(width) < width // 2, 255, 0).astype(np.uint8)
    alpha_plane = np.broadcast_to(alpha, (height, width))
    return np.dstack([gradient(width, height), alpha_plane])


def to_tensor(array: npt.NDArray[np.uint8]) -> torch.Tensor:
    """Turn an (H, W, C) array into the (C, H, W) uint8 layout the codecs use."""
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()


def to_array(pixels: torch.Tensor) -> npt.NDArray[np.uint8]:
    """Turn (C, H, W) uint8 pixels into an (H, W, C) array."""
    array: npt.NDArray[np.uint8] = pixels.permute(1, 2, 0).numpy()
    return array


def mean_abs_difference(first: npt.NDArray[Any], second: npt.NDArray[Any]) -> float:
    return float(np.abs(first.astype(np.int32) - second.astype(np.int32)).mean())


@pytest.fixture(scope="module")
def dscn_bytes() -> bytes:
    return (SAMPLES / "DSCN0010.jpg").read_bytes()


@pytest.fixture(scope="module")
def jolla_bytes() -> bytes:
    return (SAMPLES / "jolla.jpg").read_bytes()


@pytest.fixture
def palette_with_trns() -> bytes:
    """A 4x2 palette PNG whose index 1 is transparent through a tRNS chunk."""
    image = Image.new("P", (4, 2), 0)
    image.putpalette([255, 0, 0, 0, 0, 255])
    image.putpixel((3, 1), 1)
    return save_with_pillow(image, "PNG", transparency=1)


class PixelsDecodedError(Exception):
    """A PNG's pixels were decoded where a test expects only its header to be read."""


@pytest.fixture
def png_pixels_forbidden(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make decoding PNG pixels raise `PixelsDecodedError` for the rest of the test."""

    def forbidden_load(self: Image.Image) -> None:
        raise PixelsDecodedError

    monkeypatch.setattr(PngImagePlugin.PngImageFile, "load", forbidden_load)


def animated(pillow_format: str, frame_count: int) -> bytes:
    colours = ["red", "green", "blue", "white"][:frame_count]
    frames = [Image.new("RGB", (8, 6), colour) for colour in colours]
    return save_with_pillow(
        frames[0], pillow_format, save_all=True, append_images=frames[1:], duration=100
    )


# --- sniff ---------------------------------------------------------------------------------

SNIFF_CASES = [
    pytest.param(b"\xff\xd8\xff\xe0\x00\x10JFIF\x00", ImageFormat.JPEG, id="JPEG JFIF"),
    pytest.param(b"\xff\xd8\xff\xe1\x00\x10Exif\x00", ImageFormat.JPEG, id="JPEG Exif"),
    pytest.param(PNG_SIGNATURE + b"\x00\x00\x00\rIHDR", ImageFormat.PNG, id="PNG"),
    pytest.param(b"GIF87a\x01\x00\x01\x00", ImageFormat.GIF, id="GIF87a"),
    pytest.param(b"GIF89a\x01\x00\x01\x00", ImageFormat.GIF, id="GIF89a"),
    pytest.param(b"RIFF\x24\x00\x00\x00WEBPVP8 ", ImageFormat.WEBP, id="WebP"),
    pytest.param(b"II*\x00\x08\x00\x00\x00", ImageFormat.TIFF, id="TIFF little-endian"),
    pytest.param(b"MM\x00*\x00\x00\x00\x08", ImageFormat.TIFF, id="TIFF big-endian"),
    pytest.param(b"BM" + bytes(24), ImageFormat.BMP, id="BMP"),
    pytest.param(iso_ftyp(b"avif", b"mif1", b"miaf"), ImageFormat.AVIF, id="AVIF major"),
    pytest.param(iso_ftyp(b"avis", b"msf1"), ImageFormat.AVIF, id="AVIF sequence"),
    pytest.param(iso_ftyp(b"mif1", b"avif", b"miaf"), ImageFormat.AVIF, id="AVIF compatible"),
    pytest.param(iso_ftyp(b"heic", b"mif1", b"heic"), ImageFormat.HEIF, id="HEIC major"),
    pytest.param(iso_ftyp(b"mif1", b"heic"), ImageFormat.HEIF, id="HEIC compatible"),
    pytest.param(iso_ftyp(b"heix"), ImageFormat.HEIF, id="HEIX"),
    pytest.param(iso_ftyp(b"isom", b"mp42"), None, id="MP4 video"),
    pytest.param(iso_ftyp(b"qt  "), None, id="QuickTime video"),
    pytest.param(b"", None, id="empty"),
    pytest.param(b"<!DOCTYPE html><html><body>Not found</body></html>", None, id="HTML"),
    pytest.param(b"\xef\xbb\xbf<svg xmlns='http://www.w3.org/2000/svg'/>", None, id="SVG"),
    pytest.param(b"%PDF-1.7\n", None, id="PDF"),
    pytest.param(b"RIFF\x24\x00\x00\x00WAVEfmt ", None, id="RIFF WAVE"),
    pytest.param(b"\xff\xd8", None, id="JPEG magic cut"),
    pytest.param(PNG_SIGNATURE[:4], None, id="PNG magic cut"),
    pytest.param(b"GIF8", None, id="GIF magic cut"),
    pytest.param(b"GIF88a", None, id="GIF unknown version"),
    pytest.param(b"RIFF\x24\x00\x00\x00WEB", None, id="WebP magic cut"),
    pytest.param(b"II*", None, id="TIFF magic cut"),
    pytest.param(b"BM", None, id="BMP magic cut"),
    pytest.param(b"BM" + bytes(10), None, id="BMP header cut"),
    pytest.param(b"\x00\x00\x00\x18ftyp", None, id="ftyp without brand"),
]


@pytest.mark.parametrize(("data", "expected"), SNIFF_CASES)
def test_sniff_magic_bytes(data: bytes, expected: ImageFormat | None) -> None:
    assert sniff(data) == expected


PILLOW_FORMATS = [
    pytest.param("JPEG", ImageFormat.JPEG, id="JPEG"),
    pytest.param("PNG", ImageFormat.PNG, id="PNG"),
    pytest.param("GIF", ImageFormat.GIF, id="GIF"),
    pytest.param("WEBP", ImageFormat.WEBP, id="WebP"),
    pytest.param("TIFF", ImageFormat.TIFF, id="TIFF"),
    pytest.param("BMP", ImageFormat.BMP, id="BMP"),
    pytest.param("AVIF", ImageFormat.AVIF, id="AVIF"),
    pytest.param("HEIF", ImageFormat.HEIF, id="HEIF"),
]


@pytest.mark.parametrize(("pillow_format", "expected"), PILLOW_FORMATS)
def test_sniff_pillow_output(pillow_format: str, expected: ImageFormat) -> None:
    data = save_with_pillow(Image.new("RGB", (4, 3), "red"), pillow_format)

    assert sniff(data) == expected


def test_media_types_cover_every_format() -> None:
    assert set(MEDIA_TYPES) == {fmt.value for fmt in ImageFormat}


# --- probe ---------------------------------------------------------------------------------


def test_probe_canon_stored_size() -> None:
    info = probe((SAMPLES / "canon_hdr_NO.jpg").read_bytes())

    assert info.size == Size(width=2048, height=1536)
    assert info.orientation == 6
    assert info.format is ImageFormat.JPEG
    assert info.has_alpha is False
    assert info.frames == 1


def test_probe_jolla_size(jolla_bytes: bytes) -> None:
    info = probe(jolla_bytes)

    assert info.size == Size(width=3264, height=2448)


@pytest.mark.parametrize(
    ("file_name", "orientation"),
    [pytest.param("Landscape_0.jpg", 1, id="Landscape_0 absent tag")]
    + [pytest.param(f"Landscape_{n}.jpg", n, id=f"Landscape_{n}") for n in range(1, 9)]
    + [pytest.param(f"Portrait_{n}.jpg", n, id=f"Portrait_{n}") for n in range(1, 9)],
)
def test_probe_exif_orientation(file_name: str, orientation: int) -> None:
    info = probe((EXIF_ORIENTATION_DIR / file_name).read_bytes())

    assert info.orientation == orientation


@pytest.mark.parametrize(
    ("orientation", "size"),
    [
        pytest.param(1, Size(width=1800, height=1200), id="upright"),
        pytest.param(3, Size(width=1800, height=1200), id="half turn"),
        pytest.param(6, Size(width=1200, height=1800), id="quarter turn stored portrait"),
        pytest.param(8, Size(width=1200, height=1800), id="three quarters stored portrait"),
    ],
)
def test_probe_size_as_stored(orientation: int, size: Size) -> None:
    info = probe((EXIF_ORIENTATION_DIR / f"Landscape_{orientation}.jpg").read_bytes())

    assert info.size == size


def test_probe_png_exif_orientation() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6
    data = save_with_pillow(Image.new("RGB", (4, 2)), "PNG", exif=exif)

    info = probe(data)

    assert info.orientation == 6


def test_probe_out_of_range_orientation_is_upright() -> None:
    exif = Image.Exif()
    exif[0x0112] = 9
    data = save_with_pillow(Image.new("RGB", (4, 2)), "JPEG", exif=exif)

    info = probe(data)

    assert info.orientation == 1


ALPHA_CASES = [
    pytest.param(Image.new("RGBA", (4, 2)), "PNG", True, id="RGBA PNG"),
    pytest.param(Image.new("LA", (4, 2)), "PNG", True, id="LA PNG"),
    pytest.param(Image.new("RGB", (4, 2)), "PNG", False, id="RGB PNG"),
    pytest.param(Image.new("L", (4, 2)), "PNG", False, id="greyscale PNG"),
    pytest.param(Image.new("RGB", (4, 2)), "JPEG", False, id="JPEG"),
    pytest.param(Image.new("RGBA", (4, 2)), "WEBP", True, id="RGBA WebP"),
]


@pytest.mark.parametrize(("image", "pillow_format", "has_alpha"), ALPHA_CASES)
def test_probe_has_alpha(image: Image.Image, pillow_format: str, has_alpha: bool) -> None:
    info = probe(save_with_pillow(image, pillow_format))

    assert info.has_alpha is has_alpha


def test_probe_palette_trns_has_alpha(palette_with_trns: bytes) -> None:
    info = probe(palette_with_trns)

    assert info.has_alpha is True


@pytest.mark.parametrize(
    ("pillow_format", "image_format"),
    [
        pytest.param("GIF", ImageFormat.GIF, id="GIF"),
        pytest.param("WEBP", ImageFormat.WEBP, id="WebP"),
        pytest.param("PNG", ImageFormat.PNG, id="APNG"),
    ],
)
def test_probe_animation_frames(pillow_format: str, image_format: ImageFormat) -> None:
    info = probe(animated(pillow_format, 3))

    assert info.format is image_format
    assert info.frames == 3


def test_probe_still_gif_one_frame() -> None:
    info = probe(save_with_pillow(Image.new("RGB", (8, 6)), "GIF"))

    assert info.frames == 1


@pytest.mark.usefixtures("png_pixels_forbidden")
def test_probe_does_not_decode_pixels() -> None:
    data = save_with_pillow(Image.new("RGB", (64, 48), "red"), "PNG")

    info = probe(data)

    assert info.size == Size(width=64, height=48)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"<html><body>404</body></html>", id="HTML"),
    ],
)
def test_probe_unsupported(data: bytes) -> None:
    with pytest.raises(UnsupportedMediaTypeError, match="not an image in a supported format"):
        probe(data)


def test_probe_magic_only_unprocessable() -> None:
    with pytest.raises(UnprocessableImageError, match="jpeg image is corrupt or truncated"):
        probe(b"\xff\xd8\xff")


def test_probe_heif_header_only_unprocessable() -> None:
    data = iso_ftyp(b"heic", b"mif1") + bytes(64)

    with pytest.raises(UnprocessableImageError, match="heif image is corrupt or truncated"):
        probe(data)


# --- decode --------------------------------------------------------------------------------


def test_decode_jpeg_shape_and_dtype(dscn_bytes: bytes) -> None:
    decoded = decode(dscn_bytes, max_pixels=MAX_PIXELS)

    assert decoded.pixels.shape == (3, 480, 640)
    assert decoded.pixels.dtype == torch.uint8
    assert decoded.pixels.unsqueeze(0).is_contiguous(memory_format=torch.channels_last)


def test_decode_keeps_stored_orientation() -> None:
    decoded = decode((SAMPLES / "canon_hdr_NO.jpg").read_bytes(), max_pixels=MAX_PIXELS)

    assert decoded.pixels.shape == (3, 1536, 2048)
    assert decoded.info.orientation == 6


def test_decode_png_exact_pixels() -> None:
    expected = gradient(16, 12)

    decoded = decode(save_with_pillow(Image.fromarray(expected), "PNG"), max_pixels=MAX_PIXELS)

    assert np.array_equal(to_array(decoded.pixels), expected)


def test_decode_rgba_png_exact_pixels() -> None:
    expected = half_transparent(16, 12)

    decoded = decode(save_with_pillow(Image.fromarray(expected), "PNG"), max_pixels=MAX_PIXELS)

    assert decoded.pixels.shape == (4, 12, 16)
    assert np.array_equal(to_array(decoded.pixels), expected)


def test_decode_palette_trns_alpha(palette_with_trns: bytes) -> None:
    decoded = decode(palette_with_trns, max_pixels=MAX_PIXELS)

    assert decoded.pixels.shape == (4, 2, 4)
    assert decoded.pixels[:, 0, 0].tolist() == [255, 0, 0, 255]
    assert decoded.pixels[:, 1, 3].tolist()[3] == 0


def test_decode_la_png_alpha() -> None:
    image = Image.new("LA", (4, 2), (200, 255))
    image.putpixel((1, 0), (50, 0))

    decoded = decode(save_with_pillow(image, "PNG"), max_pixels=MAX_PIXELS)

    assert decoded.pixels.shape == (4, 2, 4)
    assert decoded.pixels[:, 0, 0].tolist() == [200, 200, 200, 255]
    assert decoded.pixels[3, 0, 1].item() == 0


def test_decode_greyscale_to_rgb() -> None:
    decoded = decode(save_with_pillow(Image.new("L", (4, 2), 77), "PNG"), max_pixels=MAX_PIXELS)

    assert decoded.pixels.shape == (3, 2, 4)
    assert decoded.pixels[:, 1, 3].tolist() == [77, 77, 77]


def test_decode_sixteen_bit_grey_scales_down() -> None:
    samples = (np.arange(16, dtype=np.uint16) * 4096 + 255).reshape(2, 8)
    data = save_with_pillow(Image.fromarray(samples), "PNG")

    decoded = decode(data, max_pixels=MAX_PIXELS)

    expected = np.round(samples / 257).astype(np.uint8)
    assert decoded.pixels.shape == (3, 2, 8)
    assert np.array_equal(decoded.pixels[0].numpy(), expected)


def test_decode_sixteen_bit_grey_trns_alpha() -> None:
    samples = np.array([[0, 1000, 65535]], dtype=np.uint16)
    data = save_with_pillow(Image.fromarray(samples), "PNG", transparency=1000)

    decoded = decode(data, max_pixels=MAX_PIXELS)

    assert decoded.pixels.shape == (4, 1, 3)
    assert decoded.pixels[3, 0].tolist() == [255, 0, 255]


def test_decode_cmyk_jpeg_to_rgb() -> None:
    data = save_with_pillow(Image.new("CMYK", (8, 6), (0, 0, 0, 0)), "JPEG", quality=95)

    decoded = decode(data, max_pixels=MAX_PIXELS)

    assert decoded.pixels.shape == (3, 6, 8)


@pytest.mark.parametrize("pillow_format", ["BMP", "TIFF"])
def test_decode_lossless_formats_exact(pillow_format: str) -> None:
    expected = gradient(8, 6)
    data = save_with_pillow(Image.fromarray(expected), pillow_format)

    decoded = decode(data, max_pixels=MAX_PIXELS)

    assert np.array_equal(to_array(decoded.pixels), expected)


@pytest.mark.parametrize(("mode", "channels"), [("RGB", 3), ("RGBA", 4)])
def test_decode_heif(mode: str, channels: int) -> None:
    colour = (200, 30, 40, 120)[: len(mode)]
    data = save_with_pillow(Image.new(mode, (16, 12), colour), "HEIF", quality=95)

    decoded = decode(data, max_pixels=MAX_PIXELS)

    assert decoded.info.format is ImageFormat.HEIF
    assert decoded.pixels.shape == (channels, 12, 16)
    assert np.abs(decoded.pixels[:, 6, 8].numpy().astype(int) - colour).max() <= 3


def test_decode_gif_first_frame() -> None:
    decoded = decode(animated("GIF", 3), max_pixels=MAX_PIXELS)

    assert decoded.pixels[:, 0, 0].tolist() == [255, 0, 0]


def test_decode_shrink_on_load(jolla_bytes: bytes) -> None:
    draft = Size(width=300, height=225)

    decoded = decode(jolla_bytes, max_pixels=MAX_PIXELS, draft_size=draft)

    _, height, width = decoded.pixels.shape
    assert width < 3264
    assert height < 2448
    assert width >= 2 * draft.width
    assert height >= 2 * draft.height


def test_decode_shrink_on_load_keeps_stored_size(jolla_bytes: bytes) -> None:
    decoded = decode(jolla_bytes, max_pixels=MAX_PIXELS, draft_size=Size(width=300, height=225))

    assert decoded.info.size == Size(width=3264, height=2448)


def test_decode_draft_near_full_size_not_shrunk(jolla_bytes: bytes) -> None:
    decoded = decode(jolla_bytes, max_pixels=MAX_PIXELS, draft_size=Size(width=2000, height=1500))

    assert decoded.pixels.shape == (3, 2448, 3264)


def test_decode_draft_ignored_for_png() -> None:
    data = save_with_pillow(Image.fromarray(gradient(64, 48)), "PNG")

    decoded = decode(data, max_pixels=MAX_PIXELS, draft_size=Size(width=4, height=3))

    assert decoded.pixels.shape == (3, 48, 64)


def test_decode_at_max_pixels_allowed(dscn_bytes: bytes) -> None:
    decoded = decode(dscn_bytes, max_pixels=640 * 480)

    assert decoded.pixels.shape == (3, 480, 640)


def test_decode_over_max_pixels_rejected(dscn_bytes: bytes) -> None:
    with pytest.raises(UnprocessableImageError, match="over this source's limit of 307199"):
        decode(dscn_bytes, max_pixels=640 * 480 - 1)


def test_decode_declared_huge_png_rejected() -> None:
    header = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    one_row = zlib.compress(b"\x00" * (1 + 3 * 100_000))
    data = (
        PNG_SIGNATURE
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", one_row)
        + png_chunk(b"IEND", b"")
    )

    with pytest.raises(UnprocessableImageError, match="100000x100000"):
        decode(data, max_pixels=MAX_PIXELS)


@pytest.mark.usefixtures("png_pixels_forbidden")
def test_decode_limit_checked_before_pixels() -> None:
    data = save_with_pillow(Image.new("RGB", (64, 48), "red"), "PNG")

    with pytest.raises(UnprocessableImageError, match="over this source's limit"):
        decode(data, max_pixels=100)


def test_decode_truncated_jpeg(dscn_bytes: bytes) -> None:
    with pytest.raises(UnprocessableImageError, match="jpeg image is corrupt or truncated"):
        decode(dscn_bytes[: len(dscn_bytes) // 2], max_pixels=MAX_PIXELS)


def test_decode_truncated_png() -> None:
    data = save_with_pillow(Image.fromarray(gradient(64, 48)), "PNG")

    with pytest.raises(UnprocessableImageError, match="png image is truncated"):
        decode(data[: len(data) // 2], max_pixels=MAX_PIXELS)


def test_decode_corrupt_png_idat() -> None:
    data = bytearray(save_with_pillow(Image.new("RGB", (64, 64), "red"), "PNG"))
    idat = data.index(b"IDAT")
    length = int.from_bytes(data[idat - 4 : idat], "big")
    for offset in range(idat + 6, idat + 20):
        data[offset] ^= 0xFF
    # A matching CRC lets the damaged stream reach the decompressor.
    crc = zlib.crc32(data[idat : idat + 4 + length])
    data[idat + 4 + length : idat + 8 + length] = crc.to_bytes(4, "big")

    with pytest.raises(UnprocessableImageError, match="png image is corrupt or truncated"):
        decode(bytes(data), max_pixels=MAX_PIXELS)


def test_decode_png_bad_crc_rejected() -> None:
    data = bytearray(save_with_pillow(Image.new("RGB", (64, 64), "red"), "PNG"))
    idat = data.index(b"IDAT")
    length = int.from_bytes(data[idat - 4 : idat], "big")
    data[idat + 4 + length] ^= 0xFF

    with pytest.raises(UnprocessableImageError, match="the 'IDAT' chunk's CRC is wrong"):
        decode(bytes(data), max_pixels=MAX_PIXELS)


def test_decode_truncated_gif() -> None:
    data = save_with_pillow(Image.fromarray(gradient(64, 48)).convert("P"), "GIF")

    with pytest.raises(UnprocessableImageError, match="gif image is corrupt or truncated"):
        decode(data[: len(data) // 2], max_pixels=MAX_PIXELS)


UNSUPPORTED_INPUTS = [
    pytest.param(b"", id="empty"),
    pytest.param(b"<!DOCTYPE html>\n<html><body>Not found</body></html>\n", id="HTML as .jpg"),
    pytest.param(b"just some text", id="plain text"),
]


@pytest.mark.parametrize("data", UNSUPPORTED_INPUTS)
def test_decode_unsupported(data: bytes) -> None:
    with pytest.raises(UnsupportedMediaTypeError, match="not an image in a supported format"):
        decode(data, max_pixels=MAX_PIXELS)


def test_decode_empty_file_from_disk(tmp_path: Path) -> None:
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")

    with pytest.raises(UnsupportedMediaTypeError, match="not an image"):
        decode(path.read_bytes(), max_pixels=MAX_PIXELS)


# --- encode --------------------------------------------------------------------------------

ENCODABLE = sorted(encodable_formats())


@pytest.mark.parametrize("fmt", ENCODABLE, ids=str)
def test_encode_rgb_round_trip(fmt: OutputFormat) -> None:
    expected = gradient(64, 48)

    data = encode(to_tensor(expected), fmt, 90)

    with Image.open(io.BytesIO(data)) as reopened:
        assert reopened.size == (64, 48)
        assert reopened.mode == REOPENED_MODES[fmt][0]
        actual = np.asarray(reopened.convert("RGB"))
    assert mean_abs_difference(actual, expected) <= ROUND_TRIP_MEAN_TOLERANCE[fmt]


@pytest.mark.parametrize("fmt", [fmt for fmt in ENCODABLE if fmt is not OutputFormat.JPEG], ids=str)
def test_encode_rgba_round_trip(fmt: OutputFormat) -> None:
    expected = half_transparent(64, 48)

    data = encode(to_tensor(expected), fmt, 90)

    with Image.open(io.BytesIO(data)) as reopened:
        assert reopened.size == (64, 48)
        assert reopened.mode == REOPENED_MODES[fmt][1]
        actual = np.asarray(reopened.convert("RGBA"))
    opaque = expected[..., 3] == 255
    tolerance = ROUND_TRIP_MEAN_TOLERANCE[fmt]
    assert mean_abs_difference(actual[..., 3], expected[..., 3]) <= tolerance
    assert mean_abs_difference(actual[opaque][:, :3], expected[opaque][:, :3]) <= tolerance


@pytest.mark.parametrize("fmt", ENCODABLE, ids=str)
def test_encode_output_sniffs_as_format(fmt: OutputFormat) -> None:
    data = encode(to_tensor(gradient(16, 12)), fmt, 80)

    assert sniff(data) == ImageFormat(fmt.value)


@pytest.mark.parametrize(
    "fmt",
    [fmt for fmt in ENCODABLE if fmt in (OutputFormat.JPEG, OutputFormat.WEBP, OutputFormat.AVIF)],
    ids=str,
)
def test_encode_lower_quality_smaller(fmt: OutputFormat, dscn_bytes: bytes) -> None:
    pixels = decode(dscn_bytes, max_pixels=MAX_PIXELS).pixels

    low = encode(pixels, fmt, 30)
    high = encode(pixels, fmt, 90)

    assert len(low) < len(high)


def test_encode_accepts_non_contiguous_input() -> None:
    expected = gradient(16, 12)
    channels_last = torch.from_numpy(expected.copy()).permute(2, 0, 1)

    data = encode(channels_last, OutputFormat.PNG, 100)

    with Image.open(io.BytesIO(data)) as reopened:
        assert np.array_equal(np.asarray(reopened), expected)


def test_encode_grey_jpeg_has_one_channel() -> None:
    pixels = torch.full((3, 8, 8), 77, dtype=torch.uint8)

    image = Image.open(io.BytesIO(encode(pixels, OutputFormat.JPEG, 90)))

    assert image.mode == "L"


@pytest.mark.parametrize("progressive", [False, True])
def test_encode_progressive_jpeg(progressive: bool) -> None:
    pixels = to_tensor(gradient(32, 24))

    data = encode(pixels, OutputFormat.JPEG, 80, progressive=progressive)

    assert bool(Image.open(io.BytesIO(data)).info.get("progressive")) is progressive


def test_encode_does_not_mutate_input() -> None:
    pixels = to_tensor(half_transparent(16, 12))
    before = pixels.clone()

    encode(pixels, OutputFormat.PNG, 100)

    assert torch.equal(pixels, before)


def test_encodable_formats_always_include_basics() -> None:
    assert {OutputFormat.JPEG, OutputFormat.PNG, OutputFormat.GIF} <= encodable_formats()


# --- default_quality -----------------------------------------------------------------------

QUALITY_CASES = [
    pytest.param(OutputFormat.JPEG, False, 80, id="JPEG"),
    pytest.param(OutputFormat.WEBP, False, 75, id="WebP"),
    pytest.param(OutputFormat.AVIF, False, 60, id="AVIF"),
    pytest.param(OutputFormat.JPEG, True, 60, id="JPEG compress"),
    pytest.param(OutputFormat.WEBP, True, 60, id="WebP compress"),
    pytest.param(OutputFormat.AVIF, True, 45, id="AVIF compress"),
    pytest.param(OutputFormat.PNG, False, 100, id="PNG lossless"),
    pytest.param(OutputFormat.GIF, True, 100, id="GIF compress ignored"),
]


@pytest.mark.parametrize(("fmt", "compress", "quality"), QUALITY_CASES)
def test_default_quality(fmt: OutputFormat, compress: bool, quality: int) -> None:
    assert default_quality(fmt, compress=compress) == quality


@pytest.mark.parametrize("fmt", list(OutputFormat), ids=str)
def test_default_quality_in_range(fmt: OutputFormat) -> None:
    for compress in (False, True):
        assert 1 <= default_quality(fmt, compress=compress) <= 100, compress
