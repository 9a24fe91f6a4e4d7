"""The address policy of HTTP sources: which addresses they may reach, checked before connecting.

Unit tests cover the classification with no network at all. The fetch tests run origins and
listeners on loopback addresses only (127.0.0.1 and 127.0.0.2) and replace DNS with a stub, so a
public-looking name can be made to resolve to a loopback address without any real lookup.
"""

from __future__ import annotations

import socket
from collections import Counter
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address, ip_address, ip_network

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from pytest_aiohttp import AiohttpServer

from darkroom_gpu.config import SourceSettings
from darkroom_gpu.errors import ForbiddenError, SourceFailedError
from darkroom_gpu.sources import http as http_module
from darkroom_gpu.sources.addresses import (
    IPAddress,
    IPNetwork,
    PinnedResolver,
    blocked_reason,
    embedded_ipv4,
    ip_literal,
    is_allowed,
    parse_network,
)
from darkroom_gpu.sources.http import HttpOptions, HttpSource
from darkroom_gpu.sources.resilience import Timeouts
from tests.conftest import SAMPLES, ClientFactory

PHOTO = (SAMPLES / "DSCN0010.jpg").read_bytes()
MAX_BYTES = 10 * 1024 * 1024
# A name that would resolve publicly; here only the stub resolver ever resolves it.
PUBLIC_NAME = "images.example.com"
ONLY_FIRST_LOOPBACK = (ip_network("127.0.0.1/32"),)


# --- classification ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("10.0.0.1", "private"),
        ("172.16.5.4", "private"),
        ("192.168.1.1", "private"),
        ("169.254.169.254", "cloud metadata"),
        ("fd00:ec2::254", "cloud metadata"),
        ("169.254.10.1", "link-local"),
        ("fe80::1", "link-local"),
        ("fd00::1", "unique-local"),
        ("127.0.0.1", "loopback"),
        ("127.8.9.10", "loopback"),
        ("::1", "loopback"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("100.64.0.1", "reserved"),
        ("255.255.255.255", "private"),
        ("::ffff:10.0.0.1", "private (embedded in ::ffff:a00:1)"),
        ("::ffff:127.0.0.1", "loopback (embedded in ::ffff:7f00:1)"),
        ("2002:a00:1::", "private (embedded in 2002:a00:1::)"),
        ("64:ff9b::a9fe:a9fe", "cloud metadata (embedded in 64:ff9b::a9fe:a9fe)"),
        ("::10.0.0.1", "reserved"),
    ],
)
def test_address_blocked(text: str, reason: str) -> None:
    assert blocked_reason(ip_address(text)) == reason


@pytest.mark.parametrize("text", ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "::ffff:8.8.8.8"])
def test_public_address_allowed(text: str) -> None:
    address = ip_address(text)

    assert blocked_reason(address) is None
    assert is_allowed(address, ())


@pytest.mark.parametrize(
    ("text", "networks", "allowed"),
    [
        ("127.0.0.1", ("127.0.0.0/8",), True),
        ("127.0.0.2", ("127.0.0.1/32",), False),
        ("10.0.0.1", ("127.0.0.0/8",), False),
        ("10.0.0.1", ("10.0.0.0/8",), True),
        ("::ffff:10.0.0.1", ("10.0.0.0/8",), True),
        ("fd00::1", ("10.0.0.0/8",), False),
        ("fd00::1", ("fd00::/8",), True),
        ("169.254.169.254", ("10.0.0.0/8", "fd00::/8"), False),
    ],
)
def test_allowed_networks(text: str, networks: tuple[str, ...], allowed: bool) -> None:
    parsed: tuple[IPNetwork, ...] = tuple(ip_network(network) for network in networks)

    assert is_allowed(ip_address(text), parsed) is allowed


def test_embedded_ipv4_forms() -> None:
    assert embedded_ipv4(ip_address("::ffff:10.0.0.1")) == IPv4Address("10.0.0.1")
    assert embedded_ipv4(ip_address("2002:a00:1::")) == IPv4Address("10.0.0.1")
    assert embedded_ipv4(ip_address("64:ff9b::a00:1")) == IPv4Address("10.0.0.1")
    assert embedded_ipv4(ip_address("2001:db8::1")) is None
    assert embedded_ipv4(ip_address("10.0.0.1")) is None


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("127.0.0.1", IPv4Address("127.0.0.1")),
        ("[::1]", IPv6Address("::1")),
        ("::1", IPv6Address("::1")),
        ("example.com", None),
        ("127.1", None),
    ],
)
def test_ip_literal(host: str, expected: IPAddress | None) -> None:
    assert ip_literal(host) == expected


