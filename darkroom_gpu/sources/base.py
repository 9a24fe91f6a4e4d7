"""The interface every image source implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import datetime

from darkroom_gpu.config.reader import ConfigReader
from darkroom_gpu.config.settings import SourceSettings

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

    A kind is a subclass: `read_options` validates its own configuration keys once at start,
    and the constructor receives the validated settings with those options in
    ``settings.options``. Implementations raise `darkroom_gpu.errors.NotFoundError` for a
    missing object, `UnprocessableImageError` for one over ``max_bytes``, and other
    `ServiceError` subclasses for upstream failures. Anything else is treated as a bug.

    Args:
        settings: the source's validated configuration.
    """

    def __init__(self, settings: SourceSettings) -> None:
        self.settings = settings
        self.name = settings.name

    @classmethod
    @abstractmethod
    def read_options(cls, reader: ConfigReader) -> object:
        """Validate this kind's own keys of one source entry.

        Record each problem with ``reader.invalid(key, message)`` rather than raising, so that
        every error in the file is reported at once. Keys read through `reader` count as known;
        any other key of the entry is then reported as unknown.

        Returns:
            The kind's options, a frozen dataclass stored in `SourceSettings.options`.
        """

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
