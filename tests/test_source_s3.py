"""Tests for the S3 source against a moto server on 127.0.0.1, directly and through the server."""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from aiobotocore.session import AioSession
from aiohttp import web
from pytest_aiohttp import AiohttpServer

from darkroom_gpu.config import Limits, SourceSettings
from darkroom_gpu.errors import (
    ForbiddenError,
    NotFoundError,
    SourceFailedError,
    SourceTimeoutError,
    UnprocessableImageError,
)
from darkroom_gpu.sources.resilience import Timeouts
from darkroom_gpu.sources.s3 import S3Options, S3Source
from tests.conftest import SAMPLES, Client, ClientFactory

PHOTO = (SAMPLES / "DSCN0010.jpg").read_bytes()
# Fake credentials: moto accepts any, and real AWS would reject these.
ACCESS_KEY_ID = "AKIDTESTINGONLY"
SECRET_ACCESS_KEY = "testing-secret-not-real"
REGION = "us-east-1"
# Keys whose bytes differ, so a test can tell which object the store returned.
NAMED_KEYS = {
    key: PHOTO + key.encode()
    for key in ("photo.jpg", "é.jpg", "фото.jpg", "a b.jpg", "100%.jpg", "nested/dir/photo.jpg")
}
BIG_KEY = "big.jpg"
LIMIT = len(PHOTO) + 64
MAX_BYTES = 10 * 1024 * 1024
# Generous bound on how long after its deadline a fetch may end on a loaded test machine.
SLACK = 2.0
AWS_VARIABLES = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_DEFAULT_REGION",
    "AWS_REGION",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
)


