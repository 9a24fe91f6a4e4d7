"""The image route: route -> options -> fetch -> conditional check -> transform -> response."""

from __future__ import annotations

import asyncio
import hashlib
import time
from typing import Final

from aiohttp import web

from darkroom_gpu import codecs
from darkroom_gpu.codecs import MEDIA_TYPES
from darkroom_gpu.errors import ServiceError, UnsupportedMediaTypeError
from darkroom_gpu.manipulators import ImageJob
from darkroom_gpu.options import OutputFormat, ProcessingOptions, parse_options
from darkroom_gpu.server.middleware import SOURCE_NAME
from darkroom_gpu.server.router import Route, decode_path
from darkroom_gpu.server.state import MANIPULATOR, METRICS, ROUTER

__all__ = ("handle_image", "negotiate_format")

# The status nginx logs when the client goes away first; counted as a 4xx.
CLIENT_CLOSED_REQUEST: Final = 499
# Order of preference when the client accepts several modern formats.
_NEGOTIABLE: Final = ((OutputFormat.AVIF, "image/avif"), (OutputFormat.WEBP, "image/webp"))


async def handle_image(request: web.Request) -> web.StreamResponse:
    """Serve one image, transformed by its query parameters."""
    started = time.perf_counter()
    path = decode_path(request.raw_path.split("?", 1)[0])
    route = request.app[ROUTER].resolve(request.host, path)
    request[SOURCE_NAME] = route.settings.name
    metrics = request.app[METRICS]
    metrics.inflight.inc()
    output_format = "none"
    status = 500
    try:
        response = await _serve(request, route, started)
        status = response.status
        output_format = response.content_type.removeprefix("image/")
        return response
    except ServiceError as exc:
        status = exc.status
        raise
    except asyncio.CancelledError:
        status = CLIENT_CLOSED_REQUEST
        raise
    finally:
        metrics.inflight.dec()
        metrics.requests.labels(route.settings.name, f"{status // 100}xx", output_format).inc()
        metrics.request_duration.labels(route.settings.name).observe(time.perf_counter() - started)


async def _serve(request: web.Request, route: Route, started: float) -> web.StreamResponse:
    settings = route.settings
    options = parse_options(
        request.query, max_side=settings.limits.max_output_side, defaults=settings.defaults
    )
    negotiated = None
    if options.auto_format and options.output_format is None:
        negotiated = negotiate_format(request.headers.get("Accept", ""))

    fetch_started = time.perf_counter()
    source_object = await route.source.fetch(route.path, max_bytes=settings.limits.max_source_bytes)
    timings = {"fetch": time.perf_counter() - fetch_started}
    request.app[METRICS].stage_duration.labels("fetch", "cpu").observe(timings["fetch"])

    etag = _etag(source_object.identity, options, negotiated)
    headers = {
        "Cache-Control": f"public, max-age={settings.cache_ttl}",
        "ETag": etag,
    }
    if source_object.last_modified is not None:
        headers["Last-Modified"] = source_object.last_modified.strftime("%a, %d %b %Y %H:%M:%S GMT")
    if options.auto_format and options.output_format is None:
        headers["Vary"] = "Accept"

    if options.is_identity:
        fmt = codecs.sniff(source_object.data)
        if fmt is None:
            raise UnsupportedMediaTypeError("the source is not an image in a supported format")
        if _not_modified(request, etag):
            return web.Response(status=304, headers=headers)
        headers["Server-Timing"] = _server_timing(timings, started)
        return web.Response(body=source_object.data, content_type=MEDIA_TYPES[fmt], headers=headers)

    if _not_modified(request, etag):
        return web.Response(status=304, headers=headers)

    job = ImageJob(
        data=source_object.data,
        options=options,
        negotiated_format=negotiated,
        allow_enlarge=settings.allow_enlarge,
        max_pixels=settings.limits.max_source_pixels,
    )
    manipulator = request.app[MANIPULATOR]
    result = await manipulator.process(job)
    for stage, seconds in result.timings.items():
        request.app[METRICS].stage_duration.labels(stage, manipulator.device).observe(seconds)
    timings.update(result.timings)
    headers["Server-Timing"] = _server_timing(timings, started)
    return web.Response(
        body=result.data, content_type=MEDIA_TYPES[result.output_format.value], headers=headers
    )


def negotiate_format(accept: str) -> OutputFormat | None:
    """Choose AVIF, then WebP, when ``Accept`` names it explicitly with q > 0.

    Wildcards such as ``*/*`` or ``image/*`` choose nothing, so the source format is kept.
    Formats this build cannot encode are skipped.
    """
    accepted: set[str] = set()
    for entry in accept.split(","):
        media_type, _, params = entry.strip().partition(";")
        if _quality(params) > 0:
            accepted.add(media_type.strip().lower())

    encodable = codecs.encodable_formats()
    for fmt, media_type in _NEGOTIABLE:
        if media_type in accepted and fmt in encodable:
            return fmt
    return None


def _quality(params: str) -> float:
    for param in params.split(";"):
        name, _, value = param.strip().partition("=")
        if name.strip().lower() == "q":
            try:
                return float(value)
            except ValueError:
                return 0.0
    return 1.0


def _etag(identity: str, options: ProcessingOptions, negotiated: OutputFormat | None) -> str:
    # The output format follows from the source bytes and the options, except for auto=format,
    # where the Accept header decides; so the negotiated format joins the key in that case.
    key = f"{identity}\n{options.canonical()}\n{negotiated or ''}"
    return '"' + hashlib.blake2b(key.encode(), digest_size=16).hexdigest() + '"'


def _not_modified(request: web.Request, etag: str) -> bool:
    header = request.headers.get("If-None-Match")
    if header is None:
        return False
    candidates = [candidate.strip().removeprefix("W/") for candidate in header.split(",")]
    return "*" in candidates or etag in candidates


def _server_timing(timings: dict[str, float], started: float) -> str:
    entries = [f"{stage};dur={seconds * 1000:.1f}" for stage, seconds in timings.items()]
    entries.append(f"total;dur={(time.perf_counter() - started) * 1000:.1f}")
    return ", ".join(entries)
