"""Signed URLs: HMAC-SHA256 over the path and the canonical transform query.

The signature ``s`` is the URL-safe base64, without padding, of HMAC-SHA256(key, message). The
message, in UTF-8, is the percent-decoded request path (with the source route, starting with
``/``), then, when any transform parameter is present, ``?`` and those parameters sorted by
name as ``name=value`` joined by ``&``. Each value is percent-encoded with only
``A-Z a-z 0-9 - _ . ~`` left as they are. ``s`` itself and unknown parameters (cache busters)
are not signed, since they do not change the output.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable, Sequence
from typing import Final
from urllib.parse import quote

from darkroom_gpu.errors import ForbiddenError
from darkroom_gpu.options import TRANSFORM_PARAMETERS

__all__ = ("SIGNATURE_PARAMETER", "sign", "signing_message", "verify")

SIGNATURE_PARAMETER: Final = "s"


def signing_message(path: str, query: Iterable[tuple[str, str]]) -> bytes:
    """Build the signed message for a request.

    Args:
        path: the percent-decoded request path, starting with ``/``.
        query: the decoded query parameters as (name, value) pairs, in any order.

    Returns:
        The UTF-8 message.
    """
    signed = sorted((name, value) for name, value in query if name in TRANSFORM_PARAMETERS)
    message = path
    if signed:
        message += "?" + "&".join(f"{name}={quote(value, safe='-_.~')}" for name, value in signed)
    return message.encode("utf-8")


def sign(key: str, path: str, query: Iterable[tuple[str, str]]) -> str:
    """Return the signature ``s`` for a request, signed with `key`."""
    digest = hmac.new(key.encode("utf-8"), signing_message(path, query), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def verify(keys: Sequence[str], path: str, query: Sequence[tuple[str, str]]) -> None:
    """Check the request's ``s`` against every key of the source.

    Raises:
        ForbiddenError: ``s`` is missing, given twice, or matches none of `keys`.
    """
    signatures = [value for name, value in query if name == SIGNATURE_PARAMETER]
    if not signatures:
        raise ForbiddenError("this source requires a signed URL; the s parameter is missing")
    if len(signatures) > 1:
        raise ForbiddenError("s: expected a single signature, got several")

    given = signatures[0].encode("ascii", errors="replace")
    for key in keys:
        if hmac.compare_digest(given, sign(key, path, query).encode("ascii")):
            return
    raise ForbiddenError("s: the signature does not match this URL")
