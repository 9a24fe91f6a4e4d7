"""Parse and validate the transform query parameters into a frozen `ProcessingOptions`.

The URL grammar follows Darkroom. Each parameter, with its request syntax:

- ``w``, ``h``: integer pixels from 0 to the maximum side; 0 means unset. One alone keeps the
  aspect ratio.
- ``fit``: absent (fit inside w x h keeping the aspect ratio), ``crop`` (fill w x h, then cut),
  ``scale`` (stretch to exactly w x h) or ``pad`` (fit inside, then extend to w x h with ``bg``).
- ``crop``: the anchor for ``fit=crop``: ``center`` (the default), ``top``, ``bottom``,
  ``left``, ``right``, or a vertical and a horizontal anchor in either order (``top,left``).
- ``mono``: hex ``RRGGBB``. Black ``000000`` gives grayscale, other colours a monochrome tint.
- ``blur``: Gaussian sigma in output pixels, 0 < blur <= 250.
- ``rot``: degrees clockwise, any finite angle up to 360000 in absolute value, normalised to
  [0, 360).
- ``flip``: ``h``, ``v``, ``hv`` or ``vh``.
- ``auto``: comma-separated ``format`` (pick AVIF or WebP from ``Accept``) and ``compress``
  (smaller output at a lower default quality).
- ``format`` or its alias ``fm``: ``jpg``, ``jpeg``, ``png``, ``webp``, ``avif`` or ``gif``.
- ``q``: integer quality for lossy formats, 1 to 100.
- ``dpr``: device pixel ratio from 1 to 4 that multiplies ``w`` and ``h``.
- ``bg``: hex ``RRGGBB`` or ``RRGGBBAA`` used for padding, rotation and alpha flattening.
- ``linear``: ``1`` resizes in linear light (gamma-correct averaging), ``0`` (the default) in
  sRGB values. It only has an effect with ``w`` or ``h``.
- ``progressive``: ``1`` writes progressive JPEGs, ``0`` (the default) baseline ones.

Other parameters, such as the signature ``s`` or a ``v=3`` cache buster, are ignored. Keywords
are case-sensitive lowercase and hex colours are case-insensitive. Every invalid value raises
`InvalidParameterError` with a message of the form ``"<name>: expected <what>, got '<value>'"``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from decimal import Decimal
from enum import StrEnum
from fractions import Fraction
from typing import Final, NamedTuple, TypeVar

from multidict import MultiMapping

from darkroom_gpu.errors import InvalidParameterError

__all__ = (
    "DEFAULT_MAX_SIDE",
    "TRANSFORM_PARAMETERS",
    "Color",
    "FitMode",
    "Gravity",
    "OutputFormat",
    "ProcessingOptions",
    "parse_options",
)

DEFAULT_MAX_SIDE: Final = 8192
"""Default upper bound, in pixels, on ``w``, ``h`` and on each side after ``dpr``."""

TRANSFORM_PARAMETERS: Final[frozenset[str]] = frozenset(
    "w h fit crop mono blur rot flip auto format fm q dpr bg linear progressive".split()
)
"""Every query parameter name that `parse_options` reads; all other names are ignored."""

_MAX_ROTATION: Final = 360000.0
_MAX_BLUR: Final = 250.0
_MIN_DPR: Final = 1.0
_MAX_DPR: Final = 4.0
_MIN_QUALITY: Final = 1
_MAX_QUALITY: Final = 100
# Values longer than this are cut in error messages so that a huge query stays a short log line.
_MAX_QUOTED_LENGTH: Final = 40

_INTEGER_PATTERN: Final = re.compile(r"[0-9]+")
# Plain decimals only: exponents, hex floats, "nan" and "inf" are rejected before float().
_DECIMAL_PATTERN: Final = re.compile(r"-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")
_COLOR_PATTERN: Final = re.compile(r"[0-9a-fA-F]{6}")
_COLOR_ALPHA_PATTERN: Final = re.compile(r"[0-9a-fA-F]{6}(?:[0-9a-fA-F]{2})?")

_T = TypeVar("_T")


class FitMode(StrEnum):
    """Resize rule applied when both ``w`` and ``h`` are set."""

    INSIDE = "inside"
    CROP = "crop"
    SCALE = "scale"
    PAD = "pad"


class Gravity(StrEnum):
    """Crop anchor for ``fit=crop``, with each value spelled as in the canonical URL."""

    CENTER = "center"
    TOP = "top"
    BOTTOM = "bottom"
    LEFT = "left"
    RIGHT = "right"
    TOP_LEFT = "top,left"
    TOP_RIGHT = "top,right"
    BOTTOM_LEFT = "bottom,left"
    BOTTOM_RIGHT = "bottom,right"


class OutputFormat(StrEnum):
    """Encoded output format. The URL spelling ``jpg`` parses to `JPEG`."""

    JPEG = "jpeg"
    PNG = "png"
    WEBP = "webp"
    AVIF = "avif"
    GIF = "gif"


@dataclass(frozen=True, slots=True)
class Color:
    """An sRGB colour with 8-bit channels from 0 to 255, where alpha 255 is opaque."""

    red: int
    green: int
    blue: int
    alpha: int = 255

    def __post_init__(self) -> None:
        """Raise ValueError when a channel is outside 0..255."""
        for channel in (self.red, self.green, self.blue, self.alpha):
            if not 0 <= channel <= 255:
                raise ValueError(f"colour channels must be from 0 to 255, got {self!r}")

    def to_hex(self) -> str:
        """Format the colour as lowercase ``rrggbb``, or ``rrggbbaa`` when it is not opaque.

        Returns:
            Six or eight lowercase hex digits without a leading ``#``.
        """
        digits = f"{self.red:02x}{self.green:02x}{self.blue:02x}"
        if self.alpha != 255:
            digits += f"{self.alpha:02x}"
        return digits


@dataclass(frozen=True, slots=True)
class ProcessingOptions:
    """The validated transform request; every field at its default means "change nothing"."""

    width: int = 0
    """Requested width in pixels before ``dpr``, or 0 when unset."""
    height: int = 0
    """Requested height in pixels before ``dpr``, or 0 when unset."""
    fit: FitMode = FitMode.INSIDE
    gravity: Gravity = Gravity.CENTER
    """Crop anchor, which only has an effect when ``fit`` is `FitMode.CROP`."""
    mono: Color | None = None
    """Tint colour: black gives grayscale, others a monochrome tint, None keeps the colours."""
    blur: float = 0.0
    """Gaussian sigma in output pixels, or 0 for no blur."""
    rotation: float = 0.0
    """Degrees clockwise in [0, 360)."""
    flip_horizontal: bool = False
    flip_vertical: bool = False
    auto_format: bool = False
    auto_compress: bool = False
    output_format: OutputFormat | None = None
    """Explicit output format, or None to decide from the source format and ``auto``."""
    quality: int | None = None
    """Quality from 1 to 100 for lossy formats, or None for the per-format default."""
    dpr: float = 1.0
    """Device pixel ratio from 1 to 4, which only has an effect when a width or height is set."""
    background: Color | None = None
    """Colour for padding, rotation corners and alpha flattening, or None for the default."""
    linear: bool = False
    """Resize in linear light rather than on sRGB values; only has an effect with a resize."""
    progressive: bool = False
    """Write a progressive JPEG; other output formats ignore it."""

    @property
    def target_width(self) -> int:
        """Width in pixels after ``dpr``, rounded half up, or 0 when unset."""
        return _apply_dpr(self.width, self.dpr)

    @property
    def target_height(self) -> int:
        """Height in pixels after ``dpr``, rounded half up, or 0 when unset."""
        return _apply_dpr(self.height, self.dpr)

    @property
    def is_identity(self) -> bool:
        """Whether the options change nothing, so that the source bytes can be served untouched.

        Fields that have no effect on their own (``dpr`` or ``linear`` without a width or
        height, a crop anchor without ``fit=crop``) do not count.
        """
        return not self.canonical()

    def canonical(self) -> str:
        """Build a deterministic query string for cache keys and ETags.

        Equivalent requests give the same string. Parameters are sorted by name, and aliases
        and keyword orders are normalised (``fm=jpg`` becomes ``format=jpeg``, ``flip=vh``
        becomes ``flip=hv``). Numbers are written in their shortest exact form without an
        exponent (``blur=5.0`` becomes ``blur=5``). Parameters at their default or without
        effect are left out. Parsing the string again gives equal options.

        Returns:
            ``name=value`` pairs joined by ``&``, or an empty string for identity options.
        """
        pairs: list[tuple[str, str]] = []
        if self.width:
            pairs.append(("w", str(self.width)))
        if self.height:
            pairs.append(("h", str(self.height)))
        if self.fit is not FitMode.INSIDE:
            pairs.append(("fit", self.fit.value))
        if self.fit is FitMode.CROP and self.gravity is not Gravity.CENTER:
            pairs.append(("crop", self.gravity.value))
        if self.mono is not None:
            pairs.append(("mono", self.mono.to_hex()))
        if self.blur:
            pairs.append(("blur", _format_number(self.blur)))
        if self.rotation:
            pairs.append(("rot", _format_number(self.rotation)))
        if self.flip_horizontal and self.flip_vertical:
            pairs.append(("flip", "hv"))
        elif self.flip_horizontal:
            pairs.append(("flip", "h"))
        elif self.flip_vertical:
            pairs.append(("flip", "v"))
        auto = [
            name
            for name, enabled in (("compress", self.auto_compress), ("format", self.auto_format))
            if enabled
        ]
        if auto:
            pairs.append(("auto", ",".join(auto)))
        if self.output_format is not None:
            pairs.append(("format", self.output_format.value))
        if self.quality is not None:
            pairs.append(("q", str(self.quality)))
        if self.dpr != 1.0 and (self.width or self.height):
            pairs.append(("dpr", _format_number(self.dpr)))
        if self.background is not None:
            pairs.append(("bg", self.background.to_hex()))
        if self.linear and (self.width or self.height):
            pairs.append(("linear", "1"))
        if self.progressive:
            pairs.append(("progressive", "1"))
        return "&".join(f"{name}={value}" for name, value in sorted(pairs))


class _RawValue(NamedTuple):
    """One parameter value as received, remembered with where it came from for error messages."""

    name: str
    value: str
    from_default: bool


def parse_options(
    query: Mapping[str, str] | MultiMapping[str] | Sequence[tuple[str, str]],
    *,
    max_side: int = DEFAULT_MAX_SIDE,
    defaults: Mapping[str, str] | None = None,
) -> ProcessingOptions:
    """Parse and validate the transform parameters of a request.

    Args:
        query: The request query, as a multi-valued mapping (aiohttp's ``request.query``) or a
            sequence of (name, value) pairs so that repeated names are detected. A plain dict
            works too but cannot show repeats.
        max_side: Largest allowed width or height in pixels, for ``w`` and ``h`` and again
            after ``dpr`` is applied.
        defaults: Per-source default parameters, applied for each parameter that the request
            omits. ``format`` and ``fm`` count as one parameter, so a request ``fm`` overrides
            a default ``format``. Each default that is applied is validated like a request
            value, while overridden defaults are not parsed and unknown names are ignored.
            Call ``parse_options([], defaults=...)`` at startup to check every default.

    Returns:
        The validated options. A crop anchor without ``fit=crop`` is reset to the centre and
        a ``dpr`` or ``linear`` without ``w`` or ``h`` is reset to its default, because
        neither has an effect.

    Raises:
        InvalidParameterError: A value is empty, malformed or out of range, a parameter is
            given more than once (``format`` and ``fm`` together count as twice), or ``w`` or
            ``h`` times ``dpr`` exceeds ``max_side``. The message starts with the parameter
            name and quotes the value, and it ends with a note when the value is a default.
        ValueError: ``max_side`` is below 1.
    """
    if max_side < 1:
        raise ValueError(f"max_side must be at least 1, got {max_side}")

    pairs = query.items() if isinstance(query, Mapping) else query
    values = _collect(pairs, from_default=False)
    if defaults:
        for key, raw in _collect(defaults.items(), from_default=True).items():
            values.setdefault(key, raw)
    return _build_options(values, max_side)


def _collect(pairs: Iterable[tuple[str, str]], *, from_default: bool) -> dict[str, _RawValue]:
    """Group the known parameters by name, keying ``fm`` as ``format``, and reject repeats."""
    values: dict[str, _RawValue] = {}
    for name, value in pairs:
        if name not in TRANSFORM_PARAMETERS:
            continue
        key = "format" if name == "fm" else name
        current = values.get(key)
        if current is None:
            values[key] = _RawValue(name, value, from_default)
            continue
        if current.name == name:
            message = (
                f"{name}: expected a single value, got {_quote(current.value)} and {_quote(value)}"
            )
        else:
            message = (
                f"{key}: expected either format or fm, not both, "
                f"got {current.name}={_quote(current.value)} and {name}={_quote(value)}"
            )
        raise InvalidParameterError(message + _origin(current))
    return values


def _build_options(values: Mapping[str, _RawValue], max_side: int) -> ProcessingOptions:
    """Validate every collected value and assemble the options."""

    def parse(key: str, parser: Callable[[_RawValue], _T], default: _T) -> _T:
        raw = values.get(key)
        return default if raw is None else parser(raw)

    flip_horizontal, flip_vertical = parse("flip", _parse_flip, (False, False))
    auto_format, auto_compress = parse("auto", _parse_auto, (False, False))
    options = ProcessingOptions(
        width=parse("w", lambda raw: _parse_integer(raw, 0, max_side), 0),
        height=parse("h", lambda raw: _parse_integer(raw, 0, max_side), 0),
        fit=parse("fit", _parse_fit, FitMode.INSIDE),
        gravity=parse("crop", _parse_gravity, Gravity.CENTER),
        mono=parse("mono", lambda raw: _parse_color(raw, allow_alpha=False), None),
        blur=parse("blur", _parse_blur, 0.0),
        rotation=parse("rot", _parse_rotation, 0.0),
        flip_horizontal=flip_horizontal,
        flip_vertical=flip_vertical,
        auto_format=auto_format,
        auto_compress=auto_compress,
        output_format=parse("format", _parse_output_format, None),
        quality=parse("q", lambda raw: _parse_integer(raw, _MIN_QUALITY, _MAX_QUALITY), None),
        dpr=parse("dpr", _parse_dpr, 1.0),
        background=parse("bg", lambda raw: _parse_color(raw, allow_alpha=True), None),
        linear=parse("linear", _parse_switch, False),
        progressive=parse("progressive", _parse_switch, False),
    )

    # Reset fields that have no effect, so that equivalent requests give equal options.
    if options.fit is not FitMode.CROP:
        options = replace(options, gravity=Gravity.CENTER)
    if not options.width and not options.height:
        options = replace(options, dpr=1.0, linear=False)

    dpr_raw = values.get("dpr")
    if dpr_raw is not None:
        for side, requested, target in (
            ("w", options.width, options.target_width),
            ("h", options.height, options.target_height),
        ):
            if target > max_side:
                raise InvalidParameterError(
                    f"dpr: {side} x dpr is {requested} x {_format_number(options.dpr)} = "
                    f"{target}, over the maximum side {max_side}{_origin(dpr_raw)}"
                )
    return options


_FIT_KEYWORDS: Final = {"crop": FitMode.CROP, "scale": FitMode.SCALE, "pad": FitMode.PAD}
_FORMAT_KEYWORDS: Final = {"jpg": OutputFormat.JPEG} | {fmt.value: fmt for fmt in OutputFormat}
# (horizontal, vertical)
_FLIP_KEYWORDS: Final = {
    "h": (True, False),
    "v": (False, True),
    "hv": (True, True),
    "vh": (True, True),
}
_SWITCH_KEYWORDS: Final = {"0": False, "1": True}
_VERTICAL_ANCHORS: Final = frozenset({"top", "bottom"})
_HORIZONTAL_ANCHORS: Final = frozenset({"left", "right"})


def _parse_integer(raw: _RawValue, low: int, high: int) -> int:
    expected = f"an integer from {low} to {high}"
    if not _INTEGER_PATTERN.fullmatch(raw.value):
        raise _invalid(raw, expected)
    digits = raw.value.lstrip("0") or "0"
    # Compare lengths first: int() refuses strings over 4300 digits, and the limits are small.
    if len(digits) > len(str(high)) or not low <= int(digits) <= high:
        raise _invalid(raw, expected)
    return int(digits)


def _parse_decimal(raw: _RawValue, expected: str, *, allow_negative: bool = False) -> float:
    """Parse a plain decimal such as ``1``, ``1.5`` or ``.5``, raising with ``expected``."""
    if not _DECIMAL_PATTERN.fullmatch(raw.value):
        raise _invalid(raw, expected)
    if raw.value.startswith("-") and not allow_negative:
        raise _invalid(raw, expected)
    number = float(raw.value)
    # Hundreds of digits overflow to inf, which no range accepts.
    if not math.isfinite(number):
        raise _invalid(raw, expected)
    return number


def _parse_blur(raw: _RawValue) -> float:
    expected = f"a decimal number greater than 0 and at most {_format_number(_MAX_BLUR)}"
    sigma = _parse_decimal(raw, expected)
    if not 0.0 < sigma <= _MAX_BLUR:
        raise _invalid(raw, expected)
    return sigma


def _parse_dpr(raw: _RawValue) -> float:
    expected = f"a decimal number from {_format_number(_MIN_DPR)} to {_format_number(_MAX_DPR)}"
    ratio = _parse_decimal(raw, expected)
    if not _MIN_DPR <= ratio <= _MAX_DPR:
        raise _invalid(raw, expected)
    return ratio


def _parse_rotation(raw: _RawValue) -> float:
    limit = _format_number(_MAX_ROTATION)
    expected = f"a decimal number of degrees from -{limit} to {limit}"
    degrees = _parse_decimal(raw, expected, allow_negative=True)
    if abs(degrees) > _MAX_ROTATION:
        raise _invalid(raw, expected)
    normalised = degrees % 360.0
    # A tiny negative angle such as -1e-20 wraps to exactly 360.0 in float arithmetic.
    return 0.0 if normalised >= 360.0 else normalised


def _parse_fit(raw: _RawValue) -> FitMode:
    return _parse_keyword(raw, _FIT_KEYWORDS)


def _parse_output_format(raw: _RawValue) -> OutputFormat:
    return _parse_keyword(raw, _FORMAT_KEYWORDS)


def _parse_flip(raw: _RawValue) -> tuple[bool, bool]:
    """Return (horizontal, vertical)."""
    return _parse_keyword(raw, _FLIP_KEYWORDS)


def _parse_keyword(raw: _RawValue, choices: Mapping[str, _T]) -> _T:
    if raw.value not in choices:
        raise _invalid(raw, "one of " + ", ".join(choices))
    return choices[raw.value]


def _parse_switch(raw: _RawValue) -> bool:
    return _parse_keyword(raw, _SWITCH_KEYWORDS)


def _parse_gravity(raw: _RawValue) -> Gravity:
    expected = "one of center, top, bottom, left, right, or a pair such as top,left in either order"
    parts = raw.value.split(",")
    if len(parts) == 1 and parts[0] in _VERTICAL_ANCHORS | _HORIZONTAL_ANCHORS | {"center"}:
        return Gravity(parts[0])
    if len(parts) == 2:
        vertical = _VERTICAL_ANCHORS.intersection(parts)
        horizontal = _HORIZONTAL_ANCHORS.intersection(parts)
        if len(vertical) == 1 and len(horizontal) == 1:
            (vertical_anchor,) = vertical
            (horizontal_anchor,) = horizontal
            return Gravity(f"{vertical_anchor},{horizontal_anchor}")
    raise _invalid(raw, expected)


def _parse_auto(raw: _RawValue) -> tuple[bool, bool]:
    """Return (format, compress)."""
    expected = "a comma-separated list of format, compress, each at most once"
    parts = raw.value.split(",")
    if len(set(parts)) != len(parts) or not set(parts) <= {"format", "compress"}:
        raise _invalid(raw, expected)
    return "format" in parts, "compress" in parts


def _parse_color(raw: _RawValue, *, allow_alpha: bool) -> Color:
    if allow_alpha:
        pattern, expected = _COLOR_ALPHA_PATTERN, "a hex colour RRGGBB or RRGGBBAA"
    else:
        pattern, expected = _COLOR_PATTERN, "a hex colour RRGGBB"
    if not pattern.fullmatch(raw.value):
        raise _invalid(raw, expected)
    channels = [int(raw.value[start : start + 2], 16) for start in range(0, len(raw.value), 2)]
    return Color(*channels)


def _invalid(raw: _RawValue, expected: str) -> InvalidParameterError:
    return InvalidParameterError(
        f"{raw.name}: expected {expected}, got {_quote(raw.value)}{_origin(raw)}"
    )


def _origin(raw: _RawValue) -> str:
    # A bad default is a server misconfiguration, so point the reader away from the request.
    return " (from the source defaults)" if raw.from_default else ""


def _quote(value: str) -> str:
    if len(value) > _MAX_QUOTED_LENGTH:
        value = value[:_MAX_QUOTED_LENGTH] + "..."
    return repr(value)


def _format_number(number: float) -> str:
    """Write a float in its shortest round-trip form without an exponent or a trailing ``.0``."""
    text = format(Decimal(repr(number)), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def _apply_dpr(length: int, dpr: float) -> int:
    # Multiply by the shortest decimal spelling of dpr rather than its binary approximation,
    # so that 10 x 1.15 is exactly 11.5 and rounds up to 12 as the client expects.
    return math.floor(length * Fraction(repr(dpr)) + Fraction(1, 2))
