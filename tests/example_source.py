"""An example third-party source kind, loaded by import path in the extension tests.

`docs/extending.md` walks through this file. Configured as::

    - name: swatches
      prefix: /swatches
      kind: tests.example_source:SwatchSource
      width: 64
      height: 32

it answers ``/swatches/<RRGGBB>.png`` with a PNG of that colour.
"""

from __future__ import annotations

import asyncio
import io
import re
from dataclasses import dataclass
from typing import Final

from PIL import Image

from darkroom_gpu.config import ConfigReader, SourceSettings
from darkroom_gpu.errors import NotFoundError, UnprocessableImageError
from darkroom_gpu.sources import Source, SourceObject

_NAME: Final = re.compile(r"([0-9a-fA-F]{6})\.png")


@dataclass(frozen=True, slots=True)
class SwatchOptions:
    """Size of the generated swatches, in pixels."""

    width: int
    height: int


class SwatchSource(Source):
    """Generates a solid-colour PNG for every ``<RRGGBB>.png`` path."""

    def __init__(self, settings: SourceSettings) -> None:
        super().__init__(settings)
        if not isinstance(settings.options, SwatchOptions):
            raise TypeError(f"expected SwatchOptions, got {type(settings.options).__name__}")
        self.options = settings.options

    @classmethod
    def read_options(cls, reader: ConfigReader) -> SwatchOptions:
        """Read ``width`` and ``height`` (1..4096 pixels, default 16)."""
        return SwatchOptions(
            width=reader.integer("width", 16, 1, 4096),
            height=reader.integer("height", 16, 1, 4096),
        )

    async def fetch(self, path: str, *, max_bytes: int) -> SourceObject:
        """Return a PNG of the colour named by `path`."""
        match = _NAME.fullmatch(path)
        if match is None:
            raise NotFoundError(f"no swatch at {path!r}; expected RRGGBB.png")
        data = await asyncio.to_thread(self._render, match.group(1))
        if len(data) > max_bytes:
            raise UnprocessableImageError(f"swatch is over this source's limit of {max_bytes}")
        return SourceObject(data=data, identity=f"swatch:{path}:{self.options}")

    def _render(self, hex_color: str) -> bytes:
        size = (self.options.width, self.options.height)
        buffer = io.BytesIO()
        Image.new("RGB", size, f"#{hex_color}").save(buffer, "PNG")
        return buffer.getvalue()
