"""Builders for test images that Pillow cannot write directly.

16-bit and interlace-free PNGs of any colour type, GIFs with chosen frame rectangles and
disposal methods, CMYK and YCCK JPEGs, a JPEG with a broken Huffman table, and an ICC profile
that swaps red and blue.
"""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageCms

PNG_SIGNATURE: Final = b"\x89PNG\r\n\x1a\n"
# PNG colour types by channel count of the sample array.
PNG_COLOUR_TYPES: Final = {1: 0, 2: 4, 3: 2, 4: 6}


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    """Build one PNG chunk: length, type, payload and the CRC-32 of type and payload."""
    crc = zlib.crc32(kind + payload)
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def png_from_samples(
    samples: npt.NDArray[np.uint16] | npt.NDArray[np.uint8], *chunks: bytes
) -> bytes:
    """Encode 8 or 16-bit samples as a non-interlaced PNG with filter type 0 on every row.

    Args:
        samples: ``(H, W)`` grey or ``(H, W, C)`` with C = 2 (grey, alpha), 3 (RGB) or 4
            (RGBA); uint8 gives an 8-bit PNG, uint16 a 16-bit one.
        chunks: extra chunks (such as ``tRNS``) placed before the image data.
    """
    array = samples if samples.ndim == 3 else samples[..., np.newaxis]
    height, width, channels = array.shape
    bit_depth = 16 if array.dtype == np.uint16 else 8
    header = struct.pack(">IIBBBBB", width, height, bit_depth, PNG_COLOUR_TYPES[channels], 0, 0, 0)
    rows = array.astype(">u2" if bit_depth == 16 else np.uint8).reshape(height, -1)
    raw = b"".join(b"\x00" + row.tobytes() for row in rows)
    return (
        PNG_SIGNATURE
        + png_chunk(b"IHDR", header)
        + b"".join(chunks)
        + png_chunk(b"IDAT", zlib.compress(raw))
        + png_chunk(b"IEND", b"")
    )


def save(image: Image.Image, pillow_format: str, **params: object) -> bytes:
    """Encode `image` with Pillow."""
    buffer = io.BytesIO()
    image.save(buffer, pillow_format, **params)
    return buffer.getvalue()


def cmyk_jpeg(size: tuple[int, int], ink: tuple[int, int, int, int]) -> bytes:
    """Return an Adobe CMYK JPEG of one ink colour, stored inverted as Photoshop writes it."""
    data = save(Image.new("CMYK", size, ink), "JPEG", quality=95)
    assert adobe_transform_offset(data) is not None, "Pillow wrote no Adobe APP14 marker"
    return data


def ycck_jpeg(size: tuple[int, int], ink: tuple[int, int, int, int]) -> bytes:
    """Return an Adobe YCCK JPEG of one ink colour.

    Adobe's YCCK stores Y, Cb and Cr of (C, M, Y) read as RGB, and the inverted K. Pillow
    writes the four components as given, inverted, so they are pre-inverted here, and the
    Adobe marker's transform byte is then set from 0 (CMYK) to 2 (YCCK).
    """
    cyan, magenta, yellow, black = ink
    ycc = Image.new("RGB", (1, 1), (cyan, magenta, yellow)).convert("YCbCr").getpixel((0, 0))
    assert isinstance(ycc, tuple)
    stored = (*ycc, 255 - black)
    components = tuple(255 - value for value in stored)
    data = bytearray(save(Image.new("CMYK", size, components), "JPEG", quality=95))
    offset = adobe_transform_offset(bytes(data))
    assert offset is not None
    data[offset] = 2
    return bytes(data)


def adobe_transform_offset(data: bytes) -> int | None:
    """Return the offset of the transform byte of the Adobe APP14 segment, if there is one."""
    name = data.find(b"Adobe")
    if name < 4 or data[name - 4 : name - 2] != b"\xff\xee":
        return None
    # "Adobe" (5 bytes), version (2), flags0 (2), flags1 (2), then the transform byte.
    return name + 11


def broken_huffman_table(data: bytes) -> bytes:
    """Return a JPEG whose first Huffman table before the scan claims 255 codes of every length.

    Its header still reads as a baseline JPEG and it still ends with EOI, but every decoder
    rejects the table. Segments are walked from SOI, so a table inside an EXIF thumbnail is
    skipped with its APP1 segment.
    """
    position = 2
    while position + 4 <= len(data) and data[position + 1] != 0xDA:
        length = int.from_bytes(data[position + 2 : position + 4], "big")
        if data[position + 1] == 0xC4:
            broken = bytearray(data)
            # Marker (2), length (2) and table class and id (1), then 16 code counts.
            broken[position + 5 : position + 21] = b"\xff" * 16
            return bytes(broken)
        position += 2 + length
    raise ValueError("the JPEG has no Huffman table before its scan")


def swapped_profile() -> bytes:
    """Return an sRGB profile whose red and blue colorants are swapped.

    An RGB image tagged with it shows red where its first channel is high, so a correct
    conversion to sRGB turns stored (255, 0, 0) into blue.
    """
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    data = bytearray(srgb)
    count = int.from_bytes(data[128:132], "big")
    entries = {
        bytes(data[132 + 12 * index : 136 + 12 * index]): 132 + 12 * index for index in range(count)
    }
    red, blue = entries[b"rXYZ"], entries[b"bXYZ"]
    data[red + 4 : red + 12], data[blue + 4 : blue + 12] = (
        data[blue + 4 : blue + 12],
        data[red + 4 : red + 12],
    )
    description = b"swapped red and blue"
    return _with_description(bytes(data), description)