def test_parse_network_accepts_address() -> None:
    assert parse_network("10.1.2.3") == ip_network("10.1.2.3/32")


@pytest.mark.parametrize("text", ["10.0.0.1/8", "localhost", "10.0.0.0/33", ""])
def test_parse_network_rejects(text: str) -> None:
    with pytest.raises(ValueError, match=r"expected a network such as 10.0.0.0/8"):
        parse_network(text)


async def test_pinned_resolver_unpinned_host_fails() -> None:
    resolver = PinnedResolver()

    with pytest.raises(OSError, match=r"no checked address"):
        await resolver.resolve(PUBLIC_NAME, 80)


async def test_pinned_resolver_returns_pinned() -> None:
    resolver = PinnedResolver()
    resolver.pin(PUBLIC_NAME, 80, [ip_address("127.0.0.1"), ip_address("::1")])

    both = await resolver.resolve(PUBLIC_NAME, 80, family=socket.AF_UNSPEC)
    only_v6 = await resolver.resolve(PUBLIC_NAME, 80, family=socket.AF_INET6)

    assert [result["host"] for result in both] == ["127.0.0.1", "::1"]
    assert [result["host"] for result in only_v6] == ["::1"]
    assert all(result["port"] == 80 for result in both)


# --- fetching ------------------------------------------------------------------------------


@dataclass
class Listener:
    """A server on a loopback address that counts every request it receives."""

    server: TestServer
    hits: Counter[str] = field(default_factory=Counter)

    def url(self, path: str = "/images/") -> str:
        return str(self.server.make_url(path))

    @property
    def port(self) -> int:
        port = self.server.port
        assert port is not None
        return port


def counting_app(listener_ref: list[Listener], redirect_to: str | None = None) -> web.Application:
    """Serve the sample photo at any path, or redirect every request to `redirect_to`."""

    async def handle(request: web.Request) -> web.Response:
        listener_ref[0].hits[request.path] += 1
        if redirect_to is not None:
            return web.Response(status=302, headers={"Location": redirect_to})
        return web.Response(body=PHOTO, content_type="image/jpeg")

    app = web.Application()
    app.router.add_get("/{tail:.*}", handle)
    return app


async def start_listener(
    aiohttp_server: AiohttpServer,
    host: str,
    port: int | None = None,
    redirect_to: str | None = None,
) -> Listener:
    listener_ref: list[Listener] = []
    server = await aiohttp_server(
        counting_app(listener_ref, redirect_to), host=host, port=port or 0
    )
    listener = Listener(server=server)
    listener_ref.append(listener)
    return listener


@pytest.fixture
async def origin(aiohttp_server: AiohttpServer) -> Listener:
    """The origin a source is meant to reach, on 127.0.0.1."""
    return await start_listener(aiohttp_server, "127.0.0.1")


@pytest.fixture
async def bystander(aiohttp_server: AiohttpServer) -> Listener:
    """A service on 127.0.0.2 that no source may reach."""
    return await start_listener(aiohttp_server, "127.0.0.2")


class StubResolver:
    """Returns the next list of addresses on each look-up, repeating the last list."""

    def __init__(self, *answers: list[str]) -> None:
        self.answers = [[ip_address(text) for text in answer] for answer in answers]
        self.calls: list[tuple[str, int]] = []

    async def __call__(self, host: str, port: int) -> list[IPAddress]:
        self.calls.append((host, port))
        return self.answers[min(len(self.calls), len(self.answers)) - 1]


class FailingResolver:
    """Raises the given resolver error on every look-up."""

    def __init__(self, error: OSError) -> None:
        self.error = error
        self.calls = 0

    async def __call__(self, host: str, port: int) -> list[IPAddress]:
        self.calls += 1
        raise self.error


def http_settings(
    base_url: str, allowed: tuple[IPNetwork, ...] = (), *, retries: int = 0
) -> SourceSettings:
    options = HttpOptions(
        base_url=base_url,
        timeouts=Timeouts(connect=1, read=2, total=5),
        retries=retries,
        allowed_networks=allowed,
    )
    return SourceSettings(name="web", kind="http", prefix="", hosts=(), options=options)


@pytest.fixture
def stub_dns(monkeypatch: pytest.MonkeyPatch) -> StubResolver:
    """Make every HTTP source built by the server resolve names with a stub (127.0.0.1)."""
    resolver = StubResolver(["127.0.0.1"])
    monkeypatch.setattr(http_module, "system_resolve", resolver)
    return resolver


