"""Why the GPU manipulator handed images to the CPU, and a rate-limited log of it."""

from __future__ import annotations

import logging
import time
from collections import Counter
from enum import StrEnum
from typing import Final

__all__ = ("FALLBACK_LOG_INTERVAL", "FallbackLog", "FallbackReason")

logger = logging.getLogger(__name__)

# At most one log line per fallback reason in this many seconds; the rest are counted.
FALLBACK_LOG_INTERVAL: Final = 60.0


class FallbackReason(StrEnum):
    """The reason an image was handed to the CPU, the label of ``darkroom_gpu_fallbacks_total``."""

    OUT_OF_MEMORY = "out_of_memory"
    CUDA_ERROR = "cuda_error"
    CPU_DECODE = "cpu_decode"


class FallbackLog:
    """Logs at most one line per fallback reason per interval, with the count since the last."""

    def __init__(self, device: str, interval: float) -> None:
        self._device = device
        self._interval = interval
        self._last: dict[FallbackReason, float] = {}
        self._unreported: Counter[FallbackReason] = Counter()

    def record(self, reason: FallbackReason, images: int, detail: str) -> None:
        """Count `images` handed over for `reason`, and log when the interval has passed."""
        self._unreported[reason] += images
        now = time.monotonic()
        last = self._last.get(reason)
        if last is not None and now - last < self._interval:
            return
        self._last[reason] = now
        count = self._unreported.pop(reason)
        level = logging.INFO if reason is FallbackReason.CPU_DECODE else logging.WARNING
        logger.log(
            level,
            "%s: %d images handed to the CPU since the last report, reason=%s: %s",
            self._device,
            count,
            reason.value,
            detail,
        )