def _with_description(profile: bytes, text: bytes) -> bytes:
    """Replace the ``desc`` tag of a profile by a v2 text description of `text`."""
    data = bytearray(profile)
    count = int.from_bytes(data[128:132], "big")
    tag = b"desc" + b"\x00" * 4 + struct.pack(">I", len(text) + 1) + text + b"\x00"
    tag += b"\x00" * (4 + 2 + 1 + 67)  # empty Unicode and ScriptCode parts
    tag_offset = len(data) + (-len(data)) % 4
    data += b"\x00" * (tag_offset - len(data)) + tag
    for index in range(count):
        entry = 132 + 12 * index
        if data[entry : entry + 4] == b"desc":
            data[entry + 4 : entry + 12] = struct.pack(">II", tag_offset, len(tag))
    data[0:4] = struct.pack(">I", len(data))
    return bytes(data)


@dataclass(frozen=True, slots=True)
class GifFrame:
    """One frame of a hand-built GIF: palette indices placed at (left, top)."""

    indices: npt.NDArray[np.uint8]
    left: int = 0
    top: int = 0
    disposal: int = 0
    delay: int = 10
    transparent_index: int | None = None


def gif_bytes(
    size: tuple[int, int],
    palette: list[tuple[int, int, int]],
    frames: list[GifFrame],
    repeats: int | None = 0,
) -> bytes:
    """Assemble a GIF with a global palette of up to 256 colours and the given frames.

    Args:
        size: logical screen width and height.
        palette: the global colour table.
        frames: the frames, each with its own rectangle, disposal and delay (in 1/100 s).
        repeats: the NETSCAPE loop count (0 forever), or ``None`` for no loop extension.
    """
    table = np.zeros((256, 3), dtype=np.uint8)
    table[: len(palette)] = palette
    width, height = size
    out = bytearray(b"GIF89a" + struct.pack("<HHBBB", width, height, 0xF7, 0, 0))
    out += table.tobytes()
    if repeats is not None:
        out += b"\x21\xff\x0bNETSCAPE2.0\x03\x01" + struct.pack("<H", repeats) + b"\x00"
    for frame in frames:
        flags = (frame.disposal << 2) | (1 if frame.transparent_index is not None else 0)
        index = frame.transparent_index or 0
        out += b"\x21\xf9\x04" + struct.pack("<BHB", flags, frame.delay, index) + b"\x00"
        frame_height, frame_width = frame.indices.shape
        out += b"\x2c" + struct.pack("<HHHHB", frame.left, frame.top, frame_width, frame_height, 0)
        out += _lzw_data(frame.indices)
    out += b"\x3b"
    return bytes(out)


def _lzw_data(indices: npt.NDArray[np.uint8]) -> bytes:
    """Return the LZW code size and data sub-blocks of `indices`, encoded by Pillow."""
    image = Image.fromarray(indices, mode="P")
    image.putpalette(list(range(256)) * 3)
    data = save(image, "GIF", optimize=False)
    position = 13
    if data[10] & 0x80:
        position += 3 * 2 ** ((data[10] & 7) + 1)
    while data[position] == 0x21:  # skip extensions: introducer, label, sub-blocks
        position = _after_sub_blocks(data, position + 2)
    assert data[position] == 0x2C, "expected an image descriptor"
    packed = data[position + 9]
    position += 10
    if packed & 0x80:
        position += 3 * 2 ** ((packed & 7) + 1)
    end = _after_sub_blocks(data, position + 1)
    return data[position:end]


def _after_sub_blocks(data: bytes, position: int) -> int:
    while data[position] != 0:
        position += data[position] + 1
    return position + 1


def linear_grey_profile() -> bytes:
    """Return an ICC v2 grey display profile with a linear tone curve (gamma 1.0).

    A grey level of 128 tagged with it means half the light of white, which is level 188 in
    sRGB, so a correct conversion brightens mid-tones.
    """
    description = b"linear grey"
    desc = b"desc" + bytes(4) + struct.pack(">I", len(description) + 1) + description + b"\x00"
    desc += bytes(4 + 2 + 1 + 67)
    d50 = struct.pack(">iii", 63190, 65536, 54061)  # X, Y, Z as s15Fixed16
    tags = [
        (b"desc", desc),
        (b"wtpt", b"XYZ " + bytes(4) + d50),
        (b"kTRC", b"curv" + bytes(4) + struct.pack(">IH", 1, 256) + bytes(2)),
        (b"cprt", b"text" + bytes(4) + b"none\x00"),
    ]
    offset = 128 + 4 + 12 * len(tags)
    table = struct.pack(">I", len(tags))
    body = b""
    for signature, payload in tags:
        padded = payload + bytes((-len(payload)) % 4)
        table += signature + struct.pack(">II", offset + len(body), len(payload))
        body += padded
    size = offset + len(body)
    header = struct.pack(">I4sI4s4s4s", size, b"lcms", 0x02100000, b"mntr", b"GRAY", b"XYZ ")
    header += bytes(12) + b"acsp" + bytes(24) + struct.pack(">I", 0) + d50 + bytes(48)
    assert len(header) == 128
    return header + table + body
