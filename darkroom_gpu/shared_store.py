"""A result store in S3 (or an S3-compatible service) shared by every replica.

Replicas behind a load balancer each keep their own memory cache; with a shared store, a result
one replica made is fetched by the others instead of being made again. Store failures never
fail a request: a failed read is a miss, and a failed write is logged and dropped.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Final

from botocore.exceptions import BotoCoreError, ClientError

from darkroom_gpu.cache import CachedResult
from darkroom_gpu.config import SharedStoreSettings
from darkroom_gpu.sources.s3 import LazyS3Client

__all__ = ("SharedResultStore",)

logger = logging.getLogger(__name__)

# A shared store is an optimisation, so its calls must give up long before a request would.
_CONNECT_TIMEOUT_SECONDS: Final = 1.0
_READ_TIMEOUT_SECONDS: Final = 2.0


class SharedResultStore:
    """Reads and writes finished results as S3 objects named ``<prefix><key>``.

    Args:
        settings: bucket, region, endpoint and optional credentials.
    """

    def __init__(self, settings: SharedStoreSettings) -> None:
        self.settings = settings
        self._client = LazyS3Client(
            region=settings.region,
            endpoint_url=settings.endpoint_url,
            access_key_id=settings.access_key_id,
            secret_access_key=settings.secret_access_key,
            session_token=settings.session_token,
            connect_timeout=_CONNECT_TIMEOUT_SECONDS,
            read_timeout=_READ_TIMEOUT_SECONDS,
        )
        self._writes: set[asyncio.Task[None]] = set()

    async def get(self, key: str) -> CachedResult | None:
        """Return the stored result for `key`, or ``None`` when absent or unreachable."""
        client = await self._client.get()
        try:
            response = await client.get_object(Bucket=self.settings.bucket, Key=self._name(key))
            async with response["Body"] as body:
                data = await body.read()
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in ("NoSuchKey", "404"):
                logger.warning("shared result store read failed for %s: %s", key, exc)
            return None
        except (BotoCoreError, OSError, TimeoutError) as exc:
            logger.warning("shared result store read failed for %s: %s", key, exc)
            return None
        return CachedResult(body=data, content_type=response.get("ContentType", ""))

    async def put(self, key: str, result: CachedResult) -> None:
        """Store `result` under `key`; a failure is logged, never raised."""
        client = await self._client.get()
        try:
            await client.put_object(
                Bucket=self.settings.bucket,
                Key=self._name(key),
                Body=result.body,
                ContentType=result.content_type,
            )
        except (ClientError, BotoCoreError, OSError, TimeoutError) as exc:
            logger.warning("shared result store write failed for %s: %s", key, exc)

    def put_later(self, key: str, result: CachedResult) -> None:
        """Store `result` in the background, so the response does not wait for the upload."""
        task = asyncio.ensure_future(self.put(key, result))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def flush(self) -> None:
        """Wait for the background writes started so far."""
        if self._writes:
            await asyncio.gather(*self._writes)

    async def close(self) -> None:
        """Finish pending writes and close the S3 client."""
        await self.flush()
        await self._client.close()

    def _name(self, key: str) -> str:
        return f"{self.settings.prefix}{key}"
