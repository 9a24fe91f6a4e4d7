"""The image route: route -> options -> fetch -> conditional check -> cache -> transform."""

from __future__ import annotations

import asyncio
import logging
import time
from email.utils import format_datetime
from typing import Final

from aiohttp import web

from darkroom_gpu import codecs
from darkroom_gpu.cache import CachedResult, result_key
from darkroom_gpu.codecs import MEDIA_TYPES
from darkroom_gpu.config import SourceSettings
from darkroom_gpu.errors import (
    ProcessingTimeoutError,
    ServiceError,
    UnsupportedMediaTypeError,
)
from darkroom_gpu.manipulators import ImageJob
from darkroom_gpu.options import OutputFormat, ProcessingOptions, parse_options
from darkroom_gpu.server.middleware import CLIENT_CLOSED_REQUEST, PROCESSING_DEVICE, SOURCE_NAME
from darkroom_gpu.server.router import Route, decode_path
from darkroom_gpu.server.state import (
    CACHE,
    LIMITER,
    MANIPULATOR,
    METRICS,
    RUNTIME,
    SHARED_STORE,
    TRANSFORMS,
)
from darkroom_gpu.signing import verify
from darkroom_gpu.sources import SourceObject

__all__ = ("handle_image", "negotiate_format")

logger = logging.getLogger(__name__)

# Order of preference when the client accepts several modern formats.
_NEGOTIABLE: Final = ((OutputFormat.AVIF, "image/avif"), (OutputFormat.WEBP, "image/webp"))
# Errors a source raises for the object itself rather than for the origin's health.
_OBJECT_ERRORS: Final = frozenset({"not_found", "unprocessable_image", "invalid_path"})


async def handle_image(request: web.Request) -> web.StreamResponse:
    """Serve one image, transformed by its query parameters."""
    started = time.perf_counter()
    path = decode_path(request.raw_path.split("?", 1)[0])
    with request.app[RUNTIME].acquire() as runtime:
        route = runtime.router.resolve(request.host, path)
        request[SOURCE_NAME] = route.settings.name
        metrics = request.app[METRICS]
        metrics.inflight.inc()
        output_format = "none"
        status = 500
        try:
            with request.app[LIMITER].admit():
                response = await _serve_before_deadline(request, route, started)
            status = response.status
            if response.content_type.startswith("image/"):
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
            metrics.request_duration.labels(route.settings.name).observe(
                time.perf_counter() - started
            )


async def _serve_before_deadline(
    request: web.Request, route: Route, started: float
) -> web.StreamResponse:
    """Serve the request, or raise `ProcessingTimeoutError` at the source's request deadline.

    Cancelling the request cancels its fetch and transform. A transform shared with other
    requests goes on for them; see `Coalescer`.
    """
    seconds = route.settings.limits.max_request_seconds
    # The worker threads cannot be cancelled, so they get the deadline as a clock value and
    # stop between pipeline stages once it has passed.
    deadline = time.monotonic() + seconds
    timeout = asyncio.timeout(seconds)
    try:
        async with timeout:
            return await _serve(request, route, started, deadline)
    except TimeoutError as exc:
        if not timeout.expired():
            raise
        raise ProcessingTimeoutError(
            f"the request did not finish within this source's deadline of {seconds:g} s"
        ) from exc


async def _serve(
    request: web.Request, route: Route, started: float, deadline: float
) -> web.StreamResponse:
    settings = route.settings
    if settings.signing_keys:
        verify(settings.signing_keys, route.request_path, list(request.query.items()))
    options = parse_options(
        request.query, max_side=settings.limits.max_output_side, defaults=settings.defaults
    )
    negotiated = None
    if options.auto_format and options.output_format is None:
        negotiated = negotiate_format(request.headers.get("Accept", ""))

    timings: dict[str, float] = {}
    source_object = await _fetch(request, route, timings)
    # An empty canonical form means identity options (`ProcessingOptions.is_identity`).
    canonical = options.canonical()
    key = result_key(source_object.identity, canonical or "original", negotiated or "")
    headers = _cache_headers(settings, source_object, key, options)
    candidates = _if_none_match(request)
    if headers["ETag"] in candidates:
        return web.Response(status=304, headers=headers)

    if not canonical:
        fmt = codecs.sniff(source_object.data)
        if fmt is None:
            raise UnsupportedMediaTypeError("the source is not an image in a supported format")
        result = CachedResult(body=source_object.data, content_type=MEDIA_TYPES[fmt])
    else:
        result = await _cached_transform(
            request, key, route, source_object, options, negotiated, deadline
        )

    # "*" matches any current representation, so the 304 waits until one has been made. A
    # request that fails then gets its error, not a cacheable 304.
    if "*" in candidates:
        return web.Response(status=304, headers=headers)

    timings.update(result.server_timing)
    headers["Server-Timing"] = _server_timing(timings, started)
    return web.Response(body=result.body, content_type=result.content_type, headers=headers)


