"""The soak case: mixed load, a burst, then idle time; responses and memory stay bounded.

Marked ``soak`` and left out of the default run, because it takes about 70 s on a 2-core
machine (30 s of it idle). Run it with ``pytest -m soak``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

import pytest

from benchmarks.soak import run_soak

REQUESTS: Final = 2000
CONCURRENCY: Final = 32
BURST_FACTOR: Final = 5
BURST_REQUESTS: Final = 1000
IDLE_SECONDS: Final = 30.0
# Bound on the server's resident memory after the idle period, as a multiple of its memory
# after the first 200 requests. A leak of a few hundred kilobytes per request exceeds it.
MAX_MEMORY_GROWTH: Final = 1.5


@pytest.mark.soak
@pytest.mark.timeout(600)
async def test_soak_then_burst(tmp_path: Path) -> None:
    result = await run_soak(
        REQUESTS,
        concurrency=CONCURRENCY,
        burst_requests=BURST_REQUESTS,
        burst_factor=BURST_FACTOR,
        idle_seconds=IDLE_SECONDS,
        max_seconds=240.0,
        valid_only=True,
        work=tmp_path,
    )
    main, burst = result.phases

    assert main.sent == REQUESTS
    assert burst.sent == BURST_REQUESTS
    for phase in (main, burst):
        # Only images and overload responses. A 503 without Retry-After counts as unexpected.
        assert set(phase.statuses) <= {"200", "503"}, phase.statuses
        assert not phase.unexpected, phase.first_unexpected
    assert main.statuses["200"] > 0
    assert result.server_tracebacks == 0
    assert result.server_exit_code == 0
    assert result.rss_after_idle_mib <= MAX_MEMORY_GROWTH * result.rss_early_mib, result.memory
