"""Request ids, the access log and the single place where errors become JSON responses."""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from typing import Final

import orjson
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.typedefs import Handler

from darkroom_gpu.errors import OverloadedError, ServiceError

__all__ = (
    "PROCESSING_DEVICE",
    "REQUEST_ID",
    "SOURCE_NAME",
    "ProtocolErrorFilter",
    "error_response",
    "json_dumps",
    "request_middleware",
)

access_logger = logging.getLogger("darkroom_gpu.access")
logger = logging.getLogger(__name__)

# The status nginx logs when the client goes away first; counted as a 4xx.
CLIENT_CLOSED_REQUEST: Final = 499
REQUEST_ID: Final = web.RequestKey("request_id", str)
SOURCE_NAME: Final = web.RequestKey("source_name", str)
# The device that processed the request's image, such as cpu or cuda:0. Unset when no image was
# processed for the request.
PROCESSING_DEVICE: Final = web.RequestKey("processing_device", str)
REQUEST_ID_HEADER: Final = "X-Request-ID"
# A client-supplied id is echoed only when it is short and plain, so it cannot forge log lines.
_CLIENT_REQUEST_ID: Final = re.compile(r"[A-Za-z0-9._-]{1,64}")

# The words aiohttp's parser errors start with, up to the first colon, quote or line break.
_PARSER_REASON: Final = re.compile(r"[A-Za-z0-9 ,.()-]*")

_HTTP_CODES: Final = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    414: "uri_too_long",
    431: "headers_too_large",
}


def json_dumps(value: object) -> str:
    """Serialise JSON with orjson, for aiohttp's ``dumps=`` hooks."""
    return orjson.dumps(value).decode()


def error_response(status: int, code: str, message: str) -> web.Response:
    """Build the JSON error body shared by every failure, never cacheable."""
    body = orjson.dumps({"error": {"status": status, "code": code, "message": message}})
    return web.Response(
        status=status,
        body=body,
        content_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


@web.middleware
async def request_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Give the request an id, turn any error into the JSON shape, and log one access line."""
    client_id = request.headers.get(REQUEST_ID_HEADER, "")
    request_id = client_id if _CLIENT_REQUEST_ID.fullmatch(client_id) else uuid.uuid4().hex[:16]
    request[REQUEST_ID] = request_id
    started = time.perf_counter()
    error = ""

    try:
        response = await handler(request)
    except asyncio.CancelledError:
        # The client went away or the server is stopping, so no response is sent. The request
        # still gets its access line, with the status that the request metrics count.
        _log_access(
            request,
            CLIENT_CLOSED_REQUEST,
            0,
            request_id,
            time.perf_counter() - started,
            "cancelled",
        )
        raise
    except ServiceError as exc:
        error = exc.public_message
        response = error_response(exc.status, exc.code, exc.public_message)
        if isinstance(exc, OverloadedError):
            response.headers["Retry-After"] = str(exc.retry_after)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _HTTP_CODES.get(exc.status, "http_error")
        error = exc.reason
        response = error_response(exc.status, code, exc.reason)
        for name in ("Allow", "Retry-After"):
            if name in exc.headers:
                response.headers[name] = exc.headers[name]
    except Exception:
        # The last line of defence: a bug. Log it once with its traceback, and tell the client
        # only the request id to quote.
        logger.exception(
            "unhandled error in request %s %s %s", request_id, request.method, request.path
        )
        error = "internal error"
        response = error_response(
            500,
            "internal_error",
            f"internal error; quote request id {request_id} when reporting it",
        )

    response.headers[REQUEST_ID_HEADER] = request_id
    size = response.content_length if response.content_length is not None else 0
    _log_access(request, response.status, size, request_id, time.perf_counter() - started, error)
    return response


def _log_access(
    request: web.Request,
    status: int,
    size: int,
    request_id: str,
    seconds: float,
    error: str,
) -> None:
    level = logging.INFO
    if status >= 500:
        level = logging.ERROR
    elif status >= 400:
        level = logging.WARNING
    # The raw path stays percent-encoded, so a client cannot put line breaks into the log, and
    # the query is left out because it may carry a signature.
    fields: dict[str, object] = {
        "request_id": request_id,
        "method": request.method,
        "path": request.raw_path.split("?", 1)[0],
        "status": status,
        "bytes": size,
        "duration_ms": round(seconds * 1000, 1),
        "source": request.get(SOURCE_NAME),
        "device": request.get(PROCESSING_DEVICE),
    }
    if error:
        fields["error"] = error
    # The same fields go to the message for the text format and to extra= for the JSON one,
    # where a missing source or device is null instead of "-".
    access_logger.log(
        level,
        "request_id=%s method=%s path=%s status=%d bytes=%d duration_ms=%.1f source=%s device=%s%s",
        request_id,
        fields["method"],
        fields["path"],
        status,
        size,
        seconds * 1000,
        fields["source"] or "-",
        fields["device"] or "-",
        f" error={error!r}" if error else "",
        extra=fields,
    )


class ProtocolErrorFilter(logging.Filter):
    """Turns aiohttp's traceback for a request that is not valid HTTP into one warning line.

    Such requests (a bad request line, raw non-ASCII bytes in the URL, oversized headers) are
    rejected by aiohttp's parser with a plain-text 400 before any middleware runs. They are a
    client's mistake, so the traceback aiohttp logs for them at ERROR is noise.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite records caused by a parser error; leave every other record alone."""
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, HttpProcessingError):
            record.msg = "invalid HTTP request rejected by the parser: %s (%s)"
            record.args = (_parser_reason(error), type(error).__name__)
            record.exc_info = None
            record.exc_text = None
            record.levelno = logging.WARNING
            record.levelname = logging.getLevelName(logging.WARNING)
        return True


def _parser_reason(error: HttpProcessingError) -> str:
    """Return the leading plain words of a parser error, without the request bytes it quotes.

    aiohttp's messages quote the offending request line or header after a colon or in quotes
    (``Got more than 8190 bytes when reading: b'...'``), which may hold a URL signature or a
    credential, and may span several lines.
    """
    words = _PARSER_REASON.match(error.message or "")
    reason = words.group().strip() if words else ""
    return reason or "malformed request"
