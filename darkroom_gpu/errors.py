"""Errors that map to HTTP responses.

Every failure a client can cause or see is a `ServiceError` subclass carrying its HTTP status,
a stable machine-readable `code` and a `public_message` that is safe to send to the client. The
error middleware is the only place that turns them into responses.
"""

from __future__ import annotations

from typing import ClassVar, Final

__all__ = (
    "quote_value",
    "ForbiddenError",
    "InvalidParameterError",
    "InvalidPathError",
    "NotFoundError",
    "OverloadedError",
    "ProcessingTimeoutError",
    "ServiceError",
    "SourceFailedError",
    "SourceTimeoutError",
    "UnprocessableImageError",
    "UnsupportedMediaTypeError",
)


# Client values quoted in messages are cut to this length, so a huge path stays a short line.
_MAX_QUOTED_LENGTH: Final = 80


def quote_value(value: str) -> str:
    """Quote a client-supplied value for an error message, cut to a readable length."""
    if len(value) > _MAX_QUOTED_LENGTH:
        value = value[:_MAX_QUOTED_LENGTH] + "..."
    return f"'{value}'"


class ServiceError(Exception):
    """Base of every error that becomes an HTTP response with the JSON error shape."""

    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"

    def __init__(self, public_message: str) -> None:
        super().__init__(public_message)
        self.public_message = public_message


class InvalidParameterError(ServiceError):
    """A query parameter has an invalid value, is out of range, or is given twice."""

    status = 400
    code = "invalid_parameter"


class InvalidPathError(ServiceError):
    """The request path has an invalid percent-escape or is not valid UTF-8."""

    status = 400
    code = "invalid_path"


class ForbiddenError(ServiceError):
    """The request is not allowed, for example a missing or wrong signature."""

    status = 403
    code = "forbidden"


class NotFoundError(ServiceError):
    """No route matches, or the object does not exist at the source."""

    status = 404
    code = "not_found"


class UnsupportedMediaTypeError(ServiceError):
    """The bytes do not start like any image format the server reads."""

    status = 415
    code = "unsupported_media_type"


class UnprocessableImageError(ServiceError):
    """The bytes look like a supported format but are corrupt, truncated or over a limit."""

    status = 422
    code = "unprocessable_image"


class SourceFailedError(ServiceError):
    """The source failed: an upstream 5xx, a refused connection or a bad redirect chain."""

    status = 502
    code = "source_failed"


class OverloadedError(ServiceError):
    """The server is over its processing capacity; the client should retry later."""

    status = 503
    code = "overloaded"

    def __init__(self, public_message: str, retry_after: int = 1) -> None:
        super().__init__(public_message)
        self.retry_after = retry_after


class SourceTimeoutError(ServiceError):
    """The source or the processing did not finish within its deadline."""

    status = 504
    code = "timeout"


class ProcessingTimeoutError(ServiceError):
    """The request did not finish within its source's ``limits.max_request_seconds``.

    Not a `SourceTimeoutError`, because a circuit breaker must not count a slow transform
    against the origin.
    """

    status = 504
    code = "timeout"
