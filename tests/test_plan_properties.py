"""Property tests of request planning: any valid request either fits the limits or is a 422.

The example count follows the active hypothesis profile: the default in the test suite, more
under ``--hypothesis-profile fuzz`` (see ``python -m benchmarks.fuzz``).
"""

from __future__ import annotations

import io
from dataclasses import replace

from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from darkroom_gpu import codecs, pipeline
from darkroom_gpu.errors import InvalidParameterError, UnprocessableImageError
from darkroom_gpu.geometry import Size
from darkroom_gpu.manipulators.base import ImageJob, check_source_pixels
from darkroom_gpu.options import OutputFormat, ProcessingOptions, parse_options


def probe_png() -> codecs.ImageInfo:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buffer, "PNG")
    return codecs.probe(buffer.getvalue())


BASE_INFO = probe_png()
DECIMAL = st.decimals(min_value=-400, max_value=400, places=3, allow_nan=False)

QUERY = st.fixed_dictionaries(
    {},
    optional={
        "w": st.integers(0, 9000).map(str),
        "h": st.integers(0, 9000).map(str),
        "fit": st.sampled_from(["crop", "scale", "pad"]),
        "crop": st.sampled_from(["top", "bottom,right", "left"]),
        "blur": st.decimals(min_value="0.001", max_value=250, places=3).map(str),
        "rot": DECIMAL.map(str),
        "flip": st.sampled_from(["h", "v", "hv"]),
        "dpr": st.decimals(min_value=1, max_value=4, places=2).map(str),
        "format": st.sampled_from(["jpg", "png", "webp", "gif"]),
        "bg": st.sampled_from(["ffffff", "00000080"]),
    },
)
SOURCES = st.builds(
    lambda width, height, orientation, frames, alpha: replace(
        BASE_INFO,
        size=Size(width, height),
        orientation=orientation,
        frames=frames,
        has_alpha=alpha,
    ),
    st.integers(1, 30000),
    st.integers(1, 30000),
    st.integers(1, 8),
    st.integers(1, 50),
    st.booleans(),
)


def parse(query: dict[str, str], max_side: int) -> ProcessingOptions | None:
    try:
        return parse_options(query, max_side=max_side)
    except InvalidParameterError:
        # dpr can push w or h over the maximum side; that is a 400, tested in test_options.
        return None


@given(
    query=QUERY,
    source=SOURCES,
    max_side=st.integers(1, 8192),
    max_pixels=st.integers(1, 40_000_000),
    allow_enlarge=st.booleans(),
)
def test_plan_within_limits_or_422(
    query: dict[str, str],
    source: codecs.ImageInfo,
    max_side: int,
    max_pixels: int,
    allow_enlarge: bool,
) -> None:
    options = parse(query, max_side)
    if options is None:
        return
    output_format = pipeline.choose_output_format(options, source, None)
    plan = None
    message = ""
    try:
        plan = pipeline.plan_transform(
            options,
            source,
            output_format,
            allow_enlarge=allow_enlarge,
            max_output_side=max_side,
            max_output_pixels=max_pixels,
        )
    except UnprocessableImageError as error:
        message = error.public_message
    if plan is None:
        assert "the result would be" in message
        return

    result = plan.result_size
    assert 1 <= result.width <= max_side
    assert 1 <= result.height <= max_side
    assert result.width * result.height <= max_pixels
    assert plan.output_format is output_format
    assert 0 <= plan.rotation < 360


@given(source=SOURCES, max_pixels=st.integers(1, 10**9))
def test_source_pixel_check_matches_arithmetic(source: codecs.ImageInfo, max_pixels: int) -> None:
    job = ImageJob(
        data=b"",
        options=ProcessingOptions(),
        negotiated_format=OutputFormat.PNG,
        allow_enlarge=True,
        max_pixels=max_pixels,
    )
    total = source.size.width * source.size.height * source.frames

    message = ""
    try:
        check_source_pixels(job, source)
    except UnprocessableImageError as error:
        message = error.public_message

    assert bool(message) == (total > max_pixels)
    if message:
        assert str(total) in message
