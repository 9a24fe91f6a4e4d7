"""Tests for the tensor image ops in darkroom_gpu.ops, with Pillow as the reference."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from pathlib import Path
from typing import Final

import kornia.filters
import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter, ImageOps

from darkroom_gpu.ops import (
    ImageShapeError,
    Interpolation,
    crop,
    flatten,
    flip,
    gaussian_blur,
    grayscale,
    orient,
    pad,
    resize,
    rotate,
    tint,
)
from darkroom_gpu.ops._compute import device_values
from darkroom_gpu.ops.resize import shrink_for_cuda_antialias

PHOTO: Final = Path(__file__).parent.parent / "darkroom_gpu" / "samples" / "DSCN0010.jpg"

# Bounds on uint8 results against a reference, as (max mean abs diff, max abs diff) in levels.
# Measured values on PHOTO (640 x 480) are in the comments.
TOLERANCES: Final[dict[str, tuple[float, int]]] = {
    # Float path: measured mean 0.09-0.21, max 1 at 320 x 240, 333 x 97 and 1000 x 750. The CPU's
    # uint8 kernel (RGB): mean 0.000-0.005, max 1, except 4 of 2.25 million values at 1000 x 750
    # that differ by 2.
    "resize_bicubic": (0.25, 2),
    # Measured mean 0.09-0.20, max 1.
    "resize_bilinear": (0.25, 1),
    # Alpha only, measured mean 0.004-0.18, max 1. Colour is left out because Pillow stores the
    # premultiplied colour in uint8, which loses precision where alpha is low.
    "resize_alpha": (0.25, 1),
    # Pillow rounds a fixed-point luma. Measured mean 0.0005, max 1.
    "grayscale": (0.01, 1),
    # Looser mean because Pillow's colorize floors each value and tint rounds it. Measured mean
    # 0.17-0.33, max 1.
    "tint": (0.4, 1),
    # Looser because Pillow approximates the Gaussian by three box blurs. Interior only, measured
    # mean 0.32, max 3.
    "blur_sigma_2": (0.4, 4),
    # Same reason as sigma 2. Interior only, measured mean 0.39, max 2.
    "blur_sigma_40": (0.5, 3),
    # Downscaled blur against an exact Gaussian, interior only. Measured mean 0.03-0.04, max 1.
    "blur_downscaled": (0.1, 1),
    # Downscaled blur against an exact Gaussian on the whole image, where the border differs as the
    # docstring's Note describes. Measured mean 0.14 at sigma 12 and 0.48 at sigma 40.
    "blur_downscaled_border": (0.6, 255),
    # Pillow 13 truncates bilinear results where rotate rounds them, so about half the pixels
    # differ by 1. Opaque pixels only, measured mean 0.50, max 1.
    "rotate_bilinear": (0.55, 1),
    # Measured mean 0.001, max 1.
    "flatten": (0.01, 1),
}


# NOTE: the cuda cases have not yet run on a GPU, so their tolerances are estimates.
DEVICES: Final = [
    "cpu",
    pytest.param(
        "cuda",
        marks=[
            pytest.mark.cuda,
            pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available"),
        ],
    ),
]

# Max abs diff in levels between results of one op on the same values in another batch size or
# memory layout. CUDA convolutions may pick a different algorithm per shape, and one rounding step
# in uint8 can flip. CUDA against CPU gets the same bound.
LAYOUT_ATOL: Final = {"cpu": 0, "cuda": 1}


@functools.cache
def _photo_pixels() -> torch.Tensor:
    with Image.open(PHOTO) as photo:
        return _to_tensor(photo.convert("RGB"))


def _photo(device: str) -> torch.Tensor:
    """Return PHOTO as (3, 480, 640) uint8 on `device`."""
    return _photo_pixels().to(device, copy=True)


def _photo_pil() -> Image.Image:
    return _to_pil(_photo_pixels())


def _photo_with_alpha_ramp(device: str) -> torch.Tensor:
    photo = _photo(device)
    height, width = photo.shape[-2:]
    ramp = torch.linspace(0, 255, width, device=device).round().to(torch.uint8)
    return torch.cat((photo, ramp.expand(1, height, width)))


def _to_tensor(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.array(image)).permute(2, 0, 1).contiguous()


def _to_pil(image: torch.Tensor) -> Image.Image:
    mode = "RGBA" if image.shape[0] == 4 else "RGB"
    return Image.fromarray(image.permute(1, 2, 0).cpu().numpy(), mode)


def _random_image(channels: int, *batch: int, height: int = 13, width: int = 17) -> torch.Tensor:
    generator = torch.Generator().manual_seed(channels * 1000 + height * 10 + width)
    shape = (*batch, channels, height, width)
    return torch.randint(0, 256, shape, dtype=torch.uint8, generator=generator)


def _assert_close_to(actual: torch.Tensor, expected: torch.Tensor, tolerance: str) -> None:
    max_mean, max_abs = TOLERANCES[tolerance]
    difference = (actual.cpu().int() - expected.cpu().int()).abs().float()
    assert difference.mean().item() <= max_mean, f"{tolerance}: mean abs diff"
    assert difference.max().item() <= max_abs, f"{tolerance}: max abs diff"


def _channel_count(image: torch.Tensor) -> int:
    # Falls back to 3 so that shape errors come from the op, not from building its arguments.
    return image.shape[-3] if image.ndim >= 3 else 3


# Each case runs one op on any (..., C, H, W) input with C in {3, 4}, at 13 x 17 pixels.
Op = Callable[[torch.Tensor], torch.Tensor]
OP_CASES: Final[dict[str, Op]] = {
    "resize_bicubic_down": lambda image: resize(
        image, 7, 9, interpolation=Interpolation.BICUBIC, antialias=True
    ),
    "resize_bilinear_up": lambda image: resize(
        image, 20, 30, interpolation=Interpolation.BILINEAR, antialias=False
    ),
    "crop": lambda image: crop(image, 2, 3, 8, 10),
    "pad": lambda image: pad(image, 1, 2, 16, 22, fill=[10.0] * _channel_count(image)),
    "flip": lambda image: flip(image, horizontal=True, vertical=True),
    "orient_6": lambda image: orient(image, 6),
    "orient_7": lambda image: orient(image, 7),
    "rotate_90": lambda image: rotate(image, 90, 17, 13),
    "rotate_30": lambda image: rotate(image, 30, 20, 22),
    "grayscale": grayscale,
    "tint": lambda image: tint(image, (255, 128, 0)),
    "flatten_opaque": lambda image: flatten(image, (255, 255, 255, 255)),
    "flatten_translucent": lambda image: flatten(image, (0, 100, 200, 128)),
    "blur_direct": lambda image: gaussian_blur(image, 2.0),
    "blur_downscaled": lambda image: gaussian_blur(image, 20.0),
}

# Output (C, H, W) of each case for a (C, 13, 17) input.
OUTPUT_SHAPES: Final[dict[str, Callable[[int], tuple[int, int, int]]]] = {
    "resize_bicubic_down": lambda channels: (channels, 7, 9),
    "resize_bilinear_up": lambda channels: (channels, 20, 30),
    "crop": lambda channels: (channels, 8, 10),
    "pad": lambda channels: (channels, 16, 22),
    "flip": lambda channels: (channels, 13, 17),
    "orient_6": lambda channels: (channels, 17, 13),
    "orient_7": lambda channels: (channels, 17, 13),
    "rotate_90": lambda channels: (channels, 17, 13),
    "rotate_30": lambda channels: (4, 20, 22),
    "grayscale": lambda channels: (channels, 13, 17),
    "tint": lambda channels: (channels, 13, 17),
    "flatten_opaque": lambda channels: (3, 13, 17),
    "flatten_translucent": lambda channels: (channels, 13, 17),
    "blur_direct": lambda channels: (channels, 13, 17),
    "blur_downscaled": lambda channels: (channels, 13, 17),
}

CASE_NAMES: Final = sorted(OP_CASES)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("channels", [3, 4])
@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32, torch.float64])
@pytest.mark.parametrize("case", CASE_NAMES)
def test_op_shape_dtype_device(case: str, dtype: torch.dtype, channels: int, device: str) -> None:
    image = _random_image(channels).to(device=device, dtype=dtype)
    result = OP_CASES[case](image)
    assert tuple(result.shape) == OUTPUT_SHAPES[case](channels)
    assert result.dtype == dtype
    assert result.device == image.device
    assert result.min().item() >= 0
    assert result.max().item() <= 255


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("channels", [3, 4])
@pytest.mark.parametrize("case", CASE_NAMES)
def test_op_float_matches_uint8(case: str, channels: int, device: str) -> None:
    image = _random_image(channels).to(device)
    from_uint8 = OP_CASES[case](image).float()
    from_float = OP_CASES[case](image.float())
    difference = (from_float - from_uint8).abs()
    # The CPU resizes uint8 RGB with torch's uint8 kernel, which rounds to 8 bits between its
    # two passes. Elsewhere, uint8 results are the float results rounded.
    bound = 1.0 if case.startswith("resize") else 0.5 + 1e-3
    if from_uint8.shape[-3] == 4:
        # uint8 results zero the colour where a small alpha rounds to 0, so compare colour only
        # where the uint8 alpha is above 0.
        assert difference[3].max().item() <= 0.5 + 1e-3
        difference = difference[:3, from_uint8[3] > 0]
    assert difference.max().item() <= bound


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("channels", [3, 4])
@pytest.mark.parametrize("case", CASE_NAMES)
def test_op_batched_equals_per_item(case: str, channels: int, device: str) -> None:
    batch = _random_image(channels, 2, 3).to(device)
    result = OP_CASES[case](batch)
    for i in range(2):
        for j in range(3):
            item = OP_CASES[case](batch[i, j])
            torch.testing.assert_close(result[i, j], item, rtol=0, atol=LAYOUT_ATOL[device])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", CASE_NAMES)
def test_op_empty_batch(case: str, device: str) -> None:
    result = OP_CASES[case](_random_image(4, 0).to(device))
    assert tuple(result.shape) == (0, *OUTPUT_SHAPES[case](4))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("channels", [3, 4])
@pytest.mark.parametrize("case", CASE_NAMES)
def test_op_input_not_mutated(case: str, channels: int, device: str) -> None:
    image = _random_image(channels, 2).to(device)
    original = image.clone()
    result = OP_CASES[case](image)
    torch.testing.assert_close(image, original, rtol=0, atol=0)
    assert result.untyped_storage().data_ptr() != image.untyped_storage().data_ptr()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("channels", [3, 4])
@pytest.mark.parametrize("case", CASE_NAMES)
def test_op_noncontiguous_input(case: str, channels: int, device: str) -> None:
    image = _random_image(channels, 2).to(device)
    expected = OP_CASES[case](image)
    transposed_storage = image.transpose(-2, -1).contiguous().transpose(-2, -1)
    channels_last = image.contiguous(memory_format=torch.channels_last)
    assert not transposed_storage.is_contiguous()
    assert not channels_last.is_contiguous()
    atol = LAYOUT_ATOL[device]
    torch.testing.assert_close(OP_CASES[case](transposed_storage), expected, rtol=0, atol=atol)
    torch.testing.assert_close(OP_CASES[case](channels_last), expected, rtol=0, atol=atol)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available")
@pytest.mark.parametrize("channels", [3, 4])
@pytest.mark.parametrize("case", CASE_NAMES)
def test_op_cuda_matches_cpu(case: str, channels: int) -> None:
    image = _random_image(channels, 2)
    expected = OP_CASES[case](image)
    result = OP_CASES[case](image.to("cuda")).cpu()
    torch.testing.assert_close(result, expected, rtol=0, atol=LAYOUT_ATOL["cuda"])


@pytest.mark.parametrize(
    ("shape", "dtype", "message"),
    [
        ((5, 10, 10), torch.uint8, r"expected shape \(\.\.\., C, H, W\) with C in \{3, 4\}, got"),
        ((10, 10), torch.uint8, r"with C in \{3, 4\}, got \(10, 10\)"),
        ((3, 0, 10), torch.uint8, r"expected height and width >= 1, got shape \(3, 0, 10\)"),
        ((3, 10, 10), torch.int32, "expected dtype uint8 or a floating dtype, got torch.int32"),
    ],
)
@pytest.mark.parametrize("case", CASE_NAMES)
def test_op_rejects_bad_image(
    case: str, shape: tuple[int, ...], dtype: torch.dtype, message: str
) -> None:
    with pytest.raises(ImageShapeError, match=message):
        OP_CASES[case](torch.zeros(shape, dtype=dtype))


# resize


# 5 x 6 and 4 x 5 shrink each axis by more than 64 times, past which torch's antialiased CUDA
# kernel runs out of shared memory unless the image is averaged in blocks first.
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(("height", "width"), [(240, 320), (97, 333), (750, 1000), (5, 6), (4, 5)])
@pytest.mark.parametrize(
    ("interpolation", "resample", "tolerance"),
    [
        (Interpolation.BICUBIC, Image.Resampling.BICUBIC, "resize_bicubic"),
        (Interpolation.BILINEAR, Image.Resampling.BILINEAR, "resize_bilinear"),
    ],
)
def test_resize_matches_pillow(
    interpolation: Interpolation,
    resample: Image.Resampling,
    tolerance: str,
    height: int,
    width: int,
    device: str,
) -> None:
    expected = _to_tensor(_photo_pil().resize((width, height), resample))
    result = resize(_photo(device), height, width, interpolation=interpolation, antialias=True)
    _assert_close_to(result, expected, tolerance)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(("height", "width"), [(240, 320), (97, 333), (750, 1000)])
@pytest.mark.parametrize(
    ("interpolation", "resample"),
    [
        (Interpolation.BICUBIC, Image.Resampling.BICUBIC),
        (Interpolation.BILINEAR, Image.Resampling.BILINEAR),
    ],
)
def test_resize_alpha_matches_pillow(
    interpolation: Interpolation, resample: Image.Resampling, height: int, width: int, device: str
) -> None:
    image = _photo_with_alpha_ramp(device)
    image[3, :, 200:260] = 0
    expected = _to_tensor(_to_pil(image).resize((width, height), resample))
    result = resize(image, height, width, interpolation=interpolation, antialias=True)
    _assert_close_to(result[3], expected[3], "resize_alpha")


def _half_transparent(
    height: int, width: int, hidden: tuple[int, int, int], device: str
) -> torch.Tensor:
    """Return (4, height, width) uint8, opaque (200, 120, 40) left and `hidden` at alpha 0 right."""
    image = torch.tensor([*hidden, 0], dtype=torch.uint8, device=device).reshape(4, 1, 1)
    image = image.expand(4, height, width).clone()
    image[:, :, : width // 2] = torch.tensor([200, 120, 40, 255], device=device).reshape(4, 1, 1)
    return image


# The colour under alpha 0 must not show: black would darken the edge, green would tint it.
HIDDEN_COLOURS: Final = [(0, 0, 0), (0, 255, 0)]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("hidden", HIDDEN_COLOURS)
@pytest.mark.parametrize("interpolation", list(Interpolation))
@pytest.mark.parametrize(("height", "width"), [(11, 15), (90, 120)])
def test_resize_rgba_no_fringe(
    interpolation: Interpolation,
    height: int,
    width: int,
    hidden: tuple[int, int, int],
    device: str,
) -> None:
    image = _half_transparent(30, 39, hidden, device)
    result = resize(image, height, width, interpolation=interpolation, antialias=True)

    visible = result[3] > 0
    partly_transparent = visible & (result[3] < 255)
    assert partly_transparent.any()
    colour = result[:3].permute(1, 2, 0)[visible].int()
    expected = torch.tensor([200, 120, 40], device=device)
    assert (colour - expected).abs().max().item() <= 1


@pytest.mark.parametrize("device", DEVICES)
def test_resize_same_size_copies(device: str) -> None:
    image = _random_image(4).to(device)
    result = resize(image, 13, 17, interpolation=Interpolation.BICUBIC, antialias=True)
    assert torch.equal(result, image)
    assert result.data_ptr() != image.data_ptr()


def test_shrink_for_cuda_antialias_sizes() -> None:
    batch = _photo("cpu")[None].float()

    reduced = shrink_for_cuda_antialias(batch, 5, 6)
    wide_only = shrink_for_cuda_antialias(batch, 240, 6)
    uneven = shrink_for_cuda_antialias(batch, 2, 3)

    # 480 / (64 * 5) and 640 / (64 * 6) round up to blocks of 2; 480 / 128 and 640 / 192 to 4.
    assert tuple(reduced.shape) == (1, 3, 240, 320)
    assert tuple(wide_only.shape) == (1, 3, 480, 320)
    assert tuple(uneven.shape) == (1, 3, 120, 160)
    assert shrink_for_cuda_antialias(batch, 8, 10) is batch


def _noise(height: int, width: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(5)
    return torch.randint(0, 256, (1, 3, height, width), generator=generator).float()


@pytest.mark.parametrize(
    ("name", "height", "width"),
    [
        ("photo", 5, 6),
        ("photo", 6, 9),
        ("photo", 6, 213),
        ("noise", 13, 13),
        ("noise", 18, 433),
    ],
)
def test_shrink_for_cuda_antialias_close_to_direct(name: str, height: int, width: int) -> None:
    batch = _photo("cpu")[None].float() if name == "photo" else _noise(1300, 1300)
    for interpolation in Interpolation:
        direct = torch.nn.functional.interpolate(
            batch, size=(height, width), mode=interpolation.value, antialias=True
        )
        reduced = shrink_for_cuda_antialias(batch, height, width)
        shrunk = torch.nn.functional.interpolate(
            reduced, size=(height, width), mode=interpolation.value, antialias=True
        )
        difference = (shrunk - direct).abs()
        # Measured at most 0.20 levels before rounding (noise at 18 x 433, bicubic).
        assert difference.max().item() <= 0.5, interpolation


@pytest.mark.parametrize(("height", "width"), [(0, 5), (5, 0), (-1, 5)])
def test_resize_rejects_empty_size(height: int, width: int) -> None:
    with pytest.raises(ImageShapeError, match="size: expected height and width >= 1"):
        resize(
            _random_image(3), height, width, interpolation=Interpolation.BILINEAR, antialias=True
        )


# crop and pad


@pytest.mark.parametrize("device", DEVICES)
def test_crop_matches_pillow(device: str) -> None:
    expected = _to_tensor(_photo_pil().crop((100, 50, 100 + 210, 50 + 130)))
    result = crop(_photo(device), 50, 100, 130, 210)
    assert torch.equal(result.cpu(), expected)


@pytest.mark.parametrize(
    ("top", "left", "height", "width", "message"),
    [
        (0, 0, 0, 5, "expected a box of at least 1 x 1 pixels"),
        (0, 0, 5, 0, "expected a box of at least 1 x 1 pixels"),
        (-1, 0, 5, 5, "leaves the 13 x 17 image"),
        (0, -1, 5, 5, "leaves the 13 x 17 image"),
        (10, 0, 4, 5, "leaves the 13 x 17 image"),
        (0, 15, 5, 3, "leaves the 13 x 17 image"),
    ],
)
def test_crop_rejects_bad_box(top: int, left: int, height: int, width: int, message: str) -> None:
    with pytest.raises(ImageShapeError, match=message):
        crop(_random_image(3), top, left, height, width)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_pad_places_image(dtype: torch.dtype, device: str) -> None:
    image = _random_image(4).to(device=device, dtype=dtype)
    result = pad(image, 2, 5, 20, 30, fill=(10, 20, 30, 40))

    assert torch.equal(result[:, 2:15, 5:22], image)
    canvas = torch.tensor([10, 20, 30, 40], dtype=dtype, device=device).reshape(4, 1, 1)
    outside = torch.ones(20, 30, dtype=torch.bool, device=device)
    outside[2:15, 5:22] = False
    assert torch.equal(result[:, outside], canvas.reshape(4, 1).expand(4, int(outside.sum())))


def test_pad_rounds_fill_for_uint8() -> None:
    result = pad(_random_image(3), 0, 0, 14, 17, fill=(0.5, 1.5, 254.6))
    assert result[:, 13, 0].tolist() == [0, 2, 255]


@pytest.mark.parametrize(
    ("top", "left", "height", "width", "fill", "message"),
    [
        (0, 0, 12, 17, (0, 0, 0), "the 13 x 17 image at top=0, left=0 does not fit"),
        (1, 0, 13, 17, (0, 0, 0), "does not fit on a 13 x 17 canvas"),
        (0, -1, 20, 20, (0, 0, 0), "does not fit"),
        (0, 0, 20, 20, (0, 0, 0, 0), "fill: expected 3 channel values, got 4"),
        (0, 0, 20, 20, (0, 0, 256), r"fill: expected values in \[0, 255\]"),
    ],
)
def test_pad_rejects_bad_arguments(
    top: int, left: int, height: int, width: int, fill: tuple[float, ...], message: str
) -> None:
    with pytest.raises(ImageShapeError, match=message):
        pad(_random_image(3), top, left, height, width, fill)


# flip, orient and rotate


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    ("horizontal", "vertical", "method"),
    [
        (True, False, Image.Transpose.FLIP_LEFT_RIGHT),
        (False, True, Image.Transpose.FLIP_TOP_BOTTOM),
        (True, True, Image.Transpose.ROTATE_180),
    ],
)
def test_flip_matches_pillow(
    horizontal: bool, vertical: bool, method: Image.Transpose, device: str
) -> None:
    expected = _to_tensor(_photo_pil().transpose(method))
    result = flip(_photo(device), horizontal=horizontal, vertical=vertical)
    assert torch.equal(result.cpu(), expected)


def test_flip_neither_copies() -> None:
    image = _random_image(3)
    result = flip(image, horizontal=False, vertical=False)
    assert torch.equal(result, image)
    assert result.data_ptr() != image.data_ptr()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("orientation", range(1, 9))
def test_orient_matches_exif_transpose(orientation: int, device: str) -> None:
    # 7 x 5 with distinct pixels, so every flip and transpose gives a different image.
    image = _random_image(3, height=5, width=7)
    source = _to_pil(image)
    exif = Image.Exif()
    exif[0x0112] = orientation
    source.info["exif"] = exif.tobytes()

    upright = ImageOps.exif_transpose(source)
    assert upright is not None
    result = orient(image.to(device), orientation)
    assert torch.equal(result.cpu(), _to_tensor(upright))


@pytest.mark.parametrize("orientation", [0, 9, -1])
def test_orient_ignores_unknown_value(orientation: int) -> None:
    image = _random_image(4)
    assert torch.equal(orient(image, orientation), image)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mode", ["RGB", "RGBA"])
@pytest.mark.parametrize("degrees", [90, 180, 270, -90, 450, 360])
def test_rotate_quarter_turns_match_pillow(degrees: float, mode: str, device: str) -> None:
    source = _photo_pil().convert(mode)
    expected = _to_tensor(source.rotate(-degrees, expand=True))
    height, width = expected.shape[-2:]
    result = rotate(_to_tensor(source).to(device), degrees, height, width)
    assert torch.equal(result.cpu(), expected)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("degrees", [30, 123.4])
def test_rotate_bilinear_matches_pillow(degrees: float, device: str) -> None:
    reference = (
        _photo_pil()
        .convert("RGBA")
        .rotate(-degrees, expand=True, resample=Image.Resampling.BILINEAR)
    )
    expected = _to_tensor(reference)
    height, width = expected.shape[-2:]
    result = rotate(_photo(device), degrees, height, width).cpu()

    assert tuple(result.shape) == (4, height, width)
    opaque = (result[3] == 255) & (expected[3] == 255)
    # Pillow does not antialias the edge, so its opaque area is larger by about one edge pixel.
    assert opaque.sum().item() >= 0.99 * (expected[3] == 255).sum().item()
    _assert_close_to(result[:3, opaque], expected[:3, opaque], "rotate_bilinear")


@pytest.mark.parametrize("device", DEVICES)
def test_rotate_bilinear_edges(device: str) -> None:
    image = torch.full((3, 40, 60), 200, dtype=torch.uint8, device=device)
    result = rotate(image, 30, 65, 72)

    alpha = result[3]
    assert alpha[0, 0].item() == 0
    assert alpha[32, 36].item() == 255
    assert ((alpha > 0) & (alpha < 255)).sum().item() > 100
    visible = alpha > 0
    assert (result[:3, visible].int() - 200).abs().max().item() <= 1
    assert result[:3, ~visible].max().item() == 0


@pytest.mark.parametrize("device", DEVICES)
def test_rotate_centres_image(device: str) -> None:
    # A single bright pixel at the image centre stays at the canvas centre for any angle.
    image = torch.zeros(3, 21, 31, dtype=torch.float32, device=device)
    image[:, 10, 15] = 255
    result = rotate(image, 37, 41, 51)
    peak = int(result[0].argmax())
    assert divmod(peak, 51) == (20, 25)


def test_rotate_turns_clockwise() -> None:
    image = torch.zeros(3, 20, 20, dtype=torch.float32)
    image[:, 1:3, 9:11] = 255  # a dot above the centre
    result = rotate(image, 45, 20, 20)
    row, column = divmod(int(result[0].argmax()), 20)
    assert row < 10
    assert column > 10


@pytest.mark.parametrize(
    ("degrees", "height", "width", "message"),
    [
        (90, 13, 17, "a rotation by 90 degrees gives a 17 x 13 image, got a canvas of 13 x 17"),
        (180, 17, 13, "gives a 13 x 17 image"),
        (30, 0, 10, "size: expected height and width >= 1"),
        (math.nan, 20, 20, "rotate: expected a finite angle in degrees, got nan"),
        (math.inf, 20, 20, "rotate: expected a finite angle in degrees, got inf"),
    ],
)
def test_rotate_rejects_bad_arguments(
    degrees: float, height: int, width: int, message: str
) -> None:
    with pytest.raises(ImageShapeError, match=message):
        rotate(_random_image(3), degrees, height, width)


# grayscale, tint and flatten


@pytest.mark.parametrize("device", DEVICES)
def test_grayscale_matches_pillow(device: str) -> None:
    expected = _to_tensor(_photo_pil().convert("L").convert("RGB"))
    _assert_close_to(grayscale(_photo(device)), expected, "grayscale")


@pytest.mark.parametrize("device", DEVICES)
def test_grayscale_keeps_alpha(device: str) -> None:
    image = _random_image(4).to(device)
    result = grayscale(image)
    assert torch.equal(result[3], image[3])
    assert torch.equal(result[0], result[1])
    assert torch.equal(result[0], result[2])


def test_grayscale_luma_weights() -> None:
    image = torch.tensor([100.0, 0.0, 0.0, 0.0, 100.0, 0.0, 0.0, 0.0, 100.0]).reshape(3, 1, 3)
    assert grayscale(image)[0, 0].tolist() == pytest.approx([29.9, 58.7, 11.4])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("color", [(255, 128, 0), (10, 200, 255), (255, 255, 255)])
def test_tint_matches_pillow(color: tuple[int, int, int], device: str) -> None:
    gray = _photo_pil().convert("L")
    expected = _to_tensor(ImageOps.colorize(gray, black=(0, 0, 0), white=color))
    _assert_close_to(tint(_photo(device), color), expected, "tint")


def test_tint_maps_black_and_white() -> None:
    image = torch.tensor([0, 255], dtype=torch.uint8).reshape(1, 1, 2).expand(4, 1, 2)
    result = tint(image, (40, 80, 120))
    assert result[:, 0, 0].tolist() == [0, 0, 0, 0]
    assert result[:, 0, 1].tolist() == [40, 80, 120, 255]


@pytest.mark.parametrize("color", [(0, 0), (0, 0, 300), (-1, 0, 0)])
def test_tint_rejects_bad_color(color: tuple[int, int, int]) -> None:
    with pytest.raises(ImageShapeError, match="color: expected"):
        tint(_random_image(3), color)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("background", [(255, 255, 255, 255), (10, 200, 30, 128), (0, 0, 0, 0)])
def test_flatten_matches_pillow(background: tuple[int, int, int, int], device: str) -> None:
    image = _photo_with_alpha_ramp(device)
    canvas = Image.new("RGBA", (image.shape[-1], image.shape[-2]), background)
    expected = _to_tensor(Image.alpha_composite(canvas, _to_pil(image)))
    result = flatten(image, background)

    if background[3] == 255:
        assert result.shape[0] == 3
        expected = expected[:3]
    else:
        assert result.shape[0] == 4
    _assert_close_to(result, expected, "flatten")


def test_flatten_rgb_unchanged() -> None:
    image = _random_image(3)
    assert torch.equal(flatten(image, (0, 0, 0, 128)), image)


def test_flatten_half_transparent_over_white() -> None:
    image = torch.tensor([200.0, 100.0, 0.0, 127.5]).reshape(4, 1, 1)
    result = flatten(image, (255, 255, 255, 255))
    assert result.flatten().tolist() == pytest.approx([227.5, 177.5, 127.5])


@pytest.mark.parametrize("background", [(0, 0, 0), (0, 0, 0, 256)])
def test_flatten_rejects_bad_background(background: tuple[int, int, int, int]) -> None:
    with pytest.raises(ImageShapeError, match="background: expected"):
        flatten(_random_image(4), background)


@pytest.mark.parametrize("device", DEVICES)
def test_device_values_keep_values(device: str) -> None:
    values = device_values((0.299, 0.587, 0.114), torch.float32, torch.device(device))

    assert values.device.type == device
    assert values.dtype == torch.float32
    assert values.tolist() == pytest.approx([0.299, 0.587, 0.114])


# gaussian_blur


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(("sigma", "tolerance"), [(2.0, "blur_sigma_2"), (40.0, "blur_sigma_40")])
def test_blur_matches_pillow(sigma: float, tolerance: str, device: str) -> None:
    # Pillow's box-blur approximation differs most at the border, so only the interior counts.
    margin = math.ceil(3 * sigma)
    expected = _to_tensor(_photo_pil().filter(ImageFilter.GaussianBlur(radius=sigma)))
    result = gaussian_blur(_photo(device), sigma)
    interior = (..., slice(margin, -margin), slice(margin, -margin))
    _assert_close_to(result[interior], expected[interior], tolerance)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("sigma", [12.0, 40.0])
def test_blur_downscaled_matches_exact(sigma: float, device: str) -> None:
    photo = _photo(device)
    kernel_size = 2 * math.ceil(3 * sigma) + 1
    exact = kornia.filters.gaussian_blur2d(
        photo[None].float(), kernel_size, (sigma, sigma), border_type="replicate"
    )[0]
    expected = exact.round().clamp(0, 255).to(torch.uint8)
    result = gaussian_blur(photo, sigma)

    margin = math.ceil(2 * sigma)
    interior = (..., slice(margin, -margin), slice(margin, -margin))
    _assert_close_to(result[interior], expected[interior], "blur_downscaled")
    _assert_close_to(result, expected, "blur_downscaled_border")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("hidden", HIDDEN_COLOURS)
@pytest.mark.parametrize("sigma", [2.0, 20.0])
def test_blur_rgba_no_fringe(sigma: float, hidden: tuple[int, int, int], device: str) -> None:
    image = _half_transparent(60, 80, hidden, device)
    result = gaussian_blur(image, sigma)

    visible = result[3] > 0
    assert (visible & (result[3] < 255)).any()
    colour = result[:3].permute(1, 2, 0)[visible].int()
    assert (colour - torch.tensor([200, 120, 40], device=device)).abs().max().item() <= 1


def test_blur_keeps_constant_image() -> None:
    image = torch.full((2, 3, 30, 50), 77, dtype=torch.uint8)
    for sigma in (0.3, 5.0, 100.0, 250.0):
        assert torch.equal(gaussian_blur(image, sigma), image)


@pytest.mark.parametrize("sigma", [0.0, -1.0, math.nan, math.inf])
def test_blur_rejects_bad_sigma(sigma: float) -> None:
    with pytest.raises(ImageShapeError, match="sigma: expected a positive finite number"):
        gaussian_blur(_random_image(3), sigma)
