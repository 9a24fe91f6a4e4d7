"""Tests for the HTTP source against a real origin on 127.0.0.1, directly and through the server.

The origin counts every request it receives by decoded path, so each test can check that a
request never reached a path outside the base URL.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from ipaddress import ip_network
from pathlib import Path
from urllib.parse import quote

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from aiohttp.typedefs import Handler
from pytest_aiohttp import AiohttpServer

from darkroom_gpu.config import CircuitBreakerSettings, Limits, SourceSettings
from darkroom_gpu.errors import (
    ForbiddenError,
    NotFoundError,
    ServiceError,
    SourceFailedError,
    SourceTimeoutError,
    UnprocessableImageError,
)
from darkroom_gpu.sources.http import HttpOptions, HttpSource, parse_base_url
from darkroom_gpu.sources.resilience import Timeouts
from tests.conftest import SAMPLES, Client, ClientFactory, source_settings

PHOTO = (SAMPLES / "DSCN0010.jpg").read_bytes()
PHOTO_ETAG = '"photo-v1"'
PHOTO_MODIFIED = "Sun, 09 Sep 2001 01:46:40 GMT"
HTML = b"<!doctype html><html><body>SECRET-HTML-MARKER</body></html>"
# Names whose bytes differ, so a test can tell which file the origin served.
NAMED_FILES = {name: PHOTO + name.encode() for name in ("é.jpg", "фото.jpg", "a b.jpg", "100%.jpg")}
HUGE_BYTES = 4 * 1024 * 1024
HUGE_CHUNK = 4096
STREAM_LIMIT = 64 * 1024
MAX_BYTES = 10 * 1024 * 1024
USER, PASSWORD = "reader", "pa55-word"
# Generous bound on how long after its deadline a fetch may end on a loaded test machine.
SLACK = 1.0
# The origins run on this machine, which a source may reach only when its configuration allows it.
LOOPBACK = (ip_network("127.0.0.0/8"),)


@dataclass
class Origin:
    """A running origin and what it has seen."""

    server: TestServer
    hits: Counter[str] = field(default_factory=Counter)
    raw_paths: list[str] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    huge_sent: int = 0
    huge_aborted: asyncio.Event = field(default_factory=asyncio.Event)

    def url(self, path: str = "/images/") -> str:
        return str(self.server.make_url(path))

    def hits_outside(self, prefix: str = "/images/") -> int:
        return sum(count for path, count in self.hits.items() if not path.startswith(prefix))


def build_origin_app(origin_ref: list[Origin]) -> web.Application:
    """Build the origin's routes; handlers find their `Origin` in `origin_ref`."""

    def origin() -> Origin:
        return origin_ref[0]

    @web.middleware
    async def count(request: web.Request, handler: Handler) -> web.StreamResponse:
        origin().hits[request.path] += 1
        origin().raw_paths.append(request.raw_path)
        return await handler(request)

    async def photo(request: web.Request) -> web.Response:
        return web.Response(
            body=PHOTO,
            content_type="image/jpeg",
            headers={"ETag": PHOTO_ETAG, "Last-Modified": PHOTO_MODIFIED},
        )

    async def named(request: web.Request) -> web.Response:
        data = NAMED_FILES.get(request.match_info["name"])
        if data is None:
            raise web.HTTPNotFound()
        return web.Response(body=data, content_type="image/jpeg")

    def status(code: int) -> Handler:
        async def handler(request: web.Request) -> web.Response:
            return web.Response(status=code, text=f"status {code}")

        return handler

    def redirect(location: str) -> Handler:
        async def handler(request: web.Request) -> web.Response:
            return web.Response(status=302, headers={"Location": location})

        return handler

    async def flaky(request: web.Request) -> web.Response:
        if origin().hits[request.path] == 1:
            return web.Response(status=503)
        return await photo(request)

    async def hop(request: web.Request) -> web.Response:
        left = int(request.match_info["left"])
        target = "/images/photo.jpg" if left == 0 else f"/images/hop/{left - 1}.jpg"
        return web.Response(status=302, headers={"Location": target})

    async def page(request: web.Request) -> web.Response:
        return web.Response(body=HTML, content_type="image/jpeg")

    async def plain(request: web.Request) -> web.Response:
        return web.Response(body=PHOTO, content_type="image/jpeg")

    async def large(request: web.Request) -> web.Response:
        return web.Response(body=PHOTO * 2, content_type="image/jpeg")

    async def huge(request: web.Request) -> web.StreamResponse:
        # No Content-Length, so only counting the streamed bytes can catch the size.
        response = web.StreamResponse(headers={"Content-Type": "image/jpeg"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        chunk = PHOTO[:HUGE_CHUNK]
        try:
            while origin().huge_sent < HUGE_BYTES and not origin().release.is_set():
                await response.write(chunk)
                origin().huge_sent += len(chunk)
                await asyncio.sleep(0.002)
        except ConnectionResetError:
            origin().huge_aborted.set()
        except asyncio.CancelledError:
            # aiohttp cancels a handler whose client has gone away.
            origin().huge_aborted.set()
            raise
        return response

    async def hang(request: web.Request) -> web.Response:
        # Sends no response until the test ends, with a bound so a broken test cannot hang.
        await asyncio.wait_for(origin().release.wait(), timeout=30)
        return web.Response(status=204)

    async def trickle(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "image/jpeg"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        try:
            for byte in PHOTO[:30]:
                await response.write(bytes([byte]))
                try:
                    await asyncio.wait_for(origin().release.wait(), timeout=1)
                    break
                except TimeoutError:
                    continue
        except ConnectionResetError:
            pass
        return response

    async def slow_photo(request: web.Request) -> web.Response:
        await asyncio.sleep(0.2)
        return await photo(request)

    async def authorized(request: web.Request) -> web.Response:
        expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        if request.headers.get("Authorization") != expected:
            return web.Response(status=401)
        return await photo(request)

    async def fallback(request: web.Request) -> web.Response:
        return web.Response(status=404, text="nothing here")

    app = web.Application(middlewares=[count])
    routes = {
        "/images/photo.jpg": photo,
        "/images/plain.jpg": plain,
        "/images/large.jpg": large,
        "/images/missing.jpg": status(404),
        "/images/gone.jpg": status(410),
        "/images/private.jpg": status(401),
        "/images/forbidden.jpg": status(403),
        "/images/bad-request.jpg": status(400),
        "/images/teapot.jpg": status(418),
        "/images/broken.jpg": status(500),
        "/images/busy.jpg": status(503),
        "/images/flaky.jpg": flaky,
        "/images/moved.jpg": redirect("/images/photo.jpg"),
        "/images/moved-relative.jpg": redirect("photo.jpg"),
        "/images/moved-with-query.jpg": redirect("/images/broken.jpg?token=query-secret"),
        "/images/escape.jpg": redirect("/secret/photo.jpg"),
        "/images/escape-dots.jpg": redirect("/images/%2e%2e/secret/photo.jpg"),
        "/images/no-location.jpg": status(302),
        "/images/loop-a.jpg": redirect("/images/loop-b.jpg"),
        "/images/loop-b.jpg": redirect("/images/loop-a.jpg"),
        "/images/hop/{left:[0-9]+}.jpg": hop,
        "/images/page.jpg": page,
        "/images/huge.jpg": huge,
        "/images/hang.jpg": hang,
        "/images/trickle.jpg": trickle,
        "/images/slow-photo.jpg": slow_photo,
        "/images/auth.jpg": authorized,
        "/secret/photo.jpg": photo,
        "/images/{name}": named,
        "/{tail:.*}": fallback,
    }
    for path, handler in routes.items():
        app.router.add_get(path, handler)
    return app


@pytest.fixture
async def origin(aiohttp_server: AiohttpServer) -> AsyncIterator[Origin]:
    """Start the origin on 127.0.0.1; its slow handlers are released before it stops."""
    origin_ref: list[Origin] = []
    server = await aiohttp_server(build_origin_app(origin_ref), host="127.0.0.1")
    origin = Origin(server=server)
    origin_ref.append(origin)
    yield origin
    origin.release.set()


@pytest.fixture
async def outsider(aiohttp_server: AiohttpServer) -> AsyncIterator[Origin]:
    """A second origin on another port that redirects must never reach."""
    origin_ref: list[Origin] = []
    server = await aiohttp_server(build_origin_app(origin_ref), host="127.0.0.1")
    origin = Origin(server=server)
    origin_ref.append(origin)
    yield origin
    origin.release.set()


def http_settings(
    base_url: str,
    *,
    name: str = "web",
    prefix: str = "",
    timeouts: Timeouts | None = None,
    max_redirects: int = 3,
    retries: int = 2,
    breaker: CircuitBreakerSettings | None = None,
) -> SourceSettings:
    options = HttpOptions(
        base_url=base_url,
        timeouts=timeouts or Timeouts(),
        max_redirects=max_redirects,
        retries=retries,
        allowed_networks=LOOPBACK,
    )
    return SourceSettings(
        name=name,
        kind="http",
        prefix=prefix,
        hosts=(),
        options=options,
        circuit_breaker=breaker or CircuitBreakerSettings(),
    )


@pytest.fixture
async def source(origin: Origin) -> AsyncIterator[HttpSource]:
    http_source = HttpSource(http_settings(origin.url()))
    yield http_source
    await http_source.close()


def make_source(settings: SourceSettings) -> HttpSource:
    return HttpSource(settings)


async def raw_get(client: Client, target: str) -> tuple[int, bytes]:
    """Send a request line exactly as written, so that no client normalises the path."""
    reader, writer = await asyncio.open_connection(client.host, client.port)
    try:
        request = f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        writer.write(request.encode())
        await writer.drain()
        response = await asyncio.wait_for(reader.read(), timeout=10)
    finally:
        writer.close()
        await writer.wait_closed()
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def free_port() -> int:
    """Return a port on 127.0.0.1 that nothing listens on (closed right after binding)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


# --- base URL ------------------------------------------------------------------------------


def test_base_url_gets_trailing_slash() -> None:
    assert str(parse_base_url("http://127.0.0.1:9000/images")) == "http://127.0.0.1:9000/images/"


def test_base_url_root_path() -> None:
    assert parse_base_url("https://img.example.com").raw_path == "/"


@pytest.mark.parametrize(
    "text",
    [
        "ftp://127.0.0.1/images/",
        "/images/",
        "127.0.0.1/images/",
        "http:///images/",
        "http://127.0.0.1/images/?v=1",
        "http://127.0.0.1/images/#top",
        "http://127.0.0.1:99999/images/",
    ],
)
def test_base_url_rejected(text: str) -> None:
    with pytest.raises(ValueError, match=r"expected"):
        parse_base_url(text)


# --- fetching directly ---------------------------------------------------------------------


async def test_fetch_returns_origin_bytes(source: HttpSource) -> None:
    fetched = await source.fetch("photo.jpg", max_bytes=MAX_BYTES)

    assert fetched.data == PHOTO


async def test_identity_has_url_and_validators(source: HttpSource, origin: Origin) -> None:
    fetched = await source.fetch("photo.jpg", max_bytes=MAX_BYTES)

    assert fetched.identity.startswith("http:" + origin.url("/images/photo.jpg"))
    assert f"etag={PHOTO_ETAG}" in fetched.identity
    assert f"last-modified={PHOTO_MODIFIED}" in fetched.identity


async def test_identity_hashes_unvalidated_body(source: HttpSource) -> None:
    fetched = await source.fetch("plain.jpg", max_bytes=MAX_BYTES)

    assert "blake2b=" in fetched.identity


async def test_identity_stable(source: HttpSource) -> None:
    first = await source.fetch("photo.jpg", max_bytes=MAX_BYTES)
    second = await source.fetch("photo.jpg", max_bytes=MAX_BYTES)

    assert first.identity == second.identity


async def test_fetch_last_modified_parsed(source: HttpSource) -> None:
    fetched = await source.fetch("photo.jpg", max_bytes=MAX_BYTES)

    assert fetched.last_modified == datetime(2001, 9, 9, 1, 46, 40, tzinfo=UTC)


async def test_fetch_without_last_modified(source: HttpSource) -> None:
    fetched = await source.fetch("plain.jpg", max_bytes=MAX_BYTES)

    assert fetched.last_modified is None


@pytest.mark.parametrize(
    ("name", "raw_path"),
    [
        ("é.jpg", "/images/%C3%A9.jpg"),
        ("фото.jpg", "/images/%D1%84%D0%BE%D1%82%D0%BE.jpg"),
        ("a b.jpg", "/images/a%20b.jpg"),
        ("100%.jpg", "/images/100%25.jpg"),
    ],
)
async def test_fetch_encodes_name_once(
    source: HttpSource, origin: Origin, name: str, raw_path: str
) -> None:
    fetched = await source.fetch(name, max_bytes=MAX_BYTES)

    assert fetched.data == NAMED_FILES[name]
    assert origin.raw_paths == [raw_path]


async def test_fetch_encodes_reserved_characters(source: HttpSource, origin: Origin) -> None:
    with pytest.raises(NotFoundError):
        await source.fetch("a?b#c;d.jpg", max_bytes=MAX_BYTES)

    assert origin.raw_paths == ["/images/a%3Fb%23c%3Bd.jpg"]


@pytest.mark.parametrize(
    ("path", "error"),
    [
        ("missing.jpg", NotFoundError),
        ("gone.jpg", NotFoundError),
        ("private.jpg", ForbiddenError),
        ("forbidden.jpg", ForbiddenError),
        ("bad-request.jpg", SourceFailedError),
        ("teapot.jpg", SourceFailedError),
        ("broken.jpg", SourceFailedError),
        ("busy.jpg", SourceFailedError),
        ("no-location.jpg", SourceFailedError),
    ],
)
async def test_fetch_maps_upstream_status(
    source: HttpSource, path: str, error: type[ServiceError]
) -> None:
    with pytest.raises(error):
        await source.fetch(path, max_bytes=MAX_BYTES)


async def test_fetch_failure_names_status(source: HttpSource) -> None:
    with pytest.raises(SourceFailedError, match=r"upstream status 500"):
        await source.fetch("broken.jpg", max_bytes=MAX_BYTES)


@pytest.mark.parametrize(
    "path",
    [
        "",
        "..",
        ".",
        "../secret/photo.jpg",
        "a/../../secret/photo.jpg",
        "./photo.jpg",
        "a//photo.jpg",
        "/photo.jpg",
        "photo.jpg/",
        "..\\secret\\photo.jpg",
        "http://evil.example/x.jpg",
        "//evil.example/x.jpg",
    ],
)
async def test_fetch_rejects_unsafe_path(source: HttpSource, origin: Origin, path: str) -> None:
    with pytest.raises(NotFoundError):
        await source.fetch(path, max_bytes=MAX_BYTES)

    assert sum(origin.hits.values()) == 0


async def test_scheme_segment_stays_below_base(source: HttpSource, origin: Origin) -> None:
    with pytest.raises(NotFoundError):
        await source.fetch("http:/evil.example/x.jpg", max_bytes=MAX_BYTES)

    assert origin.raw_paths == ["/images/http%3A/evil.example/x.jpg"]


# --- redirects -----------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["moved.jpg", "moved-relative.jpg"])
async def test_redirect_within_base_followed(source: HttpSource, origin: Origin, path: str) -> None:
    fetched = await source.fetch(path, max_bytes=MAX_BYTES)

    assert fetched.data == PHOTO
    assert origin.hits["/images/photo.jpg"] == 1


async def test_redirect_identity_names_final_url(source: HttpSource, origin: Origin) -> None:
    fetched = await source.fetch("moved.jpg", max_bytes=MAX_BYTES)

    assert fetched.identity.startswith("http:" + origin.url("/images/photo.jpg"))


@pytest.mark.parametrize("path", ["escape.jpg", "escape-dots.jpg"])
async def test_redirect_outside_base_path_rejected(
    source: HttpSource, origin: Origin, path: str
) -> None:
    with pytest.raises(SourceFailedError, match=r"redirect outside"):
        await source.fetch(path, max_bytes=MAX_BYTES)

    assert origin.hits["/secret/photo.jpg"] == 0
    assert origin.hits_outside() == 0


async def test_redirect_to_other_port_rejected(
    aiohttp_server: AiohttpServer, origin: Origin, outsider: Origin
) -> None:
    target = outsider.url("/images/photo.jpg")
    app = web.Application()

    async def leave(request: web.Request) -> web.Response:
        return web.Response(status=302, headers={"Location": target})

    app.router.add_get("/images/leave.jpg", leave)
    leaving = await aiohttp_server(app, host="127.0.0.1")
    http_source = HttpSource(http_settings(str(leaving.make_url("/images/"))))
    try:
        with pytest.raises(SourceFailedError, match=r"another origin"):
            await http_source.fetch("leave.jpg", max_bytes=MAX_BYTES)
    finally:
        await http_source.close()

    assert sum(outsider.hits.values()) == 0


async def test_redirect_to_other_scheme_rejected(
    aiohttp_server: AiohttpServer, origin: Origin
) -> None:
    target = origin.url("/images/photo.jpg").replace("http://", "https://", 1)
    app = web.Application()

    async def upgrade(request: web.Request) -> web.Response:
        return web.Response(status=301, headers={"Location": target})

    app.router.add_get("/images/upgrade.jpg", upgrade)
    upgrading = await aiohttp_server(app, host="127.0.0.1")
    http_source = HttpSource(http_settings(str(upgrading.make_url("/images/"))))
    try:
        with pytest.raises(SourceFailedError, match=r"another origin"):
            await http_source.fetch("upgrade.jpg", max_bytes=MAX_BYTES)
    finally:
        await http_source.close()

    assert sum(origin.hits.values()) == 0


async def test_redirect_loop_rejected(source: HttpSource, origin: Origin) -> None:
    with pytest.raises(SourceFailedError, match=r"redirect loop"):
        await source.fetch("loop-a.jpg", max_bytes=MAX_BYTES)

    assert origin.hits["/images/loop-a.jpg"] == 1
    assert origin.hits["/images/loop-b.jpg"] == 1


async def test_redirects_up_to_cap_followed(source: HttpSource) -> None:
    fetched = await source.fetch("hop/2.jpg", max_bytes=MAX_BYTES)

    assert fetched.data == PHOTO


async def test_redirects_over_cap_rejected(source: HttpSource, origin: Origin) -> None:
    with pytest.raises(SourceFailedError, match=r"more than 3 redirects"):
        await source.fetch("hop/3.jpg", max_bytes=MAX_BYTES)

    assert origin.hits["/images/photo.jpg"] == 0


async def test_redirects_disabled(origin: Origin) -> None:
    http_source = HttpSource(http_settings(origin.url(), max_redirects=0))
    try:
        with pytest.raises(SourceFailedError, match=r"more than 0 redirects"):
            await http_source.fetch("moved.jpg", max_bytes=MAX_BYTES)
    finally:
        await http_source.close()


async def test_redirect_query_not_in_message(source: HttpSource) -> None:
    with pytest.raises(SourceFailedError) as excinfo:
        await source.fetch("moved-with-query.jpg", max_bytes=MAX_BYTES)

    assert "query-secret" not in excinfo.value.public_message


# --- size limit ----------------------------------------------------------------------------


async def test_content_length_over_limit(source: HttpSource) -> None:
    with pytest.raises(UnprocessableImageError, match=r"over this source's limit"):
        await source.fetch("large.jpg", max_bytes=len(PHOTO))


async def test_body_at_limit_accepted(source: HttpSource) -> None:
    fetched = await source.fetch("photo.jpg", max_bytes=len(PHOTO))

    assert fetched.data == PHOTO


async def test_streamed_body_over_limit_stops_early(source: HttpSource, origin: Origin) -> None:
    with pytest.raises(UnprocessableImageError):
        await source.fetch("huge.jpg", max_bytes=STREAM_LIMIT)

    async with asyncio.timeout(10):
        await origin.huge_aborted.wait()
    assert origin.huge_sent < HUGE_BYTES


# --- failures, timeouts and retries --------------------------------------------------------


async def test_connection_refused_is_failure() -> None:
    http_source = HttpSource(http_settings(f"http://127.0.0.1:{free_port()}/images/", retries=1))
    try:
        with pytest.raises(SourceFailedError, match=r"connection to the origin failed"):
            await http_source.fetch("photo.jpg", max_bytes=MAX_BYTES)
    finally:
        await http_source.close()


async def test_read_timeout(origin: Origin) -> None:
    timeouts = Timeouts(connect=1, read=0.3, total=5)
    http_source = HttpSource(http_settings(origin.url(), timeouts=timeouts))
    started = time.monotonic()
    try:
        with pytest.raises(SourceTimeoutError):
            await http_source.fetch("hang.jpg", max_bytes=MAX_BYTES)
    finally:
        await http_source.close()

    assert time.monotonic() - started < timeouts.read + SLACK
    assert origin.hits["/images/hang.jpg"] == 1


@pytest.mark.parametrize("path", ["hang.jpg", "trickle.jpg"])
async def test_total_timeout(origin: Origin, path: str) -> None:
    timeouts = Timeouts(connect=1, read=5, total=1)
    http_source = HttpSource(http_settings(origin.url(), timeouts=timeouts))
    started = time.monotonic()
    try:
        with pytest.raises(SourceTimeoutError, match=r"timed out"):
            await http_source.fetch(path, max_bytes=MAX_BYTES)
    finally:
        await http_source.close()

    assert time.monotonic() - started < timeouts.total + SLACK


async def test_retries_transient_status(source: HttpSource, origin: Origin) -> None:
    with pytest.raises(SourceFailedError):
        await source.fetch("busy.jpg", max_bytes=MAX_BYTES)

    assert origin.hits["/images/busy.jpg"] == 3


async def test_retry_recovers(source: HttpSource, origin: Origin) -> None:
    fetched = await source.fetch("flaky.jpg", max_bytes=MAX_BYTES)

    assert fetched.data == PHOTO
    assert origin.hits["/images/flaky.jpg"] == 2


@pytest.mark.parametrize("path", ["missing.jpg", "forbidden.jpg", "bad-request.jpg", "broken.jpg"])
async def test_no_retry_for_final_status(source: HttpSource, origin: Origin, path: str) -> None:
    with pytest.raises(ServiceError):
        await source.fetch(path, max_bytes=MAX_BYTES)

    assert origin.hits[f"/images/{path}"] == 1


async def test_retry_logged_with_source_name(
    source: HttpSource, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="darkroom_gpu.sources"):
        await source.fetch("flaky.jpg", max_bytes=MAX_BYTES)

    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == 1
    assert "source web: attempt 1 of 3 failed (upstream status 503)" in messages[0]


async def test_retries_stop_at_total_deadline(origin: Origin) -> None:
    timeouts = Timeouts(total=0.3)
    http_source = HttpSource(http_settings(origin.url(), timeouts=timeouts, retries=10))
    started = time.monotonic()
    try:
        # The last retry's wait either would pass the deadline (502) or is cut by it (504).
        with pytest.raises((SourceFailedError, SourceTimeoutError)):
            await http_source.fetch("busy.jpg", max_bytes=MAX_BYTES)
    finally:
        await http_source.close()

    assert time.monotonic() - started < timeouts.total + SLACK
    assert origin.hits["/images/busy.jpg"] < 11


# --- credentials and the session -----------------------------------------------------------


async def test_base_url_credentials_sent(origin: Origin) -> None:
    base = origin.url().replace("http://", f"http://{USER}:{PASSWORD}@", 1)
    http_source = HttpSource(http_settings(base))
    try:
        fetched = await http_source.fetch("auth.jpg", max_bytes=MAX_BYTES)
        with pytest.raises(NotFoundError) as excinfo:
            await http_source.fetch("missing.jpg", max_bytes=MAX_BYTES)
    finally:
        await http_source.close()

    assert fetched.data == PHOTO
    assert PASSWORD not in fetched.identity
    assert PASSWORD not in excinfo.value.public_message


async def test_close_then_fetch_again(source: HttpSource) -> None:
    await source.fetch("photo.jpg", max_bytes=MAX_BYTES)
    await source.close()

    fetched = await source.fetch("photo.jpg", max_bytes=MAX_BYTES)

    assert fetched.data == PHOTO


async def test_close_before_first_fetch(origin: Origin) -> None:
    http_source = HttpSource(http_settings(origin.url()))

    await http_source.close()

    assert sum(origin.hits.values()) == 0


def test_wrong_options_type_rejected(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match=r"expected HttpOptions"):
        make_source(source_settings(tmp_path))


# --- end to end through the server ---------------------------------------------------------


async def test_server_passes_photo_through(make_client: ClientFactory, origin: Origin) -> None:
    client = await make_client(http_settings(origin.url()))

    response = await client.get("/photo.jpg")

    assert response.status == 200
    assert await response.read() == PHOTO
    assert response.headers["Last-Modified"] == PHOTO_MODIFIED


async def test_server_resizes_photo(make_client: ClientFactory, origin: Origin) -> None:
    client = await make_client(http_settings(origin.url()))

    response = await client.get("/photo.jpg?w=64")

    assert response.status == 200
    assert response.content_type == "image/jpeg"


@pytest.mark.parametrize("name", sorted(NAMED_FILES))
async def test_server_fetches_exact_name(
    make_client: ClientFactory, origin: Origin, name: str
) -> None:
    client = await make_client(http_settings(origin.url()))

    status, body = await raw_get(client, "/" + quote(name))

    assert status == 200
    assert body == NAMED_FILES[name]
    assert origin.hits[f"/images/{name}"] == 1


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/missing.jpg", 404),
        ("/gone.jpg", 404),
        ("/private.jpg", 403),
        ("/forbidden.jpg", 403),
        ("/teapot.jpg", 502),
        ("/broken.jpg", 502),
        ("/busy.jpg", 502),
        ("/escape.jpg", 502),
        ("/loop-a.jpg", 502),
        ("/page.jpg", 415),
    ],
)
async def test_server_error_status(
    make_client: ClientFactory, origin: Origin, path: str, status: int
) -> None:
    client = await make_client(http_settings(origin.url(), retries=0))

    response = await client.get(path)
    body = await response.json()

    assert response.status == status
    assert body["error"]["status"] == status
    assert response.headers["Cache-Control"] == "no-store"


@pytest.mark.parametrize("path", ["/large.jpg", "/huge.jpg"])
async def test_server_source_over_limit(
    make_client: ClientFactory, origin: Origin, path: str
) -> None:
    settings = replace(http_settings(origin.url()), limits=Limits(max_source_bytes=len(PHOTO)))
    client = await make_client(settings)

    response = await client.get(path)
    body = await response.json()

    assert response.status == 422
    assert body["error"]["code"] == "unprocessable_image"
    assert response.headers["Cache-Control"] == "no-store"


async def test_server_html_body_never_sent(make_client: ClientFactory, origin: Origin) -> None:
    client = await make_client(http_settings(origin.url()))

    response = await client.get("/page.jpg")
    body = await response.read()

    assert response.status == 415
    assert b"SECRET-HTML-MARKER" not in body


@pytest.mark.parametrize("path", ["/hang.jpg", "/trickle.jpg"])
async def test_server_slow_origin_times_out(
    make_client: ClientFactory, origin: Origin, path: str
) -> None:
    timeouts = Timeouts(connect=1, read=5, total=1)
    client = await make_client(http_settings(origin.url(), timeouts=timeouts))
    started = time.monotonic()

    response = await client.get(path)

    assert response.status == 504
    assert response.headers["Cache-Control"] == "no-store"
    assert time.monotonic() - started < timeouts.total + SLACK


async def test_server_slow_origin_spares_other_source(
    make_client: ClientFactory, origin: Origin, image_root: Path
) -> None:
    timeouts = Timeouts(connect=1, read=5, total=1)
    client = await make_client(
        http_settings(origin.url(), prefix="/web", timeouts=timeouts),
        source_settings(image_root, name="files", prefix="/files"),
    )
    finished: list[str] = []

    async def get(path: str, label: str) -> int:
        response = await client.get(path)
        await response.read()
        finished.append(label)
        return response.status

    slow, fast = await asyncio.gather(
        get("/web/hang.jpg", "slow"), get("/files/DSCN0010.jpg", "fast")
    )

    assert slow == 504
    assert fast == 200
    assert finished == ["fast", "slow"]


async def test_server_redirect_loop_fails_fast(make_client: ClientFactory, origin: Origin) -> None:
    client = await make_client(http_settings(origin.url()))
    started = time.monotonic()

    response = await client.get("/loop-a.jpg")

    assert response.status == 502
    assert time.monotonic() - started < 2


@pytest.mark.parametrize(
    "target",
    [
        "/web/../secret/photo.jpg",
        "/web/%2e%2e/secret/photo.jpg",
        "/web/%2E%2E%2Fsecret%2Fphoto.jpg",
        "/web/..%2fsecret%2fphoto.jpg",
        "/web/sub/..%2f..%2fsecret/photo.jpg",
        "/web/%5c..%5csecret%5cphoto.jpg",
        "/web/http://evil.example/x.jpg",
        "/web/http:%2F%2Fevil.example%2Fx.jpg",
        "/web/https:/%2Fevil.example/x.jpg",
        "/web/.%2fphoto.jpg",
    ],
)
async def test_server_paths_never_leave_base(
    make_client: ClientFactory, origin: Origin, target: str
) -> None:
    client = await make_client(http_settings(origin.url(), prefix="/web"))

    status, _ = await raw_get(client, target)

    assert status in (400, 404)
    assert sum(origin.hits.values()) == 0


async def test_server_encoded_slash_is_two_segments(
    make_client: ClientFactory, origin: Origin
) -> None:
    client = await make_client(http_settings(origin.url(), prefix="/web"))

    status, _ = await raw_get(client, "/web/sub%2Fphoto.jpg")

    assert status == 404
    assert origin.raw_paths == ["/images/sub/photo.jpg"]


async def test_server_retries_transient_status(make_client: ClientFactory, origin: Origin) -> None:
    client = await make_client(http_settings(origin.url(), retries=2))

    response = await client.get("/busy.jpg")

    assert response.status == 502
    assert origin.hits["/images/busy.jpg"] == 3


async def test_server_no_retry_on_not_found(make_client: ClientFactory, origin: Origin) -> None:
    client = await make_client(http_settings(origin.url(), retries=2))

    response = await client.get("/missing.jpg")

    assert response.status == 404
    assert origin.hits["/images/missing.jpg"] == 1


async def test_server_circuit_breaker(make_client: ClientFactory, origin: Origin) -> None:
    breaker = CircuitBreakerSettings(failures=3, reset_after=0.2)
    client = await make_client(http_settings(origin.url(), retries=0, breaker=breaker))
    for _ in range(3):
        response = await client.get("/broken.jpg")
        assert response.status == 502

    opened = await client.get("/photo.jpg")
    opened_body = await opened.json()
    await asyncio.sleep(0.3)
    trial = await client.get("/photo.jpg")

    assert opened.status == 502
    assert opened_body["error"]["message"] == "source web is unavailable (circuit open)"
    assert opened.headers["Cache-Control"] == "no-store"
    assert trial.status == 200
    assert origin.hits["/images/broken.jpg"] == 3
    assert origin.hits["/images/photo.jpg"] == 1


async def test_server_circuit_trial_failure_reopens(
    make_client: ClientFactory, origin: Origin
) -> None:
    breaker = CircuitBreakerSettings(failures=2, reset_after=0.2)
    client = await make_client(http_settings(origin.url(), retries=0, breaker=breaker))
    for _ in range(2):
        await client.get("/broken.jpg")
    await asyncio.sleep(0.3)

    trial = await client.get("/broken.jpg")
    after = await client.get("/broken.jpg")

    assert trial.status == 502
    assert after.status == 502
    assert origin.hits["/images/broken.jpg"] == 3


async def test_server_coalesces_identical_requests(
    make_client: ClientFactory, origin: Origin
) -> None:
    client = await make_client(http_settings(origin.url()))

    async def get() -> bytes:
        response = await client.get("/slow-photo.jpg")
        assert response.status == 200
        return await response.read()

    bodies = await asyncio.gather(*(get() for _ in range(10)))

    assert origin.hits["/images/slow-photo.jpg"] == 1
    assert all(body == PHOTO for body in bodies)
