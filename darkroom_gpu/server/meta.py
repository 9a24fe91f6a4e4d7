"""The metadata route: what a source image is and what a request for it would produce.

``GET /_meta/<source route>/<object path>?<params>`` returns JSON of the form::

    {"source": {"format", "width", "height", "orientation", "alpha", "profile", "frames",
                "bytes"},
     "output": {"format", "width", "height"}}

The source fields come from the header only: no pixel is decoded. ``width`` and ``height`` are
as stored, before EXIF orientation; ``profile`` is the embedded ICC profile's description or
``null``. The output fields are planned from the parameters exactly as the image route plans
them; without transform parameters the image route returns the original bytes, so the output
is then the source's format and stored size.

Signing, routing and errors follow the image route: the signature covers the image path, that
is the request path without the ``/_meta`` prefix.
"""

from __future__ import annotations

import asyncio
from typing import Final

from aiohttp import web

from darkroom_gpu import codecs, pipeline
from darkroom_gpu.codecs import ImageInfo
from darkroom_gpu.codecs.reader import check_pixel_limit
from darkroom_gpu.options import parse_options
from darkroom_gpu.server.image import negotiate_format
from darkroom_gpu.server.middleware import SOURCE_NAME, json_dumps
from darkroom_gpu.server.router import Route, decode_path
from darkroom_gpu.server.state import LIMITER, RUNTIME
from darkroom_gpu.signing import verify

__all__ = ("META_PREFIX", "handle_meta")

META_PREFIX: Final = "/_meta"


async def handle_meta(request: web.Request) -> web.Response:
    """Describe a source image and the output its parameters would produce."""
    path = decode_path(request.raw_path.split("?", 1)[0])
    image_path = path.removeprefix(META_PREFIX)
    with request.app[RUNTIME].acquire() as runtime:
        route = runtime.router.resolve(request.host, image_path)
        request[SOURCE_NAME] = route.settings.name
        # Fetching the source costs as much as for an image, so the same admission applies.
        with request.app[LIMITER].admit():
            return await _describe(request, route)


async def _describe(request: web.Request, route: Route) -> web.Response:
    settings = route.settings
    if settings.signing_keys:
        verify(settings.signing_keys, route.request_path, list(request.query.items()))
    options = parse_options(
        request.query, max_side=settings.limits.max_output_side, defaults=settings.defaults
    )
    negotiated = None
    if options.auto_format and options.output_format is None:
        negotiated = negotiate_format(request.headers.get("Accept", ""))

    source_object = await route.source.fetch(route.path, max_bytes=settings.limits.max_source_bytes)
    info = await asyncio.to_thread(codecs.probe, source_object.data)
    profile = None
    if info.icc_profile is not None:
        profile = await asyncio.to_thread(codecs.profile_description, info.icc_profile)

    if options.is_identity:
        output = {"format": info.format.value, "width": info.size.width, "height": info.size.height}
    else:
        check_pixel_limit(info, info.frames, settings.limits.max_source_pixels)
        output_format = pipeline.choose_output_format(options, info, negotiated)
        plan = pipeline.plan_transform(
            options,
            info,
            output_format,
            allow_enlarge=settings.allow_enlarge,
            max_output_side=settings.limits.max_output_side,
            max_output_pixels=settings.limits.max_output_pixels,
        )
        size = plan.result_size
        output = {"format": output_format.value, "width": size.width, "height": size.height}

    body = {"source": _source_fields(info, profile, len(source_object.data)), "output": output}
    headers = {"Cache-Control": f"public, max-age={settings.cache_ttl}"}
    if options.auto_format and options.output_format is None:
        headers["Vary"] = "Accept"
    return web.json_response(body, headers=headers, dumps=json_dumps)


def _source_fields(info: ImageInfo, profile: str | None, size_bytes: int) -> dict[str, object]:
    return {
        "format": info.format.value,
        "width": info.size.width,
        "height": info.size.height,
        "orientation": info.orientation,
        "alpha": info.has_alpha,
        "profile": profile,
        "frames": info.frames,
        "bytes": size_bytes,
    }
