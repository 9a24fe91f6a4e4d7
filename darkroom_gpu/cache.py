"""The result cache: finished responses in memory, bounded by bytes.

Entries are keyed by the source object's identity (which changes whenever its bytes may have
changed), the canonical options and the output-format decision. A changed original therefore
gets a new key and is never served stale, and the key is also what the ETag is made from. The
cache saves decoding, processing and encoding; the original is still fetched (coalesced) on
every request, which is how its identity is known.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass

__all__ = ("CachedResult", "ResultCache", "result_key")


@dataclass(frozen=True, slots=True)
class CachedResult:
    """One finished image response.

    Attributes:
        body: the encoded image.
        content_type: its media type.
        server_timing: the stage timings of the request that produced it, in seconds.
        device: the device that processed it, for the access line. ``None`` for a result that
            this server did not process, such as one read from the shared store.
    """

    body: bytes
    content_type: str
    server_timing: tuple[tuple[str, float], ...] = ()
    device: str | None = None


def result_key(identity: str, canonical_options: str, format_decision: str) -> str:
    """Return the cache key and ETag value for one result.

    Args:
        identity: the source object's identity.
        canonical_options: `ProcessingOptions.canonical()`, or ``original`` for passthrough.
        format_decision: the format that ``Accept`` chose for ``auto=format``, else ``""``;
            every other input of the output format follows from the bytes and the options.

    Returns:
        32 hexadecimal digits.
    """
    key = f"{identity}\n{canonical_options}\n{format_decision}"
    return hashlib.blake2b(key.encode(), digest_size=16).hexdigest()


class ResultCache:
    """A least-recently-used map of results, bounded by the total size of their bodies.

    Args:
        max_bytes: the bound on the summed body sizes; 0 disables the cache. A result larger
            than an eighth of it is not stored, so one huge image cannot flush everything.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.size = 0
        self._entries: OrderedDict[str, CachedResult] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> CachedResult | None:
        """Return the result for `key` and mark it recently used, or ``None``."""
        result = self._entries.get(key)
        if result is not None:
            self._entries.move_to_end(key)
        return result

    def put(self, key: str, result: CachedResult) -> None:
        """Store `result`, evicting the least recently used entries to stay within bounds."""
        if len(result.body) > self.max_bytes // 8:
            return
        previous = self._entries.pop(key, None)
        if previous is not None:
            self.size -= len(previous.body)

        self._entries[key] = result
        self.size += len(result.body)
        while self.size > self.max_bytes:
            _, evicted = self._entries.popitem(last=False)
            self.size -= len(evicted.body)