@pytest.fixture(autouse=True)
def isolated_aws(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Hide the machine's AWS settings, so only what a test sets is used.

    Instance metadata is turned off too, so the credential chain never leaves this machine.
    """
    for name in AWS_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture
async def store(moto_endpoint: str) -> AsyncIterator[Any]:
    """Return an S3 client of the moto server, for arranging buckets and objects."""
    async with AioSession().create_client(
        "s3",
        endpoint_url=moto_endpoint,
        region_name=REGION,
        aws_access_key_id=ACCESS_KEY_ID,
        aws_secret_access_key=SECRET_ACCESS_KEY,
    ) as client:
        yield client


@pytest.fixture
async def bucket(store: Any) -> str:
    """Create a bucket of its own for one test, holding `NAMED_KEYS` and one large object."""
    name = f"photos-{uuid.uuid4().hex[:12]}"
    await store.create_bucket(Bucket=name)
    for key, data in NAMED_KEYS.items():
        await store.put_object(Bucket=name, Key=key, Body=data, ContentType="image/jpeg")
    await store.put_object(Bucket=name, Key=BIG_KEY, Body=PHOTO * 2)
    return name


def s3_settings(
    endpoint: str,
    bucket: str,
    *,
    credentials: bool = True,
    retries: int = 2,
    timeouts: Timeouts | None = None,
) -> SourceSettings:
    options = S3Options(
        bucket=bucket,
        region=REGION,
        endpoint_url=endpoint,
        access_key_id=ACCESS_KEY_ID if credentials else None,
        secret_access_key=SECRET_ACCESS_KEY if credentials else None,
        timeouts=timeouts or Timeouts(),
        retries=retries,
    )
    return SourceSettings(name="bucket", kind="s3", prefix="", hosts=(), options=options)


@pytest.fixture
async def source(moto_endpoint: str, bucket: str) -> AsyncIterator[S3Source]:
    s3_source = S3Source(s3_settings(moto_endpoint, bucket))
    yield s3_source
    await s3_source.close()


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


# --- fetching directly ---------------------------------------------------------------------


@pytest.mark.parametrize("key", sorted(NAMED_KEYS))
async def test_fetch_exact_key(source: S3Source, key: str) -> None:
    fetched = await source.fetch(key, max_bytes=MAX_BYTES)

    assert fetched.data == NAMED_KEYS[key]


async def test_fetch_identity_names_object(source: S3Source, bucket: str) -> None:
    fetched = await source.fetch("photo.jpg", max_bytes=MAX_BYTES)

    assert fetched.identity.startswith(f"s3:{bucket}/photo.jpg|etag=")


async def test_fetch_last_modified_is_utc(source: S3Source) -> None:
    fetched = await source.fetch("photo.jpg", max_bytes=MAX_BYTES)

    assert isinstance(fetched.last_modified, datetime)
    assert fetched.last_modified.utcoffset() is not None


async def test_identity_changes_with_object(source: S3Source, store: Any, bucket: str) -> None:
    before = await source.fetch("photo.jpg", max_bytes=MAX_BYTES)
    await store.put_object(Bucket=bucket, Key="photo.jpg", Body=PHOTO + b"changed")

    after = await source.fetch("photo.jpg", max_bytes=MAX_BYTES)

    assert after.data == PHOTO + b"changed"
    assert after.identity != before.identity


async def test_identity_stable_for_same_object(source: S3Source) -> None:
    first = await source.fetch("photo.jpg", max_bytes=MAX_BYTES)
    second = await source.fetch("photo.jpg", max_bytes=MAX_BYTES)

    assert first.identity == second.identity


async def test_missing_key_not_found(source: S3Source) -> None:
    with pytest.raises(NotFoundError, match=r"no image at 'missing.jpg'"):
        await source.fetch("missing.jpg", max_bytes=MAX_BYTES)


@pytest.mark.parametrize("key", ["", ".", "..", "a/../photo.jpg", "./photo.jpg", "x" * 1025])
async def test_unusable_key_not_found(source: S3Source, key: str) -> None:
    with pytest.raises(NotFoundError):
        await source.fetch(key, max_bytes=MAX_BYTES)


async def test_key_over_limit_rejected(source: S3Source) -> None:
    with pytest.raises(UnprocessableImageError, match=r"over this source's limit"):
        await source.fetch(BIG_KEY, max_bytes=LIMIT)


async def test_key_at_limit_accepted(source: S3Source) -> None:
    fetched = await source.fetch("photo.jpg", max_bytes=len(NAMED_KEYS["photo.jpg"]))

    assert fetched.data == NAMED_KEYS["photo.jpg"]


async def test_wrong_bucket_is_source_failure(moto_endpoint: str) -> None:
    # A missing bucket means the source is misconfigured, not that the object is missing, so it
    # is a 502 that counts towards the circuit breaker rather than a 404.
    s3_source = S3Source(s3_settings(moto_endpoint, f"absent-{uuid.uuid4().hex[:12]}"))
    try:
        with pytest.raises(SourceFailedError, match=r"bucket does not exist"):
            await s3_source.fetch("photo.jpg", max_bytes=MAX_BYTES)
    finally:
        await s3_source.close()


async def test_credentials_from_environment(
    moto_endpoint: str, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY)
    monkeypatch.setenv("AWS_SESSION_TOKEN", "testing-session-token")
    s3_source = S3Source(s3_settings(moto_endpoint, bucket, credentials=False))
    try:
        fetched = await s3_source.fetch("photo.jpg", max_bytes=MAX_BYTES)
    finally:
        await s3_source.close()

    assert fetched.data == NAMED_KEYS["photo.jpg"]


async def test_no_credentials_is_source_failure(moto_endpoint: str, bucket: str) -> None:
    s3_source = S3Source(s3_settings(moto_endpoint, bucket, credentials=False))
    try:
        with pytest.raises(SourceFailedError, match=r"no usable AWS credentials"):
            await s3_source.fetch("photo.jpg", max_bytes=MAX_BYTES)
    finally:
        await s3_source.close()


async def test_store_unreachable_is_source_failure() -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"
    s3_source = S3Source(s3_settings(endpoint, "photos", retries=1))
    try:
        with pytest.raises(SourceFailedError, match=r"connection to the store failed"):
            await s3_source.fetch("photo.jpg", max_bytes=MAX_BYTES)
    finally:
        await s3_source.close()


async def test_client_reused_then_closed(source: S3Source) -> None:
    await source.fetch("photo.jpg", max_bytes=MAX_BYTES)
    await source.close()

    fetched = await source.fetch("é.jpg", max_bytes=MAX_BYTES)

    assert fetched.data == NAMED_KEYS["é.jpg"]


async def test_concurrent_first_fetches(source: S3Source) -> None:
    results = await asyncio.gather(
        *(source.fetch(key, max_bytes=MAX_BYTES) for key in sorted(NAMED_KEYS))
    )

    assert [result.data for result in results] == [NAMED_KEYS[key] for key in sorted(NAMED_KEYS)]


# --- failures of the store, served by a small stand-in on 127.0.0.1 ------------------------


async def start_failing_store(
    aiohttp_server: AiohttpServer, status: int, code: str, hits: Counter[str]
) -> str:
    """Start a server that responds to every request with an S3 error document."""
    body = f"<Error><Code>{code}</Code><Message>test</Message></Error>"

    async def fail(request: web.Request) -> web.Response:
        hits[request.path] += 1
        return web.Response(status=status, text=body, content_type="application/xml")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", fail)
    server = await aiohttp_server(app, host="127.0.0.1")
    return str(server.make_url("")).rstrip("/")


async def start_hanging_store(aiohttp_server: AiohttpServer, release: asyncio.Event) -> str:
    """Start a server that accepts requests but sends no response until `release` is set."""

    async def hang(request: web.Request) -> web.Response:
        await asyncio.wait_for(release.wait(), timeout=30)
        return web.Response(status=204)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", hang)
    server = await aiohttp_server(app, host="127.0.0.1")
    return str(server.make_url("")).rstrip("/")


@pytest.mark.parametrize(
    ("status", "code"),
    [(503, "SlowDown"), (500, "InternalError"), (400, "RequestTimeout")],
)
async def test_transient_store_error_retried(
    aiohttp_server: AiohttpServer, status: int, code: str
) -> None:
    hits: Counter[str] = Counter()
    endpoint = await start_failing_store(aiohttp_server, status, code, hits)
    s3_source = S3Source(s3_settings(endpoint, "photos", retries=2))
    try:
        with pytest.raises(SourceFailedError, match=code):
            await s3_source.fetch("photo.jpg", max_bytes=MAX_BYTES)
    finally:
        await s3_source.close()

    assert hits["/photos/photo.jpg"] == 3


@pytest.mark.parametrize(
    ("status", "code", "error"),
    [
        (403, "AccessDenied", ForbiddenError),
        (404, "NoSuchKey", NotFoundError),
        (400, "InvalidRequest", SourceFailedError),
        (501, "NotImplemented", SourceFailedError),
    ],
)
async def test_final_store_error_not_retried(
    aiohttp_server: AiohttpServer, status: int, code: str, error: type[Exception]
) -> None:
    hits: Counter[str] = Counter()
    endpoint = await start_failing_store(aiohttp_server, status, code, hits)
    s3_source = S3Source(s3_settings(endpoint, "photos", retries=2))
    try:
        with pytest.raises(error):
            await s3_source.fetch("photo.jpg", max_bytes=MAX_BYTES)
    finally:
        await s3_source.close()

    assert hits["/photos/photo.jpg"] == 1


@pytest.mark.parametrize(
    "timeouts", [Timeouts(connect=1, read=5, total=1), Timeouts(connect=1, read=0.5, total=5)]
)
async def test_hanging_store_times_out(aiohttp_server: AiohttpServer, timeouts: Timeouts) -> None:
    release = asyncio.Event()
    endpoint = await start_hanging_store(aiohttp_server, release)
    s3_source = S3Source(s3_settings(endpoint, "photos", retries=0, timeouts=timeouts))
    started = time.monotonic()
    try:
        with pytest.raises(SourceTimeoutError, match=r"timed out"):
            await s3_source.fetch("photo.jpg", max_bytes=MAX_BYTES)
    finally:
        release.set()
        await s3_source.close()

    assert time.monotonic() - started < min(timeouts.read, timeouts.total) + SLACK


def test_wrong_options_type_rejected() -> None:
    settings = SourceSettings(name="bucket", kind="s3", prefix="", hosts=(), options=None)

    with pytest.raises(TypeError, match=r"expected S3Options"):
        S3Source(settings)


# --- end to end through the server ---------------------------------------------------------


@pytest.mark.parametrize("key", sorted(NAMED_KEYS))
async def test_server_fetches_exact_key(
    make_client: ClientFactory, moto_endpoint: str, bucket: str, key: str
) -> None:
    client = await make_client(s3_settings(moto_endpoint, bucket))

    status, body = await raw_get(client, "/" + quote(key))

    assert status == 200
    assert body == NAMED_KEYS[key]


async def test_server_resizes_object(
    make_client: ClientFactory, moto_endpoint: str, bucket: str
) -> None:
    client = await make_client(s3_settings(moto_endpoint, bucket))

    response = await client.get("/photo.jpg?w=64")

    assert response.status == 200
    assert response.content_type == "image/jpeg"
    assert "Last-Modified" in response.headers


async def test_server_missing_key_404(
    make_client: ClientFactory, moto_endpoint: str, bucket: str
) -> None:
    client = await make_client(s3_settings(moto_endpoint, bucket))

    response = await client.get("/missing.jpg")
    body = await response.json()

    assert response.status == 404
    assert body["error"]["code"] == "not_found"
    assert response.headers["Cache-Control"] == "no-store"


async def test_server_over_limit_422(
    make_client: ClientFactory, moto_endpoint: str, bucket: str
) -> None:
    settings = replace(s3_settings(moto_endpoint, bucket), limits=Limits(max_source_bytes=LIMIT))
    client = await make_client(settings)

    response = await client.get(f"/{BIG_KEY}")

    assert response.status == 422


async def test_server_wrong_bucket_502(make_client: ClientFactory, moto_endpoint: str) -> None:
    client = await make_client(s3_settings(moto_endpoint, f"absent-{uuid.uuid4().hex[:12]}"))

    response = await client.get("/photo.jpg")

    assert response.status == 502
    assert response.headers["Cache-Control"] == "no-store"


async def test_server_etag_changes_with_object(
    make_client: ClientFactory, moto_endpoint: str, bucket: str, store: Any
) -> None:
    client = await make_client(s3_settings(moto_endpoint, bucket))
    before = await client.get("/photo.jpg")
    await store.put_object(Bucket=bucket, Key="photo.jpg", Body=PHOTO + b"changed")

    after = await client.get("/photo.jpg")

    assert await after.read() == PHOTO + b"changed"
    assert after.headers["ETag"] != before.headers["ETag"]
