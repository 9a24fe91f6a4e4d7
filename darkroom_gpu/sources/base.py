"""The interface every image source implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import datetime

__all__ = ("Source", "SourceObject")


@dataclass(frozen=True, slots=True)
class SourceObject:
    """One fetched original.

    Attributes:
        data: the bytes exactly as stored.
        identity: a string that changes whenever the bytes may have changed (for example a
            path with its size and modification time); part of cache keys and ETags.
        last_modified: when the source says the object last changed, if it says.
    """

    data: bytes
    identity: str
    last_modified: datetime | None = None


class Source(ABC):
    """Fetches originals by object path.

    Implementations raise `darkroom_gpu.errors.NotFoundError` for a missing object,
    `UnprocessableImageError` for one over `max_bytes`, and other `ServiceError` subclasses for
    upstream failures; anything else is treated as a bug.
    """

    name: str

    @abstractmethod
    async def fetch(self, path: str, *, max_bytes: int) -> SourceObject:
        """Fetch the object at `path`.

        Args:
            path: the percent-decoded object path below the source's route, without a leading
                slash; untrusted client input.
            max_bytes: the object is rejected, unread, when it is larger than this.

        Returns:
            The object's bytes and identity.
        """

    async def close(self) -> None:
        """Release connections and files; the default has nothing to release."""
        return None
