"""A source that fetches originals from one S3 bucket or S3-compatible store via aiobotocore."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any, Final

from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    IncompleteReadError,
    NoCredentialsError,
    PartialCredentialsError,
    ReadTimeoutError,
    ResponseStreamingError,
)
from botocore.exceptions import SSLError as BotoSSLError

from darkroom_gpu.config.reader import ConfigReader
from darkroom_gpu.config.settings import SourceSettings
from darkroom_gpu.errors import (
    ForbiddenError,
    NotFoundError,
    ServiceError,
    SourceFailedError,
    SourceTimeoutError,
    UnprocessableImageError,
)
from darkroom_gpu.sources.base import Source, SourceObject
from darkroom_gpu.sources.http import parse_base_url
from darkroom_gpu.sources.resilience import (
    Timeouts,
    TransientError,
    read_retries,
    read_timeouts,
    retry_transient,
)

__all__ = ("LazyS3Client", "S3Options", "S3Source")

DEFAULT_REGION: Final = "us-east-1"
# S3 rejects longer keys, so a longer path cannot name an object.
MAX_KEY_BYTES: Final = 1024
# Maximum concurrent connections to the store, because botocore's default of 10 would queue the
# requests of a busy proxy.
MAX_POOL_CONNECTIONS: Final = 100
_CHUNK_BYTES: Final = 64 * 1024
# Responses after which a retry may succeed: the statuses and the S3 error codes that botocore's
# standard retry mode (botocore/retries/standard.py) treats as transient or throttling.
_TRANSIENT_STATUSES: Final = frozenset((500, 502, 503, 504))
_TRANSIENT_CODES: Final = frozenset(("RequestTimeout", "SlowDown"))
_MISSING_KEY_CODES: Final = frozenset(("NoSuchKey", "NotFound", "404"))


@dataclass(frozen=True, slots=True)
class S3Options:
    """Options of an S3 source.

    Attributes:
        bucket: the bucket served.
        region: the bucket's AWS region.
        endpoint_url: URL of an S3-compatible store, or ``None`` for AWS itself.
        access_key_id: static credentials, together with `secret_access_key`; ``None`` to use
            the standard AWS credential chain (environment variables first).
        secret_access_key: the secret of `access_key_id`.
        session_token: optional token of temporary credentials.
        timeouts: connect, read and total deadlines of one fetch.
        retries: retries of a transient failure after the first try.
    """

    bucket: str
    region: str = DEFAULT_REGION
    endpoint_url: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)
    timeouts: Timeouts = field(default_factory=Timeouts)
    retries: int = 2


class S3Source(Source):
    """A source that fetches objects from one bucket, using the object path as the key.

    The key is the path exactly as the server decoded it. Only botocore percent-encodes it, once,
    for the request URL.

    A missing key is `NotFoundError` and access denied is `ForbiddenError`. A missing bucket,
    missing credentials, other client errors and 5xx are `SourceFailedError`, and timeouts are
    `SourceTimeoutError`. Connection failures, connect timeouts, statuses 500, 502, 503 and 504
    and the error codes ``RequestTimeout`` and ``SlowDown`` are retried with backoff, within the
    total deadline. botocore's own retries are turned off so that every retry is logged here.

    Note:
        Without the ``s3:ListBucket`` permission, S3 returns 403 for a missing key, so clients
        then see 403 instead of 404. Keys with ``.`` or ``..`` segments raise `NotFoundError`
        without a request, because browsers and proxies remove such segments from URLs (RFC 3986
        dot-segment removal), so those keys cannot be requested reliably.
    """

    def __init__(self, settings: SourceSettings) -> None:
        super().__init__(settings)
        if not isinstance(settings.options, S3Options):
            raise TypeError(f"expected S3Options, got {type(settings.options).__name__}")
        self.options = settings.options
        options = settings.options
        self._client = LazyS3Client(
            region=options.region,
            endpoint_url=options.endpoint_url,
            access_key_id=options.access_key_id,
            secret_access_key=options.secret_access_key,
            session_token=options.session_token,
            connect_timeout=options.timeouts.connect,
            read_timeout=options.timeouts.read,
        )

    @classmethod
    def read_options(cls, reader: ConfigReader) -> S3Options | None:
        """Read ``bucket``, ``region``, ``endpoint_url``, credentials, ``timeouts``, ``retries``."""
        bucket = reader.required_text("bucket", "an s3 source needs the name of its bucket")
        if bucket is not None and (not bucket or any(c == "/" or c.isspace() for c in bucket)):
            reader.invalid("bucket", f"expected a name without '/' or spaces, got {bucket!r}")
            bucket = None
        region = reader.text("region", DEFAULT_REGION) or ""
        if not region.strip():
            reader.invalid("region", f"expected an AWS region such as us-east-1, got {region!r}")
        endpoint_url = reader.text("endpoint_url")
        if endpoint_url is not None:
            try:
                parse_base_url(endpoint_url)
            except ValueError as exc:
                reader.invalid("endpoint_url", str(exc))

        access_key_id = reader.text("access_key_id")
        secret_access_key = reader.secret("secret_access_key")
        session_token = reader.secret("session_token")
        # Presence is checked on the raw values, so a value of the wrong type, already reported
        # by its getter, is not also reported as missing.
        has_key_id = reader.get("access_key_id") is not None
        has_secret = reader.get("secret_access_key") is not None
        if has_key_id and not has_secret:
            reader.invalid("secret_access_key", "missing; access_key_id is set, so it needs one")
        if has_secret and not has_key_id:
            reader.invalid("access_key_id", "missing; secret_access_key is set, so it needs one")
        if reader.get("session_token") is not None and not has_key_id:
            reader.invalid("session_token", "needs access_key_id and secret_access_key next to it")

        timeouts = read_timeouts(reader)
        retries = read_retries(reader)
        if bucket is None:
            return None
        return S3Options(
            bucket=bucket,
            region=region,
            endpoint_url=endpoint_url,
            access_key_id=access_key_id,
            secret_access_key=secret_access_key,
            session_token=session_token,
            timeouts=timeouts,
            retries=retries,
        )

    async def fetch(self, path: str, *, max_bytes: int) -> SourceObject:
        """Fetch the object whose key is `path`.

        Raises:
            NotFoundError: the key is empty, too long, has dot segments, or does not exist.
            ForbiddenError: the store denied access.
            SourceFailedError: the bucket is missing, no credentials, or the store failed.
            SourceTimeoutError: a connect, read or total deadline passed.
            UnprocessableImageError: the object is larger than `max_bytes`.
        """
        segments = path.split("/")
        if not path or len(path.encode()) > MAX_KEY_BYTES or "." in segments or ".." in segments:
            raise NotFoundError(f"no image at {path!r}")

        timeouts = self.options.timeouts
        deadline = asyncio.get_running_loop().time() + timeouts.total
        attempt = partial(self._get_object, path, max_bytes)
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
        """Close the client and its connection pool."""
        await self._client.close()

    async def _get_object(self, key: str, max_bytes: int) -> SourceObject:
        client = await self._client.get()
        failed = f"source {self.name!r} failed for {key!r}"
        try:
            response = await client.get_object(Bucket=self.options.bucket, Key=key)
            async with response["Body"] as body:
                length = response.get("ContentLength")
                if length is not None and length > max_bytes:
                    raise UnprocessableImageError(
                        f"source is {length} bytes, over this source's limit of {max_bytes}"
                    )
                data = await _read_body(body, max_bytes)
        except ClientError as exc:
            raise self._client_error(exc, key) from exc
        except (NoCredentialsError, PartialCredentialsError) as exc:
            raise SourceFailedError(f"{failed}: no usable AWS credentials") from exc
        except ConnectTimeoutError as exc:
            raise TransientError(
                SourceTimeoutError(f"source {self.name!r} timed out connecting for {key!r}"),
                "connect timed out",
            ) from exc
        except ReadTimeoutError as exc:
            raise SourceTimeoutError(
                f"source {self.name!r} timed out reading the response for {key!r}"
            ) from exc
        except BotoSSLError as exc:
            raise SourceFailedError(f"{failed}: TLS handshake failed") from exc
        except (
            EndpointConnectionError,
            ConnectionClosedError,
            ResponseStreamingError,
            IncompleteReadError,
        ) as exc:
            raise TransientError(
                SourceFailedError(f"{failed}: connection to the store failed"),
                f"connection failed: {type(exc).__name__}",
            ) from exc
        except BotoCoreError as exc:
            raise SourceFailedError(f"{failed}: {type(exc).__name__}") from exc

        return SourceObject(
            data=data,
            identity=self._identity(key, response),
            last_modified=_utc(response.get("LastModified")),
        )

    def _client_error(self, exc: ClientError, key: str) -> ServiceError | TransientError:
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        failed = f"source {self.name!r} failed for {key!r}"
        # A missing bucket means a misconfigured source rather than a missing object, so it is
        # a 502 that the operator sees and that counts towards the circuit breaker.
        if code == "NoSuchBucket":
            return SourceFailedError(f"{failed}: the bucket does not exist")
        if code in _MISSING_KEY_CODES or status == 404:
            return NotFoundError(f"no image at {key!r}")
        if status == 403:
            return ForbiddenError(f"source {self.name!r} denied access to {key!r}")
        failure = SourceFailedError(f"{failed}: S3 error {code or status}")
        if status in _TRANSIENT_STATUSES or code in _TRANSIENT_CODES:
            return TransientError(failure, f"S3 error {code or status}")
        return failure

    def _identity(self, key: str, response: dict[str, Any]) -> str:
        parts = [f"s3:{self.options.bucket}/{key}", f"etag={response.get('ETag', '')}"]
        if response.get("VersionId"):
            parts.append(f"version={response['VersionId']}")
        modified = response.get("LastModified")
        if isinstance(modified, datetime):
            parts.append(f"last-modified={modified.isoformat()}")
        parts.append(f"bytes={response.get('ContentLength', '')}")
        return "|".join(parts)


async def _read_body(body: Any, max_bytes: int) -> bytes:
    """Read a streaming body, stopping as soon as it exceeds `max_bytes`."""
    data = bytearray()
    while chunk := await body.read(_CHUNK_BYTES):
        data += chunk
        if len(data) > max_bytes:
            raise UnprocessableImageError(
                f"source is over this source's limit of {max_bytes} bytes"
            )
    return bytes(data)


def _utc(value: object) -> datetime | None:
    if not isinstance(value, datetime):
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


class LazyS3Client:
    """An aiobotocore S3 client made on first use, because it binds to the running event loop.

    botocore's own retries are off, so that callers decide what to retry and log it.

    Args:
        region: the AWS region.
        endpoint_url: URL of an S3-compatible store, or ``None`` for AWS itself.
        access_key_id: static credentials; ``None`` uses the standard AWS credential chain.
        secret_access_key: the secret of `access_key_id`.
        session_token: optional token of temporary credentials.
        connect_timeout: seconds to open a connection.
        read_timeout: seconds to wait for data on an open connection.
    """

    def __init__(
        self,
        *,
        region: str,
        endpoint_url: str | None,
        access_key_id: str | None,
        secret_access_key: str | None,
        session_token: str | None,
        connect_timeout: float,
        read_timeout: float,
    ) -> None:
        self._arguments: dict[str, Any] = {
            "region_name": region,
            "endpoint_url": endpoint_url,
            "aws_access_key_id": access_key_id,
            "aws_secret_access_key": secret_access_key,
            "aws_session_token": session_token,
            "config": AioConfig(
                connect_timeout=connect_timeout,
                read_timeout=read_timeout,
                retries={"total_max_attempts": 1},
                max_pool_connections=MAX_POOL_CONNECTIONS,
            ),
        }
        self._client: Any = None
        self._lock = asyncio.Lock()
        self._exit_stack = contextlib.AsyncExitStack()

    async def get(self) -> Any:
        """Return the client, creating it on the first call."""
        if self._client is not None:
            return self._client
        # The lock keeps two concurrent first requests from creating two clients.
        async with self._lock:
            if self._client is None:
                self._client = await self._exit_stack.enter_async_context(
                    AioSession().create_client("s3", **self._arguments)
                )
            return self._client

    async def close(self) -> None:
        """Close the client and its connection pool; a later `get` makes a new one."""
        async with self._lock:
            await self._exit_stack.aclose()
            self._client = None
            self._exit_stack = contextlib.AsyncExitStack()