async def test_name_resolving_to_loopback_rejected(origin: Listener) -> None:
    resolver = StubResolver(["127.0.0.1"])
    source = HttpSource(
        http_settings(f"http://{PUBLIC_NAME}:{origin.port}/images/"), resolver=resolver
    )
    try:
        with pytest.raises(ForbiddenError, match=r"may not connect to the origin's address"):
            await source.fetch("photo.jpg", max_bytes=MAX_BYTES)
    finally:
        await source.close()

    assert resolver.calls == [(PUBLIC_NAME, origin.port)]
    assert sum(origin.hits.values()) == 0


async def test_rejected_address_only_in_log(
    origin: Listener, caplog: pytest.LogCaptureFixture
) -> None:
    source = HttpSource(
        http_settings(f"http://{PUBLIC_NAME}:{origin.port}/images/"),
        resolver=StubResolver(["10.0.0.1"]),
    )
    try:
        with pytest.raises(ForbiddenError) as excinfo:
            await source.fetch("photo.jpg", max_bytes=MAX_BYTES)
    finally:
        await source.close()

    assert "10.0.0.1" not in excinfo.value.public_message
    messages = [record.getMessage() for record in caplog.records]
    assert any(f"{PUBLIC_NAME} at 10.0.0.1, a private address" in line for line in messages)


async def test_any_blocked_address_rejects_host(origin: Listener) -> None:
    # A public address next to a private one does not make the private one reachable.
    resolver = StubResolver(["8.8.8.8", "127.0.0.1"])
    source = HttpSource(
        http_settings(f"http://{PUBLIC_NAME}:{origin.port}/images/"), resolver=resolver
    )
    try:
        with pytest.raises(ForbiddenError):
            await source.fetch("photo.jpg", max_bytes=MAX_BYTES)
    finally:
        await source.close()

    assert sum(origin.hits.values()) == 0


async def test_allowed_name_connects_to_checked_address(origin: Listener) -> None:
    # PUBLIC_NAME has no DNS entry here, so the fetch can only succeed by connecting to the
    # address the stub returned for the check.
    resolver = StubResolver(["127.0.0.1"])
    source = HttpSource(
        http_settings(f"http://{PUBLIC_NAME}:{origin.port}/images/", ONLY_FIRST_LOOPBACK),
        resolver=resolver,
    )
    try:
        fetched = await source.fetch("photo.jpg", max_bytes=MAX_BYTES)
    finally:
        await source.close()

    assert fetched.data == PHOTO
    assert origin.hits["/images/photo.jpg"] == 1
    assert len(resolver.calls) == 1


async def test_rebinding_after_check_never_connects(
    aiohttp_server: AiohttpServer, origin: Listener
) -> None:
    # The same port on 127.0.0.2, so only the address decides which server is reached.
    rebound = await start_listener(aiohttp_server, "127.0.0.2", port=origin.port)
    resolver = StubResolver(["127.0.0.1"], ["127.0.0.2"])
    source = HttpSource(
        http_settings(f"http://{PUBLIC_NAME}:{origin.port}/images/", ONLY_FIRST_LOOPBACK),
        resolver=resolver,
    )
    try:
        first = await source.fetch("photo.jpg", max_bytes=MAX_BYTES)
        with pytest.raises(ForbiddenError):
            await source.fetch("other.jpg", max_bytes=MAX_BYTES)
    finally:
        await source.close()

    assert first.data == PHOTO
    assert len(resolver.calls) == 2
    assert origin.hits["/images/photo.jpg"] == 1
    assert sum(rebound.hits.values()) == 0


async def test_redirect_to_unnamed_address_rejected(
    aiohttp_server: AiohttpServer, bystander: Listener
) -> None:
    redirecting = await start_listener(
        aiohttp_server, "127.0.0.1", redirect_to=bystander.url("/images/photo.jpg")
    )
    source = HttpSource(http_settings(redirecting.url(), ONLY_FIRST_LOOPBACK))
    try:
        with pytest.raises(ForbiddenError):
            await source.fetch("photo.jpg", max_bytes=MAX_BYTES)
    finally:
        await source.close()

    assert redirecting.hits["/images/photo.jpg"] == 1
    assert sum(bystander.hits.values()) == 0


