"""The sRGB transfer function ops: `srgb_to_linear` and `linear_to_srgb`."""

from __future__ import annotations

from typing import Final

import pytest
import torch

from darkroom_gpu import ops
from darkroom_gpu.ops import ImageShapeError

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
# Reference points of the sRGB curve, as (encoded level, linear light on the 0..255 scale),
# computed from IEC 61966-2-1: level 128 is 21.6 % of the light of white, level 188 is 50.3 %.
CURVE_POINTS: Final = [(0, 0.0), (10, 0.774), (128, 55.044), (188, 128.236), (255, 255.0)]
CURVE_ATOL: Final = 0.05


def every_level(channels: int = 3) -> torch.Tensor:
    """Return (channels, 1, 256) uint8 with every level in each channel."""
    levels = torch.arange(256, dtype=torch.uint8)
    return levels.expand(channels, 1, 256).contiguous()


@pytest.mark.parametrize(("level", "linear"), CURVE_POINTS)
def test_srgb_to_linear_curve(level: int, linear: float) -> None:
    image = torch.full((3, 1, 1), level, dtype=torch.uint8)

    result = ops.srgb_to_linear(image)

    assert result.dtype == torch.float32
    assert torch.allclose(result, torch.full_like(result, linear), atol=CURVE_ATOL)


@pytest.mark.parametrize("device", DEVICES)
def test_round_trip_is_exact(device: str) -> None:
    image = every_level(4).to(device)

    result = ops.linear_to_srgb(ops.srgb_to_linear(image), torch.uint8)

    assert result.device == image.device
    assert torch.equal(result, image)


def test_alpha_unchanged() -> None:
    image = every_level(4)

    linear = ops.srgb_to_linear(image)

    assert torch.equal(linear[3], image[3].float())
    assert not torch.equal(linear[0], image[0].float())


def test_float64_preserved() -> None:
    image = every_level().double()

    linear = ops.srgb_to_linear(image)

    assert linear.dtype == torch.float64
    assert ops.linear_to_srgb(linear, torch.float64).dtype == torch.float64


def test_batched_equals_per_item() -> None:
    batch = torch.stack([every_level(), every_level().flip(-1)])

    result = ops.srgb_to_linear(batch)

    assert torch.equal(result[1], ops.srgb_to_linear(batch[1]))


def test_input_not_mutated() -> None:
    image = every_level()
    before = image.clone()

    ops.linear_to_srgb(ops.srgb_to_linear(image), torch.uint8)

    assert torch.equal(image, before)


def test_linear_to_srgb_clamps_overshoot() -> None:
    image = torch.tensor([-3.0, 260.0, 0.0]).reshape(3, 1, 1)

    result = ops.linear_to_srgb(image, torch.uint8)

    assert result.flatten().tolist() == [0, 255, 0]


@pytest.mark.parametrize("shape", [(2, 4, 4), (4, 4)])
def test_rejects_non_image(shape: tuple[int, ...]) -> None:
    with pytest.raises(ImageShapeError, match="expected shape"):
        ops.srgb_to_linear(torch.zeros(shape, dtype=torch.uint8))
