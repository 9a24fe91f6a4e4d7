"""Tests for size, crop and padding planning."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from darkroom_gpu.geometry import (
    Box,
    ResizePlan,
    Size,
    oriented_size,
    plan_resize,
    rotated_size,
    round_half_up,
)
from darkroom_gpu.options import FitMode, Gravity

INSIDE = FitMode.INSIDE
CROP = FitMode.CROP
SCALE = FitMode.SCALE
PAD = FitMode.PAD
CENTER = Gravity.CENTER


def uncut(width: int, height: int) -> ResizePlan:
    """Plan that only resizes: no crop and no padding."""
    whole = Box(0, 0, width, height)
    return ResizePlan(
        scaled=Size(width, height), crop=whole, canvas=Size(width, height), placement=whole
    )


def cropped(scaled: Size, crop: Box) -> ResizePlan:
    """Plan that resizes and then keeps ``crop``."""
    canvas = Size(crop.width, crop.height)
    placement = Box(0, 0, crop.width, crop.height)
    return ResizePlan(scaled=scaled, crop=crop, canvas=canvas, placement=placement)


def padded(scaled: Size, canvas: Size, left: int, top: int) -> ResizePlan:
    """Plan that resizes and then places the image on a larger canvas."""
    whole = Box(0, 0, scaled.width, scaled.height)
    placement = Box(left, top, scaled.width, scaled.height)
    return ResizePlan(scaled=scaled, crop=whole, canvas=canvas, placement=placement)


PLAN_CASES = [
    # One side set, or none.
    pytest.param(Size(1000, 4), 50, 0, INSIDE, CENTER, True, uncut(50, 1), id="1000x4 w=50"),
    pytest.param(Size(1, 10000), 0, 100, INSIDE, CENTER, True, uncut(1, 100), id="1x10000 h=100"),
    pytest.param(Size(3264, 2448), 300, 0, INSIDE, CENTER, True, uncut(300, 225), id="w=300"),
    pytest.param(Size(70, 46), 35, 0, INSIDE, CENTER, True, uncut(35, 23), id="70x46 w=35"),
    pytest.param(Size(200, 50), 0, 100, INSIDE, CENTER, True, uncut(400, 100), id="200x50 h=100"),
    pytest.param(Size(4, 3), 2, 0, INSIDE, CENTER, True, uncut(2, 2), id="4x3 w=2 half up"),
    pytest.param(Size(4, 3), 0, 2, INSIDE, CENTER, True, uncut(3, 2), id="4x3 h=2"),
    pytest.param(Size(640, 480), 0, 0, INSIDE, CENTER, True, uncut(640, 480), id="none set"),
    pytest.param(Size(640, 480), 0, 0, CROP, CENTER, True, uncut(640, 480), id="none set crop"),
    pytest.param(Size(640, 480), 0, 0, SCALE, CENTER, True, uncut(640, 480), id="none set scale"),
    pytest.param(Size(640, 480), 0, 0, PAD, CENTER, True, uncut(640, 480), id="none set pad"),
    pytest.param(Size(640, 480), 320, 0, CROP, CENTER, True, uncut(320, 240), id="w only crop"),
    pytest.param(Size(640, 480), 0, 240, PAD, CENTER, True, uncut(320, 240), id="h only pad"),
    pytest.param(Size(640, 480), 320, 0, SCALE, CENTER, True, uncut(320, 240), id="w only scale"),
    pytest.param(Size(100, 50), 400, 0, INSIDE, CENTER, False, uncut(100, 50), id="w no enlarge"),
    pytest.param(Size(100, 50), 0, 25, INSIDE, CENTER, False, uncut(50, 25), id="h shrink only"),
    # Inside.
    pytest.param(Size(640, 480), 320, 320, INSIDE, CENTER, True, uncut(320, 240), id="inside w"),
    pytest.param(Size(480, 640), 320, 320, INSIDE, CENTER, True, uncut(240, 320), id="inside h"),
    pytest.param(Size(640, 480), 320, 240, INSIDE, CENTER, True, uncut(320, 240), id="same aspect"),
    pytest.param(Size(100, 50), 400, 400, INSIDE, CENTER, True, uncut(400, 200), id="enlarge"),
    pytest.param(Size(100, 50), 400, 400, INSIDE, CENTER, False, uncut(100, 50), id="no enlarge"),
    pytest.param(Size(1000, 500), 400, 400, INSIDE, CENTER, False, uncut(400, 200), id="shrink"),
    pytest.param(Size(1000, 4), 50, 50, INSIDE, CENTER, True, uncut(50, 1), id="1000x4 inside"),
    # Crop.
    pytest.param(
        Size(3264, 2448), 800, 800, CROP, CENTER, True,
        cropped(Size(1067, 800), Box(133, 0, 800, 800)),
        id="3264x2448 crop center",
    ),
    pytest.param(
        Size(3264, 2448), 800, 800, CROP, Gravity.LEFT, True,
        cropped(Size(1067, 800), Box(0, 0, 800, 800)),
        id="landscape crop left",
    ),
    pytest.param(
        Size(3264, 2448), 800, 800, CROP, Gravity.RIGHT, True,
        cropped(Size(1067, 800), Box(267, 0, 800, 800)),
        id="landscape crop right",
    ),
    pytest.param(
        Size(3264, 2448), 800, 800, CROP, Gravity.TOP, True,
        cropped(Size(1067, 800), Box(133, 0, 800, 800)),
        id="landscape crop top centres x",
    ),
    pytest.param(
        Size(2448, 3264), 800, 800, CROP, Gravity.TOP, True,
        cropped(Size(800, 1067), Box(0, 0, 800, 800)),
        id="portrait crop top",
    ),
    pytest.param(
        Size(2448, 3264), 800, 800, CROP, Gravity.BOTTOM, True,
        cropped(Size(800, 1067), Box(0, 267, 800, 800)),
        id="portrait crop bottom",
    ),
    pytest.param(
        Size(2448, 3264), 800, 800, CROP, CENTER, True,
        cropped(Size(800, 1067), Box(0, 133, 800, 800)),
        id="portrait crop center",
    ),
    pytest.param(
        Size(1000, 1000), 400, 200, CROP, Gravity.TOP_LEFT, True,
        cropped(Size(400, 400), Box(0, 0, 400, 200)),
        id="square crop top,left",
    ),
    pytest.param(
        Size(1000, 1000), 400, 200, CROP, Gravity.BOTTOM_RIGHT, True,
        cropped(Size(400, 400), Box(0, 200, 400, 200)),
        id="square crop bottom,right",
    ),
    pytest.param(
        Size(2000, 1000), 200, 200, CROP, Gravity.BOTTOM_RIGHT, True,
        cropped(Size(400, 200), Box(200, 0, 200, 200)),
        id="landscape crop bottom,right",
    ),
    pytest.param(
        Size(70, 46), 35, 35, CROP, CENTER, True,
        cropped(Size(53, 35), Box(9, 0, 35, 35)),
        id="70x46 crop rounds",
    ),
    pytest.param(
        Size(100, 50), 400, 400, CROP, CENTER, True,
        cropped(Size(800, 400), Box(200, 0, 400, 400)),
        id="crop enlarge",
    ),
    pytest.param(
        Size(100, 50), 400, 400, CROP, CENTER, False,
        cropped(Size(100, 50), Box(0, 0, 100, 50)),
        id="crop no enlarge small source",
    ),
    pytest.param(
        Size(1000, 100), 500, 500, CROP, CENTER, False,
        cropped(Size(1000, 100), Box(250, 0, 500, 100)),
        id="crop no enlarge one side small",
    ),
    pytest.param(
        Size(1000, 100), 500, 500, CROP, Gravity.TOP_RIGHT, False,
        cropped(Size(1000, 100), Box(500, 0, 500, 100)),
        id="crop no enlarge top,right",
    ),
    pytest.param(
        Size(3264, 2448), 800, 800, CROP, CENTER, False,
        cropped(Size(1067, 800), Box(133, 0, 800, 800)),
        id="crop no enlarge shrinking",
    ),
    pytest.param(
        Size(1000, 4), 50, 50, CROP, CENTER, True,
        cropped(Size(12500, 50), Box(6225, 0, 50, 50)),
        id="1000x4 crop",
    ),
    pytest.param(
        Size(1, 10000), 100, 100, CROP, CENTER, True,
        cropped(Size(100, 1000000), Box(0, 499950, 100, 100)),
        id="1x10000 crop",
    ),
    # Scale.
    pytest.param(Size(640, 480), 100, 300, SCALE, CENTER, True, uncut(100, 300), id="scale"),
    pytest.param(Size(640, 480), 1000, 300, SCALE, CENTER, False, uncut(640, 300), id="scale cap"),
    pytest.param(Size(1000, 4), 50, 50, SCALE, CENTER, True, uncut(50, 50), id="1000x4 scale"),
    # Pad.
    pytest.param(
        Size(640, 480), 400, 400, PAD, CENTER, True,
        padded(Size(400, 300), Size(400, 400), 0, 50),
        id="pad landscape",
    ),
    pytest.param(
        Size(480, 640), 400, 400, PAD, Gravity.TOP_LEFT, True,
        padded(Size(300, 400), Size(400, 400), 50, 0),
        id="pad portrait ignores gravity",
    ),
    pytest.param(
        Size(640, 480), 400, 401, PAD, CENTER, True,
        padded(Size(400, 300), Size(400, 401), 0, 50),
        id="pad odd slack floors",
    ),
    pytest.param(
        Size(100, 50), 400, 400, PAD, CENTER, False,
        padded(Size(100, 50), Size(400, 400), 150, 175),
        id="pad no enlarge",
    ),
    pytest.param(
        Size(640, 480), 320, 240, PAD, CENTER, True,
        padded(Size(320, 240), Size(320, 240), 0, 0),
        id="pad same aspect",
    ),
]  # fmt: skip


@pytest.mark.parametrize(
    ("source", "target_width", "target_height", "fit", "gravity", "allow_enlarge", "expected"),
    PLAN_CASES,
)
def test_plan_resize(
    source: Size,
    target_width: int,
    target_height: int,
    fit: FitMode,
    gravity: Gravity,
    allow_enlarge: bool,
    expected: ResizePlan,
) -> None:
    plan = plan_resize(
        source, target_width, target_height, fit, gravity, allow_enlarge=allow_enlarge
    )
    assert plan == expected


@pytest.mark.parametrize(
    ("source", "target_width", "target_height"),
    [
        pytest.param(Size(0, 10), 5, 5, id="zero source width"),
        pytest.param(Size(10, -1), 5, 5, id="negative source height"),
        pytest.param(Size(10, 10), -5, 5, id="negative target width"),
        pytest.param(Size(10, 10), 5, -1, id="negative target height"),
    ],
)
def test_plan_resize_rejects(source: Size, target_width: int, target_height: int) -> None:
    with pytest.raises(ValueError, match="pixel"):
        plan_resize(source, target_width, target_height, INSIDE, CENTER)


@pytest.mark.parametrize(
    ("orientation", "expected"),
    [
        pytest.param(0, Size(640, 480), id="missing tag 0"),
        pytest.param(1, Size(640, 480), id="1 upright"),
        pytest.param(2, Size(640, 480), id="2 mirrored"),
        pytest.param(3, Size(640, 480), id="3 half turn"),
        pytest.param(4, Size(640, 480), id="4 flipped"),
        pytest.param(5, Size(480, 640), id="5 transposed"),
        pytest.param(6, Size(480, 640), id="6 quarter turn"),
        pytest.param(7, Size(480, 640), id="7 transversed"),
        pytest.param(8, Size(480, 640), id="8 quarter turn back"),
        pytest.param(9, Size(640, 480), id="invalid tag 9"),
    ],
)
def test_oriented_size(orientation: int, expected: Size) -> None:
    assert oriented_size(Size(640, 480), orientation) == expected


@pytest.mark.parametrize(
    ("size", "degrees", "expected"),
    [
        pytest.param(Size(70, 46), 0.0, Size(70, 46), id="0"),
        pytest.param(Size(70, 46), 90.0, Size(46, 70), id="90"),
        pytest.param(Size(70, 46), 180.0, Size(70, 46), id="180"),
        pytest.param(Size(70, 46), 270.0, Size(46, 70), id="270"),
        pytest.param(Size(70, 46), 360.0, Size(70, 46), id="360"),
        pytest.param(Size(70, 46), -90.0, Size(46, 70), id="-90"),
        pytest.param(Size(70, 46), 450.0, Size(46, 70), id="450"),
        pytest.param(Size(100, 100), 45.0, Size(142, 142), id="45 on 100x100"),
        pytest.param(Size(70, 46), 30.0, Size(84, 75), id="30 on 70x46"),
        pytest.param(Size(70, 46), -30.0, Size(84, 75), id="-30 on 70x46"),
        pytest.param(Size(1, 1), 45.0, Size(2, 2), id="45 on 1x1"),
        pytest.param(Size(1, 1), -1e-20, Size(1, 1), id="tiny negative"),
    ],
)
def test_rotated_size(size: Size, degrees: float, expected: Size) -> None:
    assert rotated_size(size, degrees) == expected


def test_rotated_size_rejects_nan() -> None:
    with pytest.raises(ValueError, match="finite"):
        rotated_size(Size(10, 10), math.nan)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(0.0, 0, id="0"),
        pytest.param(0.5, 1, id="0.5"),
        pytest.param(1.5, 2, id="1.5"),
        pytest.param(2.5, 3, id="2.5"),
        pytest.param(2.4999, 2, id="2.4999"),
        pytest.param(0.49999999999999994, 0, id="just below half"),
        pytest.param(-2.5, -2, id="-2.5"),
        pytest.param(1066.6666666666667, 1067, id="1066.67"),
    ],
)
def test_round_half_up(value: float, expected: int) -> None:
    assert round_half_up(value) == expected


def test_round_half_up_rejects_inf() -> None:
    with pytest.raises(ValueError, match="non-finite"):
        round_half_up(math.inf)


def plan_sizes(plan: ResizePlan) -> list[int]:
    sides = [plan.scaled.width, plan.scaled.height, plan.canvas.width, plan.canvas.height]
    for box in (plan.crop, plan.placement):
        sides += [box.width, box.height]
    return sides


@settings(max_examples=200, deadline=None)
@given(
    source=st.builds(Size, st.integers(1, 20000), st.integers(1, 20000)),
    target_width=st.integers(0, 10000),
    target_height=st.integers(0, 10000),
    fit=st.sampled_from(FitMode),
    gravity=st.sampled_from(Gravity),
    allow_enlarge=st.booleans(),
)
def test_plan_resize_properties(
    source: Size,
    target_width: int,
    target_height: int,
    fit: FitMode,
    gravity: Gravity,
    allow_enlarge: bool,
) -> None:
    plan = plan_resize(
        source, target_width, target_height, fit, gravity, allow_enlarge=allow_enlarge
    )

    assert min(plan_sizes(plan)) >= 1
    assert plan.crop.left >= 0
    assert plan.crop.top >= 0
    assert plan.crop.left + plan.crop.width <= plan.scaled.width
    assert plan.crop.top + plan.crop.height <= plan.scaled.height
    assert plan.placement.width == plan.crop.width
    assert plan.placement.height == plan.crop.height
    assert plan.placement.left >= 0
    assert plan.placement.top >= 0
    assert plan.placement.left + plan.placement.width <= plan.canvas.width
    assert plan.placement.top + plan.placement.height <= plan.canvas.height

    if not allow_enlarge:
        return
    scaled = plan.scaled
    if target_width and target_height:
        if fit in (FitMode.INSIDE, FitMode.PAD):
            assert scaled.width == target_width or scaled.height == target_height
            assert scaled.width <= target_width
            assert scaled.height <= target_height
        if fit is FitMode.CROP:
            assert Size(plan.crop.width, plan.crop.height) == Size(target_width, target_height)
            assert scaled.width == target_width or scaled.height == target_height
        if fit is FitMode.SCALE:
            assert scaled == Size(target_width, target_height)
        if fit is FitMode.PAD:
            assert plan.canvas == Size(target_width, target_height)
    elif target_width:
        assert scaled.width == target_width
    elif target_height:
        assert scaled.height == target_height
    else:
        assert scaled == source