async def test_redirect_rechecks_name(aiohttp_server: AiohttpServer) -> None:
    # The redirect stays on the same origin, whose name now resolves to an address that the
    # configuration does not name.
    redirecting = await start_listener(aiohttp_server, "127.0.0.1", redirect_to="/images/b.jpg")
    resolver = StubResolver(["127.0.0.1"], ["10.0.0.1"])
    source = HttpSource(
        http_settings(f"http://{PUBLIC_NAME}:{redirecting.port}/images/", ONLY_FIRST_LOOPBACK),
        resolver=resolver,
    )
    try:
        with pytest.raises(ForbiddenError):
            await source.fetch("a.jpg", max_bytes=MAX_BYTES)
    finally:
        await source.close()

    assert len(resolver.calls) == 2
    assert redirecting.hits["/images/a.jpg"] == 1
    assert redirecting.hits["/images/b.jpg"] == 0


async def test_unresolvable_name_is_failure(origin: Listener) -> None:
    resolver = FailingResolver(socket.gaierror(socket.EAI_NONAME, "Name or service not known"))
    source = HttpSource(
        http_settings(f"http://{PUBLIC_NAME}:{origin.port}/images/", retries=2),
        resolver=resolver,
    )
    try:
        with pytest.raises(SourceFailedError, match=r"host does not resolve"):
            await source.fetch("photo.jpg", max_bytes=MAX_BYTES)
    finally:
        await source.close()

    assert resolver.calls == 1


async def test_temporary_resolve_failure_retried(origin: Listener) -> None:
    resolver = FailingResolver(socket.gaierror(socket.EAI_AGAIN, "Temporary failure"))
    source = HttpSource(
        http_settings(f"http://{PUBLIC_NAME}:{origin.port}/images/", retries=2),
        resolver=resolver,
    )
    try:
        with pytest.raises(SourceFailedError):
            await source.fetch("photo.jpg", max_bytes=MAX_BYTES)
    finally:
        await source.close()

    assert resolver.calls == 3


def test_blocked_base_url_warned(caplog: pytest.LogCaptureFixture) -> None:
    HttpSource(http_settings("http://169.254.169.254/latest/"))

    messages = [record.getMessage() for record in caplog.records]
    assert any("169.254.169.254 is a cloud metadata address" in line for line in messages)


# --- through the server --------------------------------------------------------------------


async def test_server_name_to_loopback_is_403(
    make_client: ClientFactory, origin: Listener, stub_dns: StubResolver
) -> None:
    client = await make_client(http_settings(f"http://{PUBLIC_NAME}:{origin.port}/images/"))

    response = await client.get("/photo.jpg?w=64")
    body = await response.json()

    assert response.status == 403
    assert body["error"]["code"] == "forbidden"
    assert response.headers["Cache-Control"] == "no-store"
    assert len(stub_dns.calls) == 1
    assert sum(origin.hits.values()) == 0


async def test_server_redirect_to_unnamed_is_403(
    aiohttp_server: AiohttpServer, make_client: ClientFactory, bystander: Listener
) -> None:
    redirecting = await start_listener(
        aiohttp_server, "127.0.0.1", redirect_to=bystander.url("/images/photo.jpg")
    )
    client = await make_client(http_settings(redirecting.url(), ONLY_FIRST_LOOPBACK))

    response = await client.get("/photo.jpg")

    assert response.status == 403
    assert redirecting.hits["/images/photo.jpg"] == 1
    assert sum(bystander.hits.values()) == 0


async def test_server_allowed_origin_serves(
    make_client: ClientFactory, origin: Listener, stub_dns: StubResolver
) -> None:
    settings = http_settings(f"http://{PUBLIC_NAME}:{origin.port}/images/", ONLY_FIRST_LOOPBACK)
    client = await make_client(settings)

    response = await client.get("/photo.jpg")

    assert response.status == 200
    assert await response.read() == PHOTO


@pytest.mark.parametrize(
    "target",
    [
        "/http://127.0.0.2:{port}/images/photo.jpg",
        "/%2F%2F127.0.0.2:{port}/images/photo.jpg",
        "/@127.0.0.2:{port}/images/photo.jpg",
        "/..%2F..%2F127.0.0.2:{port}/images/photo.jpg",
    ],
)
async def test_request_cannot_name_host(
    make_client: ClientFactory, origin: Listener, bystander: Listener, target: str
) -> None:
    client = await make_client(http_settings(origin.url(), ONLY_FIRST_LOOPBACK))

    response = await client.get(target.format(port=bystander.port))
    await response.read()

    # Whatever the path contains, it can only name an object below the origin's base URL.
    assert sum(bystander.hits.values()) == 0
    assert all(path.startswith("/images/") for path in origin.hits)