async def _fetch(request: web.Request, route: Route, timings: dict[str, float]) -> SourceObject:
    settings = route.settings
    metrics = request.app[METRICS]
    fetch_started = time.perf_counter()
    try:
        return await route.source.fetch(route.path, max_bytes=settings.limits.max_source_bytes)
    except ServiceError as exc:
        if exc.code not in _OBJECT_ERRORS:
            metrics.source_errors.labels(settings.name, exc.code).inc()
        raise
    finally:
        timings["fetch"] = time.perf_counter() - fetch_started
        metrics.stage_duration.labels("fetch", "cpu").observe(timings["fetch"])


async def _cached_transform(
    request: web.Request,
    key: str,
    route: Route,
    source_object: SourceObject,
    options: ProcessingOptions,
    negotiated: OutputFormat | None,
    deadline: float,
) -> CachedResult:
    cache = request.app[CACHE]
    metrics = request.app[METRICS]
    cached = cache.get(key)
    if cached is not None:
        metrics.cache_requests.labels("hit").inc()
        return CachedResult(body=cached.body, content_type=cached.content_type)

    async def transform() -> CachedResult:
        store = request.app[SHARED_STORE]
        stored = await store.get(key) if store is not None else None
        if stored is not None and stored.content_type.startswith("image/"):
            metrics.cache_requests.labels("shared_store").inc()
            cache.put(key, stored)
            return stored

        metrics.cache_requests.labels("miss").inc()
        job = ImageJob(
            data=source_object.data,
            options=options,
            negotiated_format=negotiated,
            allow_enlarge=route.settings.allow_enlarge,
            max_pixels=route.settings.limits.max_source_pixels,
            max_output_side=route.settings.limits.max_output_side,
            max_output_pixels=route.settings.limits.max_output_pixels,
            deadline=deadline,
        )
        manipulator = request.app[MANIPULATOR]
        # Set before processing, so that a request failing there is logged with the device.
        request[PROCESSING_DEVICE] = manipulator.device
        async with request.app[LIMITER].processing():
            image = await manipulator.process(job)
        request[PROCESSING_DEVICE] = image.device or manipulator.device
        for stage, seconds in image.timings.items():
            metrics.stage_duration.labels(stage, manipulator.device).observe(seconds)

        made = CachedResult(
            body=image.data,
            content_type=MEDIA_TYPES[image.output_format.value],
            server_timing=tuple(image.timings.items()),
            device=request[PROCESSING_DEVICE],
        )
        cache.put(key, made)
        if store is not None:
            store.put_later(key, made)
        return made

    result, shared = await request.app[TRANSFORMS].run(key, transform)
    if shared:
        metrics.cache_requests.labels("shared").inc()
        # The transform ran for another request, on this device, and made this response.
        if result.device is not None:
            request[PROCESSING_DEVICE] = result.device
    return result


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


def _cache_headers(
    settings: SourceSettings, source_object: SourceObject, key: str, options: ProcessingOptions
) -> dict[str, str]:
    headers = {
        "Cache-Control": f"public, max-age={settings.cache_ttl}",
        "ETag": f'"{key}"',
    }
    if source_object.last_modified is not None:
        headers["Last-Modified"] = format_datetime(source_object.last_modified, usegmt=True)
    if options.auto_format and options.output_format is None:
        headers["Vary"] = "Accept"
    return headers


def _if_none_match(request: web.Request) -> set[str]:
    """Return the entity tags of ``If-None-Match`` without weak prefixes, ``*`` included."""
    header = request.headers.get("If-None-Match")
    if header is None:
        return set()
    return {candidate.strip().removeprefix("W/") for candidate in header.split(",")}


def _server_timing(timings: dict[str, float], started: float) -> str:
    entries = [f"{stage};dur={seconds * 1000:.1f}" for stage, seconds in timings.items()]
    entries.append(f"total;dur={(time.perf_counter() - started) * 1000:.1f}")
    return ", ".join(entries)
