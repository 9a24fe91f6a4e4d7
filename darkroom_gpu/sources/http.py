"""A source that fetches originals over HTTP from below one base URL (Darkroom's web folder)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import re
import socket
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from functools import partial
from typing import Final
from urllib.parse import quote, unquote

import aiohttp
from yarl import URL

from darkroom_gpu.config.reader import ConfigReader
from darkroom_gpu.config.settings import SourceSettings
from darkroom_gpu.errors import (
    ForbiddenError,
    NotFoundError,
    SourceFailedError,
    SourceTimeoutError,
    UnprocessableImageError,
)
from darkroom_gpu.sources.addresses import (
    IPAddress,
    IPNetwork,
    PinnedResolver,
    Resolve,
    blocked_reason,
    ip_literal,
    is_allowed,
    parse_network,
    system_resolve,
)
from darkroom_gpu.sources.base import Source, SourceObject
from darkroom_gpu.sources.resilience import (
    Timeouts,
    TransientError,
    read_retries,
    read_timeouts,
    retry_transient,
)

__all__ = ("HttpOptions", "HttpSource", "parse_base_url")

logger = logging.getLogger(__name__)

USER_AGENT: Final = "darkroom-gpu"
MAX_REDIRECTS: Final = 20
_CHUNK_BYTES: Final = 64 * 1024
_REDIRECT_STATUSES: Final = frozenset((301, 302, 303, 307, 308))
# Upstream statuses that mean "try again later" rather than "this request is invalid".
_TRANSIENT_STATUSES: Final = frozenset((502, 503, 504))
# The user information of a URL (``user:password@`` after ``//``), even in a malformed URL.
_USER_INFO: Final = re.compile(r"(?<=//)[^/?#]*@")


@dataclass(frozen=True, slots=True)
class HttpOptions:
    """Options of an HTTP source.

    Attributes:
        base_url: the ``http`` or ``https`` URL that object paths are appended to; a missing
            trailing slash is added. Credentials in it (``https://user:pass@host/``) are sent as
            basic authentication and never appear in messages.
        timeouts: connect, read and total deadlines of one fetch.
        max_redirects: redirects followed per fetch; one more is a 502.
        retries: retries of a transient failure after the first try.
        allowed_networks: networks the origin may be in although they are not public, such as
            ``127.0.0.0/8`` for an origin on the same host. Public addresses are always
            allowed (see `darkroom_gpu.sources.addresses`).
    """

    base_url: str
    timeouts: Timeouts = field(default_factory=Timeouts)
    max_redirects: int = 3
    retries: int = 2
    allowed_networks: tuple[IPNetwork, ...] = ()


def parse_base_url(text: str) -> URL:
    """Parse and check a base URL, adding the trailing slash when it is missing.

    Raises:
        ValueError: with a message for the configuration error, when the URL is not an absolute
            ``http`` or ``https`` URL without query and fragment.
    """
    # Messages show the URL without its credentials, because they end up in the log.
    redacted = _USER_INFO.sub("***@", text)
    try:
        url = URL(text)
        # yarl checks the port lazily, so a bad one raises here rather than in URL().
        port = url.port
    except (ValueError, TypeError) as exc:
        reason = _USER_INFO.sub("***@", str(exc))
        raise ValueError(f"expected an http or https URL, got {redacted!r}: {reason}") from exc
    if url.scheme not in ("http", "https") or not url.host or port is None:
        raise ValueError(f"expected an http or https URL with a host, got {redacted!r}")
    if url.raw_query_string or url.raw_fragment:
        raise ValueError(f"expected a URL without query or fragment, got {redacted!r}")
    if not url.raw_path.endswith("/"):
        url = url.with_path(url.raw_path + "/", encoded=True)
    return url


class HttpSource(Source):
    """A source that fetches objects from an HTTP origin, never from outside its base URL.

    The object path is split at ``/`` and each segment is percent-encoded exactly once, so
    names with spaces, ``%`` or non-ASCII letters reach the origin as written. Paths with empty,
    ``.`` or ``..`` segments or a backslash raise `NotFoundError` without contacting the origin.
    Redirects are followed here, each one required to stay on the base URL's scheme, host and
    port and below its path.

    Before every request, the first and each redirect, the host is resolved and every address
    it resolves to is checked: one that is not public and not in ``allowed_networks`` raises
    `ForbiddenError` without connecting. The connection then goes to the checked addresses
    only (`PinnedResolver`), so a DNS answer that changes in between has no effect.

    Upstream 401 and 403 become `ForbiddenError`, 404 and 410 `NotFoundError`, other 4xx and
    5xx `SourceFailedError`, and any timeout `SourceTimeoutError`. Refused or reset connections,
    connect timeouts and upstream 502, 503 and 504 are retried with backoff, within the total
    deadline.

    Args:
        settings: the source's validated configuration, with `HttpOptions`.
        resolver: resolves a host name to addresses; `system_resolve` when ``None``. Tests
            pass a stub so that names resolve without DNS.

    Note:
        When the origin sends neither ``ETag`` nor ``Last-Modified``, the identity includes a
        hash of the body, which costs one extra pass over the bytes of each such fetch.
    """

    def __init__(self, settings: SourceSettings, *, resolver: Resolve | None = None) -> None:
        super().__init__(settings)
        if not isinstance(settings.options, HttpOptions):
            raise TypeError(f"expected HttpOptions, got {type(settings.options).__name__}")
        self.options = settings.options
        base = parse_base_url(settings.options.base_url)
        self._headers = {"User-Agent": USER_AGENT}
        if base.user is not None:
            # Built here rather than with aiohttp.BasicAuth, which aiohttp 3.14 deprecates.
            credentials = f"{base.user}:{base.password or ''}".encode()
            self._headers["Authorization"] = "Basic " + base64.b64encode(credentials).decode()
        self.base_url = base.with_user(None)
        self._session: aiohttp.ClientSession | None = None
        self._resolver = resolver
        self._pinned = PinnedResolver()
        self._warn_if_base_blocked()

    @classmethod
    def read_options(cls, reader: ConfigReader) -> HttpOptions | None:
        """Read ``base_url``, ``timeouts``, ``max_redirects``, ``retries``, ``allowed_networks``."""
        text = reader.required_text("base_url", "an http source needs the URL of its origin")
        base_url = None
        if text is not None:
            try:
                base_url = parse_base_url(text)
            except ValueError as exc:
                reader.invalid("base_url", str(exc))
        timeouts = read_timeouts(reader)
        max_redirects = reader.integer("max_redirects", 3, 0, MAX_REDIRECTS)
        retries = read_retries(reader)
        allowed_networks = _read_networks(reader, "allowed_networks")
        if base_url is None or allowed_networks is None:
            return None
        # yarl prints a bare host without the root path's slash; the documented form has one.
        text = str(base_url)
        return HttpOptions(
            base_url=text if text.endswith("/") else text + "/",
            timeouts=timeouts,
            max_redirects=max_redirects,
            retries=retries,
            allowed_networks=allowed_networks,
        )

    async def fetch(self, path: str, *, max_bytes: int) -> SourceObject:
        """Fetch `path` below the base URL, following redirects and retrying transient failures.

        Raises:
            NotFoundError: the path is not a plain relative path, or upstream 404 or 410.
            ForbiddenError: upstream 401 or 403, or the origin's host resolves to an address
                that is not allowed.
            SourceFailedError: other upstream statuses, connection failures, bad redirects.
            SourceTimeoutError: a connect, read or total deadline passed.
            UnprocessableImageError: the body is larger than `max_bytes`.
        """
        url = self._object_url(path)
        timeouts = self.options.timeouts
        deadline = asyncio.get_running_loop().time() + timeouts.total
        attempt = partial(self._follow_redirects, url, path, max_bytes)
        try:
            async with asyncio.timeout_at(deadline):
                return await retry_transient(
                    attempt, source=self.name, retries=self.options.retries, deadline=deadline
                )
        except TimeoutError as exc:
            raise SourceTimeoutError(
                f"source {self.name!r} timed out after {timeouts.total:g} s fetching {path!r}"
            ) from exc

    async def close(self) -> None:
        """Close the connection pool."""
        if self._session is not None:
            await self._session.close()
            self._session = None
        await self._pinned.close()

    def _object_url(self, path: str) -> URL:
        segments = path.split("/")
        if "\\" in path or any(segment in ("", ".", "..") for segment in segments):
            raise NotFoundError(f"no image at {path!r}")
        # safe="" encodes every reserved character, so no segment can add a slash, query,
        # fragment or authority, and a literal % is sent as %25.
        encoded = "/".join(quote(segment, safe="") for segment in segments)
        return self.base_url.with_path(self.base_url.raw_path + encoded, encoded=True)

    def _get_session(self) -> aiohttp.ClientSession:
        # Created on first use because a session binds to the running event loop.
        if self._session is None:
            timeouts = self.options.timeouts
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(
                    total=timeouts.total, sock_connect=timeouts.connect, sock_read=timeouts.read
                ),
                # Every request goes to the base URL's origin, so credentials may go on each.
                headers=self._headers,
                # Cookies set by the origin for one client's request must not reach the next.
                cookie_jar=aiohttp.DummyCookieJar(),
                # Every host is resolved and checked just before its request, so the connector
                # connects to those addresses and never queries DNS itself.
                connector=aiohttp.TCPConnector(resolver=self._pinned, use_dns_cache=False),
            )
        return self._session

    async def _follow_redirects(self, url: URL, path: str, max_bytes: int) -> SourceObject:
        seen = {url}
        for _ in range(self.options.max_redirects + 1):
            result = await self._request(url, path, max_bytes)
            if isinstance(result, SourceObject):
                return result
            url = self._redirect_target(url, result, path)
            if url in seen:
                raise SourceFailedError(f"source {self.name!r} failed for {path!r}: redirect loop")
            seen.add(url)
        raise SourceFailedError(
            f"source {self.name!r} failed for {path!r}: "
            f"more than {self.options.max_redirects} redirects"
        )

    async def _request(self, url: URL, path: str, max_bytes: int) -> SourceObject | str:
        """Send one GET and return the object, or the ``Location`` of a redirect."""
        failed = f"source {self.name!r} failed for {path!r}"
        await self._check_host(url, path)
        try:
            async with self._get_session().get(url, allow_redirects=False) as response:
                if response.status in _REDIRECT_STATUSES:
                    location = response.headers.get("Location")
                    if not location:
                        raise SourceFailedError(f"{failed}: redirect without a Location header")
                    return location
                self._check_status(response.status, path)
                data = await _read_body(response, max_bytes)
                return self._source_object(response, data)
        except aiohttp.ClientSSLError as exc:
            raise SourceFailedError(f"{failed}: TLS handshake failed") from exc
        except aiohttp.ConnectionTimeoutError as exc:
            raise TransientError(
                SourceTimeoutError(f"source {self.name!r} timed out connecting for {path!r}"),
                "connect timed out",
            ) from exc
        except TimeoutError as exc:
            # aiohttp's read or total timeout. It is not retried, because a slow origin would
            # only be slow again and use up the rest of the deadline.
            raise SourceTimeoutError(
                f"source {self.name!r} timed out reading the response for {path!r}"
            ) from exc
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as exc:
            raise TransientError(
                SourceFailedError(f"{failed}: connection to the origin failed"),
                f"connection failed: {type(exc).__name__}: {exc}",
            ) from exc
        except aiohttp.ClientError as exc:
            raise SourceFailedError(f"{failed}: invalid response from the origin") from exc

    def _check_status(self, status: int, path: str) -> None:
        # 206 is a partial body, which without a Range request can only be an origin bug.
        if 200 <= status < 300 and status != 206:
            return
        if status in (401, 403):
            raise ForbiddenError(f"source {self.name!r} denied access to {path!r}")
        if status in (404, 410):
            raise NotFoundError(f"no image at {path!r}")
        error = SourceFailedError(
            f"source {self.name!r} failed for {path!r}: upstream status {status}"
        )
        if status in _TRANSIENT_STATUSES:
            raise TransientError(error, f"upstream status {status}")
        raise error

    def _redirect_target(self, current: URL, location: str, path: str) -> URL:
        failed = f"source {self.name!r} failed for {path!r}"
        try:
            target = current.join(URL(location)).with_fragment(None)
            port = target.port
        except (ValueError, TypeError) as exc:
            raise SourceFailedError(f"{failed}: invalid redirect Location") from exc

        # A literal address is checked before the origin rule, so a redirect that aims at a
        # forbidden address gets 403 like any other attempt to reach one.
        literal = ip_literal(target.raw_host or "")
        if literal is not None:
            self._check_addresses(target.raw_host or "", [literal], path)

        base = self.base_url
        same_origin = (target.scheme, target.host, port) == (base.scheme, base.host, base.port)
        if not same_origin or target.user is not None or target.password is not None:
            raise SourceFailedError(f"{failed}: redirect to another origin")
        below_base = target.raw_path.startswith(base.raw_path)
        if not below_base or _has_unsafe_segment(target.raw_path[len(base.raw_path) :]):
            raise SourceFailedError(f"{failed}: redirect outside the base URL's path")
        return target

    async def _check_host(self, url: URL, path: str) -> None:
        """Resolve the host of `url`, check every address and pin them for the connector.

        Raises:
            ForbiddenError: an address is neither public nor in ``allowed_networks``.
            SourceFailedError: the host does not resolve (wrapped in `TransientError` when the
                resolver reports a temporary failure).
        """
        host = url.raw_host or ""
        port = url.port or 0
        literal = ip_literal(host)
        if literal is not None:
            # aiohttp connects to an IP literal without asking the resolver.
            self._check_addresses(host, [literal], path)
            return

        resolve = self._resolver or system_resolve
        failed = f"source {self.name!r} failed for {path!r}: the origin's host does not resolve"
        try:
            addresses = await resolve(host, port)
        except OSError as exc:
            if isinstance(exc, socket.gaierror) and exc.errno == socket.EAI_AGAIN:
                raise TransientError(SourceFailedError(failed), f"resolving failed: {exc}") from exc
            raise SourceFailedError(failed) from exc
        if not addresses:
            raise SourceFailedError(failed)
        self._check_addresses(host, addresses, path)
        self._pinned.pin(host, port, addresses)

    def _check_addresses(self, host: str, addresses: list[IPAddress], path: str) -> None:
        allowed = self.options.allowed_networks
        for address in addresses:
            if is_allowed(address, allowed):
                continue
            # The address goes to the log only: a client learns nothing about the network.
            where = str(address) if ip_literal(host) == address else f"{host} at {address}"
            logger.warning(
                "source %s: rejected connecting to %s, a %s address; add its network to "
                "allowed_networks if the origin really is there",
                self.name,
                where,
                blocked_reason(address),
            )
            raise ForbiddenError(
                f"source {self.name!r} may not connect to the origin's address for {path!r}"
            )

    def _warn_if_base_blocked(self) -> None:
        literal = ip_literal(self.base_url.raw_host or "")
        if literal is not None and not is_allowed(literal, self.options.allowed_networks):
            logger.warning(
                "source %s: base_url host %s is a %s address that allowed_networks does not "
                "name, so every fetch will answer 403",
                self.name,
                literal,
                blocked_reason(literal),
            )

    def _source_object(self, response: aiohttp.ClientResponse, data: bytes) -> SourceObject:
        headers = response.headers
        # The body's length replaces Content-Length, which a chunked response lacks.
        validators = [f"bytes={len(data)}"]
        for name in ("ETag", "Last-Modified"):
            if name in headers:
                validators.append(f"{name.lower()}={headers[name]}")
        if "ETag" not in headers and "Last-Modified" not in headers:
            validators.append("blake2b=" + hashlib.blake2b(data, digest_size=16).hexdigest())
        identity = "http:" + str(response.url.with_user(None)) + "|" + "|".join(validators)
        return SourceObject(
            data=data,
            identity=identity,
            last_modified=_parse_http_date(headers.get("Last-Modified")),
        )


async def _read_body(response: aiohttp.ClientResponse, max_bytes: int) -> bytes:
    """Read the body, closing the connection as soon as it is known to exceed `max_bytes`."""
    # With a Content-Encoding, Content-Length counts compressed bytes, so only the decoded
    # chunks below are compared with the limit.
    encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
    length = response.content_length
    if encoding == "identity" and length is not None and length > max_bytes:
        response.close()
        raise UnprocessableImageError(
            f"source is {length} bytes, over this source's limit of {max_bytes}"
        )

    body = bytearray()
    async for chunk in response.content.iter_chunked(_CHUNK_BYTES):
        body += chunk
        if len(body) > max_bytes:
            response.close()
            raise UnprocessableImageError(
                f"source is over this source's limit of {max_bytes} bytes"
            )
    return bytes(body)


def _read_networks(reader: ConfigReader, name: str) -> tuple[IPNetwork, ...] | None:
    """Read a list of networks; return ``None`` after recording an error."""
    value = reader.value(name)
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        reader.invalid(name, f"expected a list of networks such as [10.0.0.0/8], got {value!r}")
        return None
    networks = []
    valid = True
    for item in value:
        try:
            networks.append(parse_network(item))
        except ValueError as exc:
            reader.invalid(name, str(exc))
            valid = False
    return tuple(networks) if valid else None


def _has_unsafe_segment(raw_path: str) -> bool:
    """Tell whether a raw path, below the base path, has a segment that could climb out."""
    for raw_segment in raw_path.split("/"):
        segment = unquote(raw_segment)
        if segment in (".", "..") or "/" in segment or "\\" in segment:
            return True
    return False


def _parse_http_date(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    # RFC 9110 dates are always GMT, but email.utils parses a "-0000" zone as naive.
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)
