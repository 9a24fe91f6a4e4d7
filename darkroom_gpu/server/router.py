"""Route a request to its source by ``Host`` header and path prefix."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final
from urllib.parse import unquote_to_bytes

from darkroom_gpu.config import SourceSettings
from darkroom_gpu.errors import InvalidPathError, NotFoundError, quote_value
from darkroom_gpu.sources import Source
from darkroom_gpu.sources.kinds import resolve_source_kind
from darkroom_gpu.sources.resilience import ResilientSource

__all__ = ("Route", "SourceRouter", "decode_path")

_BAD_ESCAPE: Final = re.compile(r"%(?![0-9A-Fa-f]{2})")


@dataclass(frozen=True, slots=True)
class Route:
    """A matched source and the object path below its route.

    Attributes:
        settings: the source's configuration.
        source: the fetcher.
        path: the percent-decoded object path, without the route prefix or a leading slash.
        request_path: the whole percent-decoded request path, route prefix included.
    """

    settings: SourceSettings
    source: Source
    path: str
    request_path: str


class SourceRouter:
    """Finds the source for a request.

    Sources routed by ``Host`` win over those routed by path prefix alone; among prefixes the
    longest match wins, matching whole path segments only (``/web`` never matches ``/webcam``).
    """

    def __init__(self, sources: tuple[SourceSettings, ...]) -> None:
        self._entries = [(settings, _create_source(settings)) for settings in sources]

    def resolve(self, host: str | None, path: str) -> Route:
        """Return the route for a request.

        Args:
            host: the ``Host`` header, possibly with a port.
            path: the percent-decoded request path, starting with ``/``.

        Raises:
            NotFoundError: no source matches.
        """
        host_name = _host_name(host)
        best: tuple[int, SourceSettings, Source] | None = None
        for settings, source in self._entries:
            if settings.hosts and host_name not in settings.hosts:
                continue
            prefix = settings.prefix or ""
            if prefix and not (path == prefix or path.startswith(prefix + "/")):
                continue
            rank = len(prefix) + (1 << 20 if settings.hosts else 0)
            if best is None or rank > best[0]:
                best = (rank, settings, source)

        if best is None:
            raise NotFoundError(f"no source is routed at {quote_value(path)}")
        _, settings, source = best
        object_path = path[len(settings.prefix or "") :]
        # Only the slash after the route goes, so "//x.jpg" keeps an empty segment and fails
        # in the source instead of aliasing "/x.jpg".
        object_path = object_path.removeprefix("/")
        return Route(settings=settings, source=source, path=object_path, request_path=path)

    async def close(self) -> None:
        """Close every source."""
        for _, source in self._entries:
            await source.close()


def decode_path(raw_path: str) -> str:
    """Percent-decode a raw request path strictly.

    Raises:
        InvalidPathError: a ``%`` is not followed by two hex digits, or the bytes are not UTF-8.
    """
    if _BAD_ESCAPE.search(raw_path):
        raise InvalidPathError(
            "path: invalid percent-escape; expected % followed by two hex digits"
        )
    try:
        return unquote_to_bytes(raw_path).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidPathError("path: percent-decoded bytes are not valid UTF-8") from exc


def _create_source(settings: SourceSettings) -> Source:
    # Every kind, built-in or imported, gets the circuit breaker and request coalescing.
    return ResilientSource(resolve_source_kind(settings.kind)(settings))


def _host_name(host: str | None) -> str:
    """Return the lower-case host of a ``Host`` header without its port (IPv6 keeps brackets)."""
    host = (host or "").strip().lower()
    if host.startswith("["):
        return host.partition("]")[0] + "]"
    return host.partition(":")[0]
