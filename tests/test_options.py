"""Tests for parsing transform query parameters into `ProcessingOptions`."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from multidict import MultiDict

from darkroom_gpu.errors import InvalidParameterError
from darkroom_gpu.options import (
    TRANSFORM_PARAMETERS,
    Color,
    FitMode,
    Gravity,
    OutputFormat,
    ProcessingOptions,
    parse_options,
)


def split_query(query: str) -> list[tuple[str, str]]:
    """Split ``a=1&b=2`` into pairs without percent- or plus-decoding, keeping repeats."""
    pairs: list[tuple[str, str]] = []
    for item in query.split("&"):
        if item:
            name, _, value = item.partition("=")
            pairs.append((name, value))
    return pairs


def parse(query: str) -> ProcessingOptions:
    return parse_options(split_query(query))


INVALID_CASES = [
    pytest.param("w=abc", "w", "abc", id="w=abc"),
    pytest.param("w=-5", "w", "-5", id="w=-5"),
    pytest.param("w=1.5", "w", "1.5", id="w=1.5"),
    pytest.param("w=100000", "w", "100000", id="w=100000"),
    pytest.param("w=8193", "w", "8193", id="w=8193 one over max"),
    pytest.param("w=+5", "w", "+5", id="w=+5"),
    pytest.param("w= 5", "w", " 5", id="w with space"),
    pytest.param("w=5 ", "w", "5 ", id="w with trailing space"),
    pytest.param("w=", "w", "", id="w empty"),
    pytest.param("w=\u0661\u0662", "w", "\u0661\u0662", id="w arabic digits"),
    pytest.param("w=1e3", "w", "1e3", id="w exponent"),
    pytest.param("w=" + "9" * 5000, "w", "9" * 40, id="w 5000 digits"),
    pytest.param("h=abc", "h", "abc", id="h=abc"),
    pytest.param("h=-1", "h", "-1", id="h=-1"),
    pytest.param("q=0", "q", "0", id="q=0"),
    pytest.param("q=101", "q", "101", id="q=101"),
    pytest.param("q=8.5", "q", "8.5", id="q=8.5"),
    pytest.param("q=", "q", "", id="q empty"),
    pytest.param("rot=abc", "rot", "abc", id="rot=abc"),
    pytest.param("rot=nan", "rot", "nan", id="rot=nan"),
    pytest.param("rot=inf", "rot", "inf", id="rot=inf"),
    pytest.param("rot=-inf", "rot", "-inf", id="rot=-inf"),
    pytest.param("rot=1e2", "rot", "1e2", id="rot exponent"),
    pytest.param("rot=0x10", "rot", "0x10", id="rot hex"),
    pytest.param("rot=360001", "rot", "360001", id="rot over cap"),
    pytest.param("rot=-360000.5", "rot", "-360000.5", id="rot under cap"),
    pytest.param("rot=" + "9" * 400, "rot", "9" * 40, id="rot overflows to inf"),
    pytest.param("rot=--5", "rot", "--5", id="rot double minus"),
    pytest.param("rot=.", "rot", ".", id="rot lone dot"),
    pytest.param("flip=x", "flip", "x", id="flip=x"),
    pytest.param("flip=H", "flip", "H", id="flip uppercase"),
    pytest.param("flip=hh", "flip", "hh", id="flip=hh"),
    pytest.param("format=bmp", "format", "bmp", id="format=bmp"),
    pytest.param("format=JPG", "format", "JPG", id="format uppercase"),
    pytest.param("fm=bmp", "fm", "bmp", id="fm=bmp"),
    pytest.param("fm=", "fm", "", id="fm empty"),
    pytest.param("fit=zz", "fit", "zz", id="fit=zz"),
    pytest.param("fit=inside", "fit", "inside", id="fit=inside"),
    pytest.param("fit=Crop", "fit", "Crop", id="fit mixed case"),
    pytest.param("crop=middle", "crop", "middle", id="crop=middle"),
    pytest.param("crop=top,bottom", "crop", "top,bottom", id="crop=top,bottom"),
    pytest.param("crop=left,left", "crop", "left,left", id="crop=left,left"),
    pytest.param("crop=top,left,right", "crop", "top,left,right", id="crop three anchors"),
    pytest.param("crop=center,top", "crop", "center,top", id="crop=center,top"),
    pytest.param("crop=top,", "crop", "top,", id="crop trailing comma"),
    pytest.param("crop=Top", "crop", "Top", id="crop mixed case"),
    pytest.param("mono=zz", "mono", "zz", id="mono=zz"),
    pytest.param("mono=fffff", "mono", "fffff", id="mono five digits"),
    pytest.param("mono=ffffff80", "mono", "ffffff80", id="mono with alpha"),
    pytest.param("mono=#ffffff", "mono", "#ffffff", id="mono with hash"),
    pytest.param("mono=", "mono", "", id="mono empty"),
    pytest.param("blur=0", "blur", "0", id="blur=0"),
    pytest.param("blur=0.0", "blur", "0.0", id="blur=0.0"),
    pytest.param("blur=251", "blur", "251", id="blur=251"),
    pytest.param("blur=250.01", "blur", "250.01", id="blur=250.01"),
    pytest.param("blur=-1", "blur", "-1", id="blur negative"),
    pytest.param("blur=nan", "blur", "nan", id="blur=nan"),
    pytest.param("blur=1e1", "blur", "1e1", id="blur exponent"),
    pytest.param("blur=0." + "0" * 400 + "1", "blur", "0.000", id="blur underflows to 0"),
    pytest.param("dpr=0.5", "dpr", "0.5", id="dpr=0.5"),
    pytest.param("dpr=5", "dpr", "5", id="dpr=5"),
    pytest.param("dpr=4.01", "dpr", "4.01", id="dpr=4.01"),
    pytest.param("dpr=inf", "dpr", "inf", id="dpr=inf"),
    pytest.param("dpr=-2", "dpr", "-2", id="dpr negative"),
    pytest.param("bg=12345", "bg", "12345", id="bg=12345"),
    pytest.param("bg=1234567", "bg", "1234567", id="bg seven digits"),
    pytest.param("bg=gggggg", "bg", "gggggg", id="bg not hex"),
    pytest.param("bg=", "bg", "", id="bg empty"),
    pytest.param("auto=faster", "auto", "faster", id="auto=faster"),
    pytest.param("auto=format,format", "auto", "format,format", id="auto repeated entry"),
    pytest.param("auto=format,", "auto", "format,", id="auto trailing comma"),
    pytest.param("auto=", "auto", "", id="auto empty"),
    pytest.param("w=1&w=2", "w", "2", id="w given twice"),
    pytest.param("w=1&w=1", "w", "1", id="w given twice same value"),
    pytest.param("q=80&blur=2&q=90", "q", "90", id="q given twice apart"),
    pytest.param("fm=png&fm=jpg", "fm", "jpg", id="fm given twice"),
    pytest.param("format=png&fm=jpg", "format", "jpg", id="format and fm"),
    pytest.param("fm=jpg&format=png", "format", "png", id="fm and format"),
]


@pytest.mark.parametrize(("query", "name", "value"), INVALID_CASES)
def test_parse_rejects_invalid(query: str, name: str, value: str) -> None:
    pattern = f"^{re.escape(name)}: expected .*{re.escape(repr(value)[:-1])}"
    with pytest.raises(InvalidParameterError, match=pattern):
        parse(query)


def test_error_message_wording() -> None:
    cases = {
        "w=abc": "w: expected an integer from 0 to 8192, got 'abc'",
        "fit=zz": "fit: expected one of crop, scale, pad, got 'zz'",
        "q=0": "q: expected an integer from 1 to 100, got '0'",
        "mono=zz": "mono: expected a hex colour RRGGBB, got 'zz'",
        "w=1&w=2": "w: expected a single value, got '1' and '2'",
        "w=4000&dpr=4": "dpr: w x dpr is 4000 x 4 = 16000, over the maximum side 8192",
        # In range, but exponents are not accepted, so the message names a decimal number.
        "rot=1e5": "rot: expected a decimal number of degrees from -360000 to 360000, got '1e5'",
        "blur=1e2": "blur: expected a decimal number greater than 0 and at most 250, got '1e2'",
        "dpr=2e0": "dpr: expected a decimal number from 1 to 4, got '2e0'",
        "w=+5": "w: expected an integer from 0 to 8192, got '+5'",
    }
    for query, message in cases.items():
        with pytest.raises(InvalidParameterError) as caught:
            parse(query)
        assert caught.value.public_message == message


def test_error_truncates_long_value() -> None:
    with pytest.raises(InvalidParameterError) as caught:
        parse("fit=" + "x" * 1000)
    message = caught.value.public_message
    assert message.endswith("got '" + "x" * 40 + "...'")
    assert len(message) < 150


@pytest.mark.parametrize(
    ("query", "max_side", "pattern"),
    [
        pytest.param("w=4000&dpr=4", 8192, r"^dpr: w x dpr is 4000 x 4 = 16000, ", id="w x 4"),
        pytest.param("h=3000&dpr=3", 8192, r"^dpr: h x dpr is 3000 x 3 = 9000, ", id="h x 3"),
        pytest.param("w=100&dpr=2.5", 200, r"^dpr: .* = 250, over the maximum side 200", id="250"),
        pytest.param("w=600", 500, r"^w: expected an integer from 0 to 500, got '600'", id="w"),
    ],
)
def test_parse_rejects_over_max_side(query: str, max_side: int, pattern: str) -> None:
    with pytest.raises(InvalidParameterError, match=pattern):
        parse_options(split_query(query), max_side=max_side)


def test_parse_rejects_bad_max_side() -> None:
    with pytest.raises(ValueError, match="max_side"):
        parse_options([], max_side=0)


VALID_CASES = [
    pytest.param("", ProcessingOptions(), id="empty"),
    pytest.param("v=3&s=abc", ProcessingOptions(), id="unknown and signature ignored"),
    pytest.param("v=3&v=4", ProcessingOptions(), id="unknown given twice ignored"),
    pytest.param("w=300", ProcessingOptions(width=300), id="w=300"),
    pytest.param("w=0100", ProcessingOptions(width=100), id="w leading zero"),
    pytest.param("w=0", ProcessingOptions(), id="w=0"),
    pytest.param("w=8192&h=8192", ProcessingOptions(width=8192, height=8192), id="max side"),
    pytest.param("h=50", ProcessingOptions(height=50), id="h=50"),
    pytest.param(
        "w=1&h=1&fit=crop",
        ProcessingOptions(width=1, height=1, fit=FitMode.CROP),
        id="fit=crop",
    ),
    pytest.param("fit=scale", ProcessingOptions(fit=FitMode.SCALE), id="fit=scale"),
    pytest.param("fit=pad", ProcessingOptions(fit=FitMode.PAD), id="fit=pad"),
    pytest.param(
        "fit=crop&crop=left,top",
        ProcessingOptions(fit=FitMode.CROP, gravity=Gravity.TOP_LEFT),
        id="crop=left,top",
    ),
    pytest.param(
        "fit=crop&crop=bottom,right",
        ProcessingOptions(fit=FitMode.CROP, gravity=Gravity.BOTTOM_RIGHT),
        id="crop=bottom,right",
    ),
    pytest.param(
        "fit=crop&crop=right",
        ProcessingOptions(fit=FitMode.CROP, gravity=Gravity.RIGHT),
        id="crop=right",
    ),
    pytest.param(
        "fit=crop&crop=center",
        ProcessingOptions(fit=FitMode.CROP),
        id="crop=center",
    ),
    pytest.param("crop=top", ProcessingOptions(), id="crop without fit=crop reset"),
    pytest.param("mono=000000", ProcessingOptions(mono=Color(0, 0, 0)), id="mono black"),
    pytest.param("mono=FFaa00", ProcessingOptions(mono=Color(255, 170, 0)), id="mono mixed case"),
    pytest.param("blur=5", ProcessingOptions(blur=5.0), id="blur=5"),
    pytest.param("blur=.5", ProcessingOptions(blur=0.5), id="blur=.5"),
    pytest.param("blur=250", ProcessingOptions(blur=250.0), id="blur=250"),
    pytest.param("rot=90", ProcessingOptions(rotation=90.0), id="rot=90"),
    pytest.param("rot=-30", ProcessingOptions(rotation=330.0), id="rot=-30"),
    pytest.param("rot=360", ProcessingOptions(), id="rot=360"),
    pytest.param("rot=720.5", ProcessingOptions(rotation=0.5), id="rot=720.5"),
    pytest.param("rot=-360000", ProcessingOptions(), id="rot=-360000"),
    pytest.param("rot=-0", ProcessingOptions(), id="rot=-0"),
    pytest.param("rot=-0.00000000000000001", ProcessingOptions(), id="rot tiny negative"),
    pytest.param("flip=h", ProcessingOptions(flip_horizontal=True), id="flip=h"),
    pytest.param("flip=v", ProcessingOptions(flip_vertical=True), id="flip=v"),
    pytest.param(
        "flip=vh",
        ProcessingOptions(flip_horizontal=True, flip_vertical=True),
        id="flip=vh",
    ),
    pytest.param("auto=format", ProcessingOptions(auto_format=True), id="auto=format"),
    pytest.param("auto=compress", ProcessingOptions(auto_compress=True), id="auto=compress"),
    pytest.param(
        "auto=compress,format",
        ProcessingOptions(auto_format=True, auto_compress=True),
        id="auto=compress,format",
    ),
    pytest.param("format=jpg", ProcessingOptions(output_format=OutputFormat.JPEG), id="jpg"),
    pytest.param("format=jpeg", ProcessingOptions(output_format=OutputFormat.JPEG), id="jpeg"),
    pytest.param("fm=webp", ProcessingOptions(output_format=OutputFormat.WEBP), id="fm=webp"),
    pytest.param("fm=avif", ProcessingOptions(output_format=OutputFormat.AVIF), id="fm=avif"),
    pytest.param("format=gif", ProcessingOptions(output_format=OutputFormat.GIF), id="gif"),
    pytest.param("format=png", ProcessingOptions(output_format=OutputFormat.PNG), id="png"),
    pytest.param("q=1", ProcessingOptions(quality=1), id="q=1"),
    pytest.param("q=100", ProcessingOptions(quality=100), id="q=100"),
    pytest.param("w=100&dpr=2", ProcessingOptions(width=100, dpr=2.0), id="dpr=2"),
    pytest.param("h=10&dpr=1.5", ProcessingOptions(height=10, dpr=1.5), id="dpr=1.5"),
    pytest.param("dpr=3", ProcessingOptions(), id="dpr without size reset"),
    pytest.param("bg=FFFFFF", ProcessingOptions(background=Color(255, 255, 255)), id="bg"),
    pytest.param(
        "bg=ff000080",
        ProcessingOptions(background=Color(255, 0, 0, 128)),
        id="bg with alpha",
    ),
]


@pytest.mark.parametrize(("query", "expected"), VALID_CASES)
def test_parse_valid(query: str, expected: ProcessingOptions) -> None:
    assert parse(query) == expected


def test_parse_all_parameters() -> None:
    options = parse(
        "w=300&h=200&fit=crop&crop=left,top&fm=jpg&rot=-90&blur=1.5&mono=FF8000"
        "&auto=format,compress&dpr=1.5&bg=ff000080&flip=vh&q=080&v=3&s=signature"
    )
    assert options.width == 300
    assert options.height == 200
    assert options.fit is FitMode.CROP
    assert options.gravity is Gravity.TOP_LEFT
    assert options.output_format is OutputFormat.JPEG
    assert options.rotation == 270.0
    assert options.blur == 1.5
    assert options.mono == Color(255, 128, 0)
    assert options.auto_format
    assert options.auto_compress
    assert options.dpr == 1.5
    assert options.background == Color(255, 0, 0, 128)
    assert options.flip_horizontal
    assert options.flip_vertical
    assert options.quality == 80
    assert options.target_width == 450
    assert options.target_height == 300
    assert options.canonical() == (
        "auto=compress,format&bg=ff000080&blur=1.5&crop=top,left&dpr=1.5&fit=crop&flip=hv"
        "&format=jpeg&h=200&mono=ff8000&q=80&rot=270&w=300"
    )


@pytest.mark.parametrize(
    ("query", "target_width", "target_height"),
    [
        pytest.param("", 0, 0, id="unset"),
        pytest.param("w=100&h=50", 100, 50, id="dpr 1"),
        pytest.param("w=3&dpr=1.5", 5, 0, id="4.5 rounds up"),
        pytest.param("w=10&dpr=1.15", 12, 0, id="11.5 from decimal dpr rounds up"),
        pytest.param("w=3&h=7&dpr=1.1", 3, 8, id="3.3 down 7.7 up"),
        pytest.param("h=100&dpr=2", 0, 200, id="h only"),
        pytest.param("w=2048&dpr=4", 8192, 0, id="exactly max side"),
    ],
)
def test_target_size(query: str, target_width: int, target_height: int) -> None:
    options = parse(query)
    assert options.target_width == target_width
    assert options.target_height == target_height


def test_parse_multidict() -> None:
    query = MultiDict([("w", "100"), ("fm", "png")])
    assert parse_options(query) == ProcessingOptions(width=100, output_format=OutputFormat.PNG)


def test_parse_multidict_repeat() -> None:
    with pytest.raises(InvalidParameterError, match=r"^h: expected a single value"):
        parse_options(MultiDict([("h", "1"), ("h", "2")]))


def test_parse_plain_dict() -> None:
    assert parse_options({"w": "100", "v": "3"}) == ProcessingOptions(width=100)


EQUIVALENT_QUERIES = [
    pytest.param("fm=jpg", "format=jpeg", id="fm=jpg"),
    pytest.param("flip=vh", "flip=hv", id="flip=vh"),
    pytest.param("fit=crop&crop=left,top", "fit=crop&crop=top,left", id="crop=left,top"),
    pytest.param("fit=crop&crop=center&w=1&h=1", "fit=crop&w=1&h=1", id="crop=center"),
    pytest.param("crop=top&w=10", "w=10", id="crop without fit=crop"),
    pytest.param("fit=pad&crop=left&w=1&h=1", "fit=pad&w=1&h=1", id="crop with fit=pad"),
    pytest.param("w=0", "", id="w=0"),
    pytest.param("w=0100", "w=100", id="w leading zero"),
    pytest.param("w=100&dpr=1", "w=100", id="dpr=1"),
    pytest.param("w=100&dpr=1.0", "w=100", id="dpr=1.0"),
    pytest.param("dpr=2", "", id="dpr without size"),
    pytest.param("rot=360", "", id="rot=360"),
    pytest.param("rot=0", "", id="rot=0"),
    pytest.param("rot=-90", "rot=270", id="rot=-90"),
    pytest.param("rot=450", "rot=90", id="rot=450"),
    pytest.param("blur=5", "blur=5.0", id="blur=5.0"),
    pytest.param("blur=.5", "blur=0.50", id="blur=.5"),
    pytest.param("mono=FFFFFF", "mono=ffffff", id="mono case"),
    pytest.param("bg=FF0000", "bg=ff0000ff", id="bg opaque alpha"),
    pytest.param("auto=compress,format", "auto=format,compress", id="auto order"),
    pytest.param("q=080", "q=80", id="q leading zero"),
    pytest.param("h=50&w=100", "w=100&h=50", id="parameter order"),
    pytest.param("w=100&v=3&s=abc", "w=100", id="unknown parameters"),
]


@pytest.mark.parametrize(("first", "second"), EQUIVALENT_QUERIES)
def test_canonical_equivalent(first: str, second: str) -> None:
    assert parse(first).canonical() == parse(second).canonical()


DISTINCT_QUERIES = [
    "",
    "w=100",
    "h=100",
    "w=100&h=100",
    "w=100&h=100&fit=crop",
    "w=100&h=100&fit=scale",
    "w=100&h=100&fit=pad",
    "w=100&h=100&fit=crop&crop=top",
    "w=100&h=100&fit=crop&crop=bottom",
    "w=100&h=100&fit=crop&crop=top,left",
    "mono=000000",
    "mono=ff0000",
    "blur=1",
    "blur=1.5",
    "blur=0.1",
    "blur=0.10000001",
    "rot=90",
    "rot=90.5",
    "flip=h",
    "flip=v",
    "flip=hv",
    "auto=format",
    "auto=compress",
    "auto=format,compress",
    "format=png",
    "format=webp",
    "q=80",
    "q=81",
    "w=100&dpr=2",
    "w=100&dpr=2.5",
    "bg=ffffff",
    "bg=ffffff80",
]


def test_canonical_distinct() -> None:
    forms = [parse(query).canonical() for query in DISTINCT_QUERIES]
    assert len(set(forms)) == len(forms)


def test_canonical_tiny_blur_no_exponent() -> None:
    assert parse("blur=0.0000001").canonical() == "blur=0.0000001"


@pytest.mark.parametrize(
    ("query", "identity"),
    [
        pytest.param("", True, id="empty"),
        pytest.param("v=3", True, id="v=3"),
        pytest.param("rot=360", True, id="rot=360"),
        pytest.param("dpr=2", True, id="dpr alone"),
        pytest.param("crop=top", True, id="crop alone"),
        pytest.param("w=100", False, id="w=100"),
        pytest.param("q=80", False, id="q=80"),
        pytest.param("bg=ffffff", False, id="bg alone"),
        pytest.param("fm=png", False, id="fm=png"),
        pytest.param("linear=1", True, id="linear alone"),
        pytest.param("progressive=1", False, id="progressive alone"),
        pytest.param("progressive=0", True, id="progressive=0"),
    ],
)
def test_is_identity(query: str, identity: bool) -> None:
    assert parse(query).is_identity is identity


def test_defaults_applied() -> None:
    options = parse_options([("w", "100")], defaults={"q": "80", "fm": "webp", "w": "50"})
    assert options.width == 100
    assert options.quality == 80
    assert options.output_format is OutputFormat.WEBP


def test_defaults_overridden() -> None:
    options = parse_options([("q", "50")], defaults={"q": "80"})
    assert options.quality == 50


@pytest.mark.parametrize(
    ("query", "default_name"),
    [
        pytest.param("fm=png", "format", id="request fm over default format"),
        pytest.param("format=png", "fm", id="request format over default fm"),
    ],
)
def test_defaults_format_alias(query: str, default_name: str) -> None:
    options = parse_options(split_query(query), defaults={default_name: "webp"})
    assert options.output_format is OutputFormat.PNG


@pytest.mark.parametrize(
    ("defaults", "pattern"),
    [
        pytest.param({"q": "0"}, r"^q: expected .*'0' \(from the source defaults\)$", id="q=0"),
        pytest.param({"fit": "zz"}, r"^fit: expected .*'zz'", id="fit=zz"),
        pytest.param({"format": "png", "fm": "jpg"}, r"^format: expected either", id="both"),
        pytest.param({"dpr": "4"}, r"^dpr: w x dpr is 5000 x 4 .*source defaults", id="dpr"),
    ],
)
def test_defaults_invalid(defaults: dict[str, str], pattern: str) -> None:
    with pytest.raises(InvalidParameterError, match=pattern):
        parse_options([("w", "5000")], defaults=defaults)


def test_color_rejects_bad_channel() -> None:
    with pytest.raises(ValueError, match="0 to 255"):
        Color(256, 0, 0)


@pytest.mark.parametrize(
    ("color", "digits"),
    [
        pytest.param(Color(0, 0, 0), "000000", id="black"),
        pytest.param(Color(255, 170, 1), "ffaa01", id="opaque"),
        pytest.param(Color(1, 2, 3, 0), "01020300", id="transparent"),
    ],
)
def test_color_to_hex(color: Color, digits: str) -> None:
    assert color.to_hex() == digits


def test_transform_parameters() -> None:
    expected = {"w", "h", "fit", "crop", "mono", "blur", "rot", "flip"}
    expected |= {"auto", "format", "fm", "q", "dpr", "bg", "linear", "progressive"}
    assert expected == TRANSFORM_PARAMETERS


NUMBER_LIKE = st.from_regex(r"-?[0-9]{0,6}\.?[0-9]{0,6}(e[0-9])?", fullmatch=True)
ANY_VALUE = st.one_of(st.text(max_size=30), NUMBER_LIKE)
ANY_NAME = st.sampled_from(sorted(TRANSFORM_PARAMETERS | {"v", "s"}))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(ANY_NAME, ANY_VALUE), max_size=6))
def test_parse_arbitrary_text(pairs: list[tuple[str, str]]) -> None:
    # Any other exception type fails the test by propagating.
    message = ""
    try:
        parse_options(pairs)
    except InvalidParameterError as error:
        message = error.public_message
    if message:
        assert message.split(":", 1)[0] in TRANSFORM_PARAMETERS


def decimal_text(number: float) -> str:
    """Write a float as a plain decimal without an exponent."""
    return format(Decimal(repr(number)), "f")


def hex_color(digits: int) -> st.SearchStrategy[str]:
    return st.text(alphabet="0123456789abcdefABCDEF", min_size=digits, max_size=digits)


VALID_QUERY = st.fixed_dictionaries(
    {},
    optional={
        "w": st.integers(0, 2048).map(str),
        "h": st.integers(0, 2048).map(str),
        "fit": st.sampled_from(["crop", "scale", "pad"]),
        "crop": st.sampled_from(["center", "top", "bottom", "left", "right", "left,top"]),
        "mono": hex_color(6),
        "blur": st.floats(1e-9, 250).map(decimal_text),
        "rot": st.floats(-360000, 360000).map(decimal_text),
        "flip": st.sampled_from(["h", "v", "hv", "vh"]),
        "auto": st.sampled_from(["format", "compress", "compress,format"]),
        "fm": st.sampled_from(["jpg", "jpeg", "png", "webp", "avif", "gif"]),
        "q": st.integers(1, 100).map(str),
        "dpr": st.floats(1, 4).map(decimal_text),
        "bg": st.one_of(hex_color(6), hex_color(8)),
        "linear": st.sampled_from(["0", "1"]),
        "progressive": st.sampled_from(["0", "1"]),
    },
)


@settings(max_examples=200, deadline=None)
@given(VALID_QUERY)
def test_canonical_round_trip(query: dict[str, str]) -> None:
    options = parse_options(query)
    reparsed = parse_options(split_query(options.canonical()))
    assert reparsed == options
    assert reparsed.canonical() == options.canonical()


@pytest.mark.parametrize(
    ("query", "linear", "progressive", "canonical"),
    [
        pytest.param("w=10", False, False, "w=10", id="defaults"),
        pytest.param("w=10&linear=1", True, False, "linear=1&w=10", id="linear"),
        pytest.param("w=10&linear=0", False, False, "w=10", id="linear off"),
        pytest.param("linear=1", False, False, "", id="linear without resize"),
        pytest.param("progressive=1", False, True, "progressive=1", id="progressive"),
    ],
)
def test_switch_parameters(query: str, linear: bool, progressive: bool, canonical: str) -> None:
    options = parse(query)

    assert options.linear is linear
    assert options.progressive is progressive
    assert options.canonical() == canonical


@pytest.mark.parametrize("value", ["true", "2", "", "yes", "01"])
@pytest.mark.parametrize("name", ["linear", "progressive"])
def test_switch_rejects_other_values(name: str, value: str) -> None:
    with pytest.raises(InvalidParameterError, match=f"^{name}: expected one of 0, 1, got"):
        parse(f"w=10&{name}={value}")


def test_switch_from_source_defaults() -> None:
    options = parse_options([("w", "10")], defaults={"linear": "1", "progressive": "1"})

    assert options.linear
    assert options.progressive
